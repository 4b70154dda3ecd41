"""Reading a face list and cropping its faces, for the tools that work outside the pipeline
(TFLite export, embedding projector, loss benchmark). The pipeline itself ingests lists with
components/face_example_gen; these tools take lists that already passed it."""
from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import json  # noqa: E402
from typing import Dict, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from models import preprocessing  # noqa: E402

CROP_BATCH = 64   # images decoded per call: bounded memory on large lists


def read_face_list(list_path: str) -> Dict[str, Dict]:
    """{"<group>/<id>/<n>.jpg": {"label", "x1", "y1", "x2", "y2"}} in file order; clear errors."""
    if not os.path.isfile(list_path):
        raise FileNotFoundError(f"face list {list_path!r} does not exist")
    with open(list_path) as f:
        records = json.load(f)
    if not isinstance(records, dict):
        raise ValueError(f"face list {list_path!r} is not a JSON object of records")
    if not records:
        raise ValueError(f"face list {list_path!r} is empty")
    needed = ("label",) + preprocessing.BOX_KEYS
    for key, record in records.items():
        missing = [k for k in needed if not isinstance(record, dict) or k not in record]
        if missing:
            raise ValueError(f"record {key!r} of {list_path!r} has no {', '.join(missing)}")
    return records


def group_of(key: str) -> str:
    return key.split("/", 1)[0] if "/" in key else "ungrouped"   # as the ingest names it


def read_images(keys: Sequence[str], image_root: str) -> list:
    images = []
    for key in keys:
        path = os.path.join(image_root, key)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image {key!r} of the list not found at {path!r}")
        with open(path, "rb") as f:
            images.append(f.read())
    return images


def load_crops(records: Dict[str, Dict], keys: Sequence[str], image_root: str,
               image_size: int) -> np.ndarray:
    """float32 [len(keys), s, s, 3] in [0, 1]: the crops the Transform and serving make."""
    crops = []
    for start in range(0, len(keys), CROP_BATCH):
        chunk = keys[start:start + CROP_BATCH]
        boxes = [[records[key][k] for k in preprocessing.BOX_KEYS] for key in chunk]
        crops.append(preprocessing.crop_faces(tf.constant(read_images(chunk, image_root)),
                                              tf.constant(boxes), image_size).numpy())
    return np.concatenate(crops) if crops else np.zeros([0, image_size, image_size, 3], np.float32)
