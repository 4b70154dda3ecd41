"""Reading the artifacts that several components consume: Examples splits and the Transform's crops.

One module for what the RecallEvaluator, the TFLite step and the benchmarks all read, so that no
component borrows helpers from another component's module.
"""
from __future__ import annotations

import os
from typing import List

import tensorflow as tf
from tfx import types
from tfx.types import artifact_utils


def split_files(examples: types.Artifact, split: str) -> List[str]:
    """The (gzip TFRecord) files of one split of an Examples artifact; an error when there are none."""
    pattern = os.path.join(artifact_utils.get_split_uri([examples], split), "*")
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise ValueError(f"no {split!r} split in {examples.uri}")
    return files


def crop_side(files: List[str]) -> int:
    """The side of the Transform's square crops, read from the first transformed Example (the
    Trainer's models.data.crop_side: one reader of the stored crop format)."""
    from models import data

    return data.crop_side(files)
