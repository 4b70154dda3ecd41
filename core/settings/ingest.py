"""FaceExampleGen's settings (`PipelineConfig.ingest`): where the lists and images are, and the
limits every record is held to (core/records.py applies them; the served model holds images to
the same limits)."""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional

from core.records import IngestOptions
from core.settings.base import Section, setting

# The generated sample data (pipeline/sample_data.py writes it there when it is missing).
SAMPLE_DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "data", "sample")


@dataclasses.dataclass
class IngestConfig(Section):
    """FaceExampleGen: where the lists and images are and how strict to be."""
    data_root: str = setting(SAMPLE_DATA_DIR, help="directory holding the list files (default: "
                             "the sample data, generated when missing)")
    image_root: str = setting(os.path.join(SAMPLE_DATA_DIR, "images"),
                              help="directory the list keys are relative to (default: "
                                   "<data_root>/images when data_root is set)")
    list_files: Dict[str, str] = setting(
        help="list file (or glob pattern) per split", factory=lambda: {"train": "train.json",
                                                                         "eval": "test.json"})
    identity_split: Optional[Dict[str, int]] = setting(
        None, help="split one list by label hash into buckets, e.g. {\"train\": 9, \"eval\": 1}")
    max_bad_fraction: float = setting(0.01, help="the ingest fails when more records than this "
                                      "fraction are quarantined")
    max_image_pixels: int = setting(IngestOptions.max_image_pixels,
                                    help="larger images are quarantined (the served model's "
                                         "limit too)")
    max_image_bytes: int = setting(IngestOptions.max_image_bytes,
                                   help="larger files are quarantined (the served model's limit too)")
    box_tolerance: float = setting(IngestOptions.box_tolerance,
                                   help="how far (fraction of the side) a box may exceed the image")
    list_format: Optional[str] = setting(None, help="json or jsonl; null: from the file")
    fingerprint_images: bool = setting(True, help="hash every image into the Examples' "
                                       "fingerprint (a changed image is a cache miss)")
    offset_labels: bool = setting(False, help="a list pattern matches several data sets, each "
                                  "labelled from 0: shift each one's labels")
