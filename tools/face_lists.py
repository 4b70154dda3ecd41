"""Reading a face list and cropping its faces, for the tools that work outside the pipeline
(TFLite export, embedding projector, loss benchmark). The pipeline ingests lists with
components/face_example_gen; these tools apply the same per-image checks (records.py) before
decoding anything."""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, Sequence

import numpy as np
import tensorflow as tf

from core import records
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


def load_signature(saved_model_dir: str, name: str):
    """(loaded SavedModel, its signature `name`), with errors that say what to pass instead."""
    if not os.path.isdir(saved_model_dir):
        raise FileNotFoundError(f"model directory {saved_model_dir!r} does not exist")
    if not any(os.path.exists(os.path.join(saved_model_dir, file))
               for file in ("saved_model.pb", "saved_model.pbtxt")):
        raise FileNotFoundError(f"{saved_model_dir!r} is not a SavedModel (no saved_model.pb); "
                                f"pass a version directory such as runs/serving_model/<version>")
    loaded = tf.saved_model.load(saved_model_dir)
    if name not in loaded.signatures:
        raise KeyError(f"SavedModel {saved_model_dir!r} has no {name!r} signature "
                       f"(it has: {', '.join(sorted(loaded.signatures)) or 'none'})")
    return loaded, loaded.signatures[name]


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


def read_images(keys: Sequence[str], image_root: str,
                options: records.IngestOptions = records.IngestOptions()) -> list:
    """The image files' bytes, after the ingest's own checks: the key stays inside the root
    (symlinks included), the file is a JPEG/PNG within the byte and pixel limits (checked from
    the header, before anything is decoded in full) and decodes. ValueError names the key."""
    images = []
    for key in keys:
        path = os.path.join(image_root, key)
        try:
            records.check_key(key)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"image {key!r} of the list not found at {path!r}")
            records.check_local_containment(image_root, path, key)
            with open(path, "rb") as f:
                data = f.read(options.max_image_bytes + 1)
            if len(data) > options.max_image_bytes:
                raise records.Rejected("image_too_large",
                                       f"larger than the {options.max_image_bytes}-byte limit")
            records.inspect_image(data, options)
        except records.Rejected as e:
            raise ValueError(f"image {key!r} of the list is rejected ({e.reason}): {e.detail}")
        images.append(data)
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
