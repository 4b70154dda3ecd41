"""Transform's preprocessing_fn: decode the image, crop the face box, resize, scale to [0, 1].

The same `crop_faces` runs inside the Transform graph, hence inside every exported signature (the
TFT layer), so training, evaluation and serving crop identically.

Box geometry: the box (x1, y1, x2, y2) covers pixel columns x1..x2-1 and rows y1..y2-1. Output pixel
i of `size` samples the box at x1 + (i + 0.5) * (x2 - x1) / size - 0.5 in pixel-centre coordinates,
exactly as resizing the crop with half-pixel centres would, and regions outside the image are black.
Boxes are normalized by each image's real (decoded) size, never by an assumed one.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import tensorflow as tf
import tensorflow_transform as tft

# Transformed feature names.
IMAGE = "image"                  # float32 [size, size, 3] in [0, 1]
LABEL = "label"                  # int64: the identity label as ingested
CLASS_INDEX = "class_index"      # int64: 0..C-1 over the train identities, -1 for unseen ones
GROUP = "group"                  # string
IDENTITY_VOCABULARY = "identities"
DEFAULT_IMAGE_SIZE = 112
BOX_KEYS = ("x1", "y1", "x2", "y2")


def _squeeze(tensor: tf.Tensor) -> tf.Tensor:
    """[batch, 1] -> [batch] (the schema gives every raw feature shape [1])."""
    return tf.reshape(tensor, [-1])


def _crop_one(image_bytes: tf.Tensor, box: tf.Tensor, size: int) -> tf.Tensor:
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False, dtype=tf.uint8)
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    x1, y1, x2, y2 = box[0], box[1], box[2], box[3]
    step_x, step_y = (x2 - x1) / size, (y2 - y1) / size
    # First and last sample positions (pixel centres), normalized the way crop_and_resize expects:
    # coordinate c maps to c * (side - 1).
    first_x, last_x = x1 + 0.5 * step_x - 0.5, x1 + (size - 0.5) * step_x - 0.5
    first_y, last_y = y1 + 0.5 * step_y - 0.5, y1 + (size - 0.5) * step_y - 0.5
    span_x, span_y = tf.maximum(width - 1.0, 1.0), tf.maximum(height - 1.0, 1.0)
    normalized = tf.stack([first_y / span_y, first_x / span_x, last_y / span_y, last_x / span_x])
    crop = tf.image.crop_and_resize(tf.cast(image, tf.float32)[tf.newaxis], normalized[tf.newaxis],
                                    box_indices=[0], crop_size=[size, size], method="bilinear",
                                    extrapolation_value=0.0)[0]
    return tf.clip_by_value(crop / 255.0, 0.0, 1.0)


def crop_faces(image_bytes: tf.Tensor, boxes: tf.Tensor, size: int = DEFAULT_IMAGE_SIZE) -> tf.Tensor:
    """Encoded JPEG/PNG bytes [batch] and pixel boxes [batch, 4] (x1, y1, x2, y2) -> [batch, s, s, 3]."""
    boxes = tf.cast(boxes, tf.float32)
    return tf.map_fn(lambda args: _crop_one(args[0], args[1], size), (image_bytes, boxes),
                     fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))


def image_size_from(custom_config: Optional[Dict[str, Any]]) -> int:
    return int((custom_config or {}).get("image_size", DEFAULT_IMAGE_SIZE))


def preprocessing_fn(inputs: Dict[str, tf.Tensor],
                     custom_config: Optional[Dict[str, Any]] = None) -> Dict[str, tf.Tensor]:
    """tf.Transform entry point (TFX Transform, `custom_config={"image_size": ...}`)."""
    size = image_size_from(custom_config)
    boxes = tf.stack([_squeeze(inputs[k]) for k in BOX_KEYS], axis=1)
    label = _squeeze(inputs["label"])
    return {
        IMAGE: crop_faces(_squeeze(inputs["image_raw"]), boxes, size),
        LABEL: label,
        # Class indices for the classification heads, over the identities of the analyzed (train)
        # split only; their count is the head's width. Unseen (eval) identities map to -1.
        CLASS_INDEX: tft.compute_and_apply_vocabulary(
            tf.strings.as_string(label), default_value=-1, num_oov_buckets=0,
            vocab_filename=IDENTITY_VOCABULARY),
        GROUP: _squeeze(inputs["group"]),
    }
