"""The exported SavedModel: three signatures that all return the L2-normalized embedding.

    serving_default   examples: serialized raw tf.Examples (image_raw and the box are enough;
                      `landmarks`, when given, are used by the aligned crop recipe)
    embed_images      image_bytes (JPEG/PNG), x1, y1, x2, y2 (pixels)
    embed_transformed image: float32 [n, s, s, 3] in [0, 1], the face crop (for evaluation, TFLite)

The first two run the Transform graph (TFT layer) inside, so they crop exactly as training did, and
decode its stored uint8 crop with preprocessing.decode_crops (uint8 / 255), as the Trainer does.
`embed_transformed` takes float crops, not the stored bytes: the least surprising input for callers
and the one the TFLite converter and its calibration use. Given the decoded stored crop
(decode_crops of the Transform's output, i.e. any crop rounded to multiples of 1/255 as
preprocessing.quantize_crops does) it returns the other two signatures' embedding; an unrounded
crop differs from it by the rounding, at most 0.5 / 255 per value.
The two that take image bytes refuse what ingest refuses, before any decode
(models/serving_checks.py): an image over ingest's pixel limit (read from the JPEG/PNG header) or
byte limit, a format other than JPEG/PNG, a CMYK JPEG, a truncated or undecodable file, an inverted
or empty box, a box outside the image beyond ingest's tolerance, landmarks that are not 5 or 68
finite points or lie outside the image. The InvalidArgumentError names each refused input's
position in the batch and ingest's reason code (`input 2: image_too_large: ...`). Any signature
that takes image bytes must run serving_checks.assert_servable before the Transform, as these do.
"""
from __future__ import annotations

import json
import os
from typing import Dict

import tensorflow as tf
import tensorflow_transform as tft

from core import features
from models import preprocessing, serving_checks
from models.face_model import EMBEDDING
from models.layers import l2_normalize

SERVING_DEFAULT = "serving_default"
EMBED_IMAGES = "embed_images"
EMBED_TRANSFORMED = "embed_transformed"
OUTPUT = "embedding"
MODEL_CONFIG_FILE = "ffem_model_config.json"   # written into the SavedModel's assets.extra

# Raw features a serving request may omit: only the Transform's pass-through outputs use them.
_OPTIONAL_RAW_DEFAULTS = {features.LABEL: 0, features.GROUP: "", features.PATH: "",
                          features.IMAGE_HEIGHT: 0, features.IMAGE_WIDTH: 0}


def _serving_feature_spec(raw_feature_spec: Dict) -> Dict:
    spec = {}
    for name, feature in raw_feature_spec.items():
        if name in _OPTIONAL_RAW_DEFAULTS:
            spec[name] = tf.io.FixedLenFeature(feature.shape, feature.dtype,
                                               default_value=_OPTIONAL_RAW_DEFAULTS[name])
        else:
            spec[name] = feature
    return spec


class EmbeddingExport(tf.Module):
    def __init__(self, embedding_model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput,
                 image_size: int):
        super().__init__()
        self.embedding_model = embedding_model
        self.tft_layer = tf_transform_output.transform_features_layer()
        self._raw_spec = _serving_feature_spec(tf_transform_output.raw_feature_spec())
        self.image_size = image_size

    def _embed(self, images: tf.Tensor) -> tf.Tensor:
        return l2_normalize(self.embedding_model(images, training=False)[EMBEDDING])

    def _embed_raw(self, raw_features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        boxes = tf.stack([tf.reshape(raw_features[k], [-1]) for k in preprocessing.BOX_KEYS], 1)
        check = serving_checks.assert_servable(tf.reshape(raw_features[features.IMAGE_RAW], [-1]),
                                               boxes, raw_features.get(features.LANDMARKS))
        raw_features = serving_checks.guarded(check, raw_features)
        transformed = self.tft_layer(raw_features)
        return {OUTPUT: self._embed(preprocessing.decode_crops(transformed[preprocessing.IMAGE],
                                                               self.image_size))}

    def signatures(self):
        size = self.image_size
        spec = self._raw_spec

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve_examples(examples):
            return self._embed_raw(tf.io.parse_example(examples, spec))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")]
                     + [tf.TensorSpec([None], tf.int64, name=k) for k in preprocessing.BOX_KEYS])
        def embed_images(image_bytes, x1, y1, x2, y2):
            batch = tf.shape(image_bytes)[0]
            raw = {features.IMAGE_RAW: image_bytes, features.X1: x1, features.Y1: y1, features.X2: x2,
                   features.Y2: y2}
            for name, default in _OPTIONAL_RAW_DEFAULTS.items():
                if name in spec:
                    dtype = spec[name].dtype
                    raw[name] = tf.fill([batch], tf.constant(default, dtype))
            raw = {k: tf.reshape(v, [-1, 1]) for k, v in raw.items() if k in spec}
            if features.LANDMARKS in spec:
                # No landmarks: the aligned crop recipe finds them with its network (as for a
                # face list without them); the box recipe ignores them.
                raw[features.LANDMARKS] = tf.SparseTensor(
                    tf.zeros([0, 2], tf.int64), tf.zeros([0], tf.float32),
                    tf.stack([tf.cast(batch, tf.int64), tf.constant(0, tf.int64)]))
            return self._embed_raw(raw)

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32,
                                                    name="image")])
        def embed_transformed(image):
            return {OUTPUT: self._embed(image)}

        return {SERVING_DEFAULT: serve_examples, EMBED_IMAGES: embed_images,
                EMBED_TRANSFORMED: embed_transformed}


def export_saved_model(embedding_model, tf_transform_output, image_size: int, export_dir: str,
                       model_config: Dict) -> None:
    module = EmbeddingExport(embedding_model, tf_transform_output, image_size)
    tf.saved_model.save(module, export_dir, signatures=module.signatures())
    extra = os.path.join(export_dir, "assets.extra")
    tf.io.gfile.makedirs(extra)
    with tf.io.gfile.GFile(os.path.join(extra, MODEL_CONFIG_FILE), "w") as f:
        json.dump(model_config, f, indent=1, sort_keys=True)


def read_model_config(export_dir: str) -> Dict:
    with tf.io.gfile.GFile(os.path.join(export_dir, "assets.extra", MODEL_CONFIG_FILE)) as f:
        return json.load(f)


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
