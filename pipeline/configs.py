"""Every setting of the pipeline, in one place, with the defaults the runners start from."""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional

import schema as schema_package

PIPELINE_NAME = "ffem-tfx"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_DATA_DIR = os.path.join(REPO_ROOT, "data", "sample")
DEFAULT_WORK_DIR = os.path.join(REPO_ROOT, "runs")


@dataclasses.dataclass
class IngestConfig:
    """FaceExampleGen: where the lists and images are and how strict to be."""
    data_root: str = SAMPLE_DATA_DIR                 # holds the list files
    image_root: str = os.path.join(SAMPLE_DATA_DIR, "images")
    list_files: Dict[str, str] = dataclasses.field(
        default_factory=lambda: {"train": "train.json", "eval": "test.json"})
    identity_split: Optional[Dict[str, int]] = None  # e.g. {"train": 9, "eval": 1} with one list
    max_bad_fraction: float = 0.01
    max_image_pixels: int = 40_000_000
    max_image_bytes: int = 32 * 1024 * 1024
    box_tolerance: float = 0.02
    list_format: Optional[str] = None
    fingerprint_images: bool = True


# The pipeline's stages in order; `PipelineConfig.last_stage` builds the pipeline up to one of them.
STAGES = ("ingest", "transform", "train", "evaluate", "push")


@dataclasses.dataclass
class PipelineConfig:
    pipeline_name: str = PIPELINE_NAME
    pipeline_root: str = os.path.join(DEFAULT_WORK_DIR, "pipeline_root")
    metadata_path: Optional[str] = os.path.join(DEFAULT_WORK_DIR, "metadata.sqlite")
    ingest: IngestConfig = dataclasses.field(default_factory=IngestConfig)
    schema_path: str = schema_package.SCHEMA_FILE
    enable_cache: bool = True
    last_stage: str = STAGES[-1]
    # Beam runs inside ExampleGen, StatisticsGen, Transform. DirectRunner parallelism needs
    # multi_processing mode; other runners (Dataflow, Flink) are chosen here too.
    beam_pipeline_args: List[str] = dataclasses.field(default_factory=lambda: [
        "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
