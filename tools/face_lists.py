"""Reading a face list and cropping its faces, for the tools that work outside the pipeline
(TFLite export, embedding projector, loss benchmark). The pipeline ingests lists with
components/face_example_gen; these tools read the same list formats (core/json_stream.py) and run
every record they use through the same check chain (core/records.check_record) before decoding
anything; where ingest quarantines a record, a tool stops with an error naming it and the reason."""
from __future__ import annotations

import argparse
import os
from typing import Dict, Sequence

import numpy as np
import tensorflow as tf

from core import features, json_stream, records
from models import preprocessing

CROP_BATCH = 64   # images decoded per call: bounded memory on large lists


def model_tool_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments every tool that runs a pushed model over a face list shares."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=doc.split("\n\n", 1)[1])
    parser.add_argument("--model", required=True, help="SavedModel directory (a pushed version)")
    parser.add_argument("--list", required=True, help="face list JSON (the eval split)")
    parser.add_argument("--image-root", required=True, help="directory the list's keys are under")
    return parser


def read_face_list(list_path: str) -> Dict[str, Dict]:
    """{"<group>/<id>/<n>.jpg": {"label", "x1", "y1", "x2", "y2"}} in file order, from a JSON
    object or JSON Lines list read as ingest reads it (a leading byte-order mark is accepted).
    A list or record ingest would reject raises ValueError naming the list, record and reason."""
    if not os.path.isfile(list_path):
        raise FileNotFoundError(f"face list {list_path!r} does not exist")
    face_records: Dict[str, Dict] = {}
    with open(list_path, "rb") as f:
        for item in json_stream.read_entries(f, json_stream.detect_format(list_path), list_path):
            if isinstance(item, json_stream.FileError):
                raise ValueError(f"face list {list_path!r} is not a list of records "
                                 f"({item.reason}): {item.detail}")
            key = records.printable_key(item.key)
            if item.error is not None:
                raise ValueError(f"record {key!r} of {list_path!r} is rejected ({item.reason}): "
                                 f"{item.error}")
            if item.key in face_records:
                raise ValueError(f"record {key!r} of {list_path!r} is rejected (duplicate_key): "
                                 f"the key appears more than once")
            face_records[item.key] = item.value
    if not face_records:
        raise ValueError(f"face list {list_path!r} is empty")
    needed = (features.LABEL, *features.BOX_KEYS)
    for key, record in face_records.items():
        missing = [k for k in needed if not isinstance(record, dict) or k not in record]
        if missing:
            raise ValueError(f"record {key!r} of {list_path!r} has no {', '.join(missing)}")
    return face_records


def group_of(key: str) -> str:
    return key.split("/", 1)[0] if "/" in key else "ungrouped"   # as the ingest names it


def read_images(face_records: Dict[str, Dict], keys: Sequence[str], image_root: str,
                options: records.IngestOptions = records.IngestOptions()) -> list:
    """The image files' bytes of `keys`, each record checked by records.check_record, as ingest
    checks it: key inside the root (symlinks included), a regular file (a named pipe would block
    forever), fields, a JPEG/PNG within the byte and pixel limits (from the header, before any
    full decode) that decodes, the box inside the image. FileNotFoundError for a missing image,
    ValueError with the reason code otherwise; both name the key."""
    images = []
    real_root = os.path.realpath(image_root)
    for key in keys:
        try:
            checked = records.check_record(image_root, key, face_records[key], options, local=True,
                                           real_root=real_root)
        except records.Rejected as e:
            if e.reason == "missing_file":
                raise FileNotFoundError(f"image {key!r} of the list not found at "
                                        f"{records.join_root(image_root, key)!r}")
            raise ValueError(f"image {records.printable_key(key)!r} of the list is rejected "
                             f"({e.reason}): {e.detail}")
        images.append(checked.data)
    return images


def load_crops(records: Dict[str, Dict], keys: Sequence[str], image_root: str,
               image_size: int) -> np.ndarray:
    """float32 [len(keys), s, s, 3] in [0, 1]: the crops the Transform and serving make."""
    crops = []
    for start in range(0, len(keys), CROP_BATCH):
        chunk = keys[start:start + CROP_BATCH]
        boxes = [[records[key][k] for k in preprocessing.BOX_KEYS] for key in chunk]
        crops.append(preprocessing.crop_faces(tf.constant(read_images(records, chunk, image_root)),
                                              tf.constant(boxes), image_size).numpy())
    return np.concatenate(crops) if crops else np.zeros([0, image_size, image_size, 3], np.float32)
