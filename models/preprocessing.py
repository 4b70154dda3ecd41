"""Transform's preprocessing_fn: decode the image, crop the face box, resize, store it as uint8.

The same `crop_faces` runs inside the Transform graph, hence inside every exported signature (the
TFT layer), so training, evaluation and serving crop identically.

Box geometry: the box (x1, y1, x2, y2) covers pixel columns x1..x2-1 and rows y1..y2-1. Output pixel
i of `size` samples the box bilinearly at x1 + (i + 0.5) * (x2 - x1) / size - 0.5 in pixel-centre
coordinates (pixel k's centre is k), exactly as resizing the crop with half-pixel centres would:
  * a position within the image's extent, -0.5 <= p <= side - 0.5, reads the image, clamped to the
    outermost pixel centres, so a box touching the border gets the edge pixels there (as that resize
    does), not a black frame;
  * a position beyond the extent (the box really overshoots the image) is black.
Boxes are taken in each image's real (decoded) size, never in an assumed one.

Stored crops (the transformed IMAGE feature): one bytes value per Example, the crop as uint8
[s, s, 3] in row-major order, each value round(255 x the [0, 1] float crop) (`encode_crops`).
Every reader turns it back with `decode_crops`: float32 uint8 / 255, so training, evaluation and
all three serving signatures (the TFT layer runs the same encode) see exactly the same values.
Why raw uint8 and not float32, PNG or JPEG:
  * a quarter of float32's bytes (one byte per value, not four) before gzip, whatever the faces;
  * the rounding error, at most 0.5 / 255 per value, is what 8-bit images already carry: the
    decoded JPEG/PNG pixels are integers, so the crop is no more exact than its interpolation;
  * reading is a copy (tf.io.decode_raw over the whole batch), as cheap as parsing float32 and
    much cheaper than decoding a PNG or JPEG per image on the Trainer's CPU; PNG would be smaller
    but costs that decode, JPEG would also change the values (lossy).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import tensorflow as tf
import tensorflow_transform as tft

# Feature names: core/features.py is their one source; re-exported here for the models package.
from core.features import (  # noqa: F401
    BOX_KEYS,
    CLASS_INDEX,
    GROUP,
    IDENTITY_VOCABULARY,
    IMAGE,
    IMAGE_RAW,
    LABEL,
    LANDMARKS,
)
from models.pretrained import alignment

DEFAULT_IMAGE_SIZE = 112


def _squeeze(tensor: tf.Tensor) -> tf.Tensor:
    """[batch, 1] -> [batch] (the schema gives every raw feature shape [1])."""
    return tf.reshape(tensor, [-1])


def _axis_samples(start: tf.Tensor, end: tf.Tensor, extent: tf.Tensor, size):
    """Bilinear sampling along one axis for boxes [start, end) of each image: [b, size] lower and
    upper pixel indices, the upper one's float32 weight, and whether the position is in the image."""
    extent = tf.cast(extent, tf.float32)
    centres = tf.range(size, dtype=tf.float32)[tf.newaxis, :] + 0.5
    positions = start[:, tf.newaxis] + centres * ((end - start) / tf.cast(size, tf.float32)
                                                  )[:, tf.newaxis] - 0.5
    inside = (positions >= -0.5) & (positions <= extent - 0.5)
    clamped = tf.clip_by_value(positions, 0.0, extent - 1.0)
    low = tf.floor(clamped)
    high = tf.minimum(low + 1.0, extent - 1.0)
    return tf.cast(low, tf.int32), tf.cast(high, tf.int32), clamped - low, inside


def sample_boxes(images: tf.Tensor, boxes: tf.Tensor, size) -> tf.Tensor:
    """images [b, h, w, c], pixel boxes [b, 4] (x1, y1, x2, y2) -> float32 [b, size, size, c].

    The module's box contract (half-pixel centres, edge clamping within the image, black beyond
    it), bilinear and separable: rows first, then columns. Used for the Transform's face crop and
    for the box jitter of train-time augmentation, so both sample alike.
    """
    images = tf.cast(images, tf.float32)
    boxes = tf.cast(boxes, tf.float32)
    shape = tf.shape(images)
    y_low, y_high, y_weight, y_inside = _axis_samples(boxes[:, 1], boxes[:, 3], shape[1], size)
    x_low, x_high, x_weight, x_inside = _axis_samples(boxes[:, 0], boxes[:, 2], shape[2], size)
    top = tf.gather(images, y_low, axis=1, batch_dims=1)                    # [b, size, w, c]
    bottom = tf.gather(images, y_high, axis=1, batch_dims=1)
    rows = top + (bottom - top) * y_weight[:, :, tf.newaxis, tf.newaxis]
    left = tf.gather(rows, x_low, axis=2, batch_dims=1)                     # [b, size, size, c]
    right = tf.gather(rows, x_high, axis=2, batch_dims=1)
    sampled = left + (right - left) * x_weight[:, tf.newaxis, :, tf.newaxis]
    inside = y_inside[:, :, tf.newaxis, tf.newaxis] & x_inside[:, tf.newaxis, :, tf.newaxis]
    return tf.where(inside, sampled, tf.zeros_like(sampled))


def _crop_one(image_bytes: tf.Tensor, box: tf.Tensor, size: int) -> tf.Tensor:
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False, dtype=tf.uint8)
    crop = sample_boxes(image[tf.newaxis], box[tf.newaxis], size)[0]
    return tf.clip_by_value(crop / 255.0, 0.0, 1.0)


def crop_faces(image_bytes: tf.Tensor, boxes: tf.Tensor, size: int = DEFAULT_IMAGE_SIZE) -> tf.Tensor:
    """Encoded JPEG/PNG bytes [batch] and pixel boxes [batch, 4] (x1, y1, x2, y2) -> [batch, s, s, 3]."""
    boxes = tf.cast(boxes, tf.float32)
    return tf.map_fn(lambda args: _crop_one(args[0], args[1], size), (image_bytes, boxes),
                     fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))


def quantize_crops(crops: tf.Tensor) -> tf.Tensor:
    """Float crops [..., s, s, 3] in [0, 1] -> uint8 round(255 x crop), computed in float32 and
    rounded half to even (np.round's rule); values outside [0, 1] are clipped first."""
    scaled = tf.clip_by_value(tf.cast(crops, tf.float32), 0.0, 1.0) * 255.0
    return tf.cast(tf.round(scaled), tf.uint8)


def encode_crops(crops: tf.Tensor) -> tf.Tensor:
    """Float crops [b, s, s, 3] in [0, 1] -> string [b]: each crop's `quantize_crops` values as
    s * s * 3 raw bytes, row-major (numpy's `tobytes()` of the uint8 [s, s, 3] array).

    TensorFlow has no op that turns a uint8 tensor into one string, but `serialize_tensor` stores
    a numeric tensor's values raw in the TensorProto's tensor_content, its last field: the last
    b * n bytes of the serialized [b, n] batch are the crops, one after another.
    """
    pixels = quantize_crops(crops)
    batch = tf.shape(pixels)[0]
    flat = tf.reshape(pixels, [batch, -1])
    length = tf.shape(flat)[1]
    serialized = tf.io.serialize_tensor(flat)
    starts = tf.strings.length(serialized) - batch * length + tf.range(batch) * length
    return tf.strings.substr(serialized, starts, tf.fill([batch], length))


def encoded_length(size: int) -> int:
    """Bytes of one stored crop of side `size`."""
    return int(size) * int(size) * 3


def side_of_encoded(length: int, where: str = "transformed Example") -> int:
    """The crop side s of a stored crop of `length` bytes (s * s * 3); ValueError otherwise."""
    side = int(round((length / 3) ** 0.5))
    if side < 1 or encoded_length(side) != length:
        raise ValueError(f"{where}: feature {IMAGE!r} holds {length} bytes, not the s x s x 3 "
                         f"uint8 crop of any side s that the Transform stores")
    return side


def decode_crops(encoded: tf.Tensor, size: int) -> tf.Tensor:
    """Stored crops, string [b] (`encode_crops`) -> float32 [b, size, size, 3] = uint8 / 255.

    The one conversion of stored crops back to the model's input: the Trainer's datasets, the
    serving signatures that run the Transform, the evaluator's pixel anchor and the TFLite
    calibration all call it. A crop of another size fails with an InvalidArgumentError saying so.
    """
    encoded = tf.reshape(encoded, [-1])
    pixels = tf.io.decode_raw(encoded, tf.uint8)
    check = tf.debugging.assert_equal(
        tf.size(pixels), tf.shape(encoded)[0] * encoded_length(size),
        message=f"stored crops ({IMAGE!r}) must each hold {encoded_length(size)} bytes, uint8 "
                f"[{size}, {size}, 3] (the Transform's crop at image size {size})")
    with tf.control_dependencies([check]):
        pixels = tf.reshape(pixels, [-1, size, size, 3])
    return tf.cast(pixels, tf.float32) / 255.0


def image_size_from(custom_config: Optional[Dict[str, Any]]) -> int:
    return int((custom_config or {}).get("image_size", DEFAULT_IMAGE_SIZE))


def preprocessing_fn(inputs: Dict[str, tf.Tensor],
                     custom_config: Optional[Dict[str, Any]] = None) -> Dict[str, tf.Tensor]:
    """tf.Transform entry point (TFX Transform, `custom_config={"image_size": ...}`)."""
    size = image_size_from(custom_config)
    boxes = tf.stack([_squeeze(inputs[k]) for k in BOX_KEYS], axis=1)
    label = _squeeze(inputs[LABEL])
    return {
        # custom_config "crop": "box" (default) or "face_api_aligned" (models/pretrained/alignment.py).
        IMAGE: encode_crops(alignment.recipe_crop_fn(custom_config, crop_faces)(
            _squeeze(inputs[IMAGE_RAW]), boxes, size, inputs.get(LANDMARKS))),
        LABEL: label,
        # Class indices for the classification heads, over the identities of the analyzed (train)
        # split only; their count is the head's width. Unseen (eval) identities map to -1.
        CLASS_INDEX: tft.compute_and_apply_vocabulary(
            tf.strings.as_string(label), default_value=-1, num_oov_buckets=0,
            vocab_filename=IDENTITY_VOCABULARY),
        GROUP: _squeeze(inputs[GROUP]),
    }
