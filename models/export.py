"""The exported SavedModel: three signatures that return the L2-normalized embedding, four that
apply the model's operating point, and one that returns the crop the model sees.

    serving_default   examples: serialized raw tf.Examples (image_raw and the box are enough;
                      `landmarks`, when given, are used by the aligned crop recipe)
    embed_images      image_bytes (JPEG/PNG), x1, y1, x2, y2 (pixels)
    embed_transformed image: float32 [n, s, s, 3] in [0, 1], the face crop (for evaluation, TFLite)
    verify            image_bytes_a, x1_a, y1_a, x2_a, y2_a and the same with _b (pairs of faces,
                      as embed_images takes them) -> score (cosine of the two embeddings, float32
                      [n]), match (score >= threshold, bool [n]), threshold (float64 [n])
    verify_landmarks  verify's inputs plus landmarks_a, landmarks_b: float32 [n, k], each row one
                      face's landmarks as the Example's `landmarks` feature holds them (photo
                      pixels, interleaved x0, y0, x1, y1, ...; k = 10 or 136: 5 or 68 points;
                      k = 0: none, as verify) -> the same
    compare           embedding_a, embedding_b (float32 [n, d], normalized here) -> the same
    operating_point   no input -> operating_point (the JSON text), threshold (float64; NaN when
                      the model carries none). Also `tf.saved_model.load(path).operating_point()`.
    crop_examples     examples (as serving_default) -> crop: the Transform's stored crop, uint8
                      [n, s, s, 3]: the face as the model sees it (the report's error gallery)

The operating point: `assets/operating_point.json` (core/operating_point.py). The export writes a
placeholder without a threshold; the GuardedPusher replaces it in the pushed copy with the
evaluation's. `verify`, `verify_landmarks` and `compare` read the threshold from that asset on each
call (the number that starts the document, core.operating_point.THRESHOLD_PATTERN) and refuse to
run without one (InvalidArgumentError "no operating point"): a model that was not evaluated and
pushed has no threshold to decide with. Scores are compared in float64 with the shipped threshold,
which the evaluator places midway between two observed scores, so a score moving in its last
float32 bits decides as the evaluator did. `verify` embeds each side as embed_images does, checks
included.

Landmarks in a pair: a SavedModel signature has no optional inputs, so `verify` keeps its inputs
and `verify_landmarks` is a second signature with the landmarks. Dense [n, k] rather than the
Example's variable-length list (a signature takes no ragged input): one k for every face of a
side, k = 0 meaning "none" (ingest's and serving_default's 0 values). The aligned crop recipe aligns
on given landmarks and finds them with its network otherwise; the box recipe ignores them. They are
checked as serving_default checks an Example's (5 or 68 finite points inside the image, else
`bad_landmarks`), and a landmarks input with another row count than its images is refused. In both
verify signatures, both sides' checks pass before either side reaches the Transform: a refused pair
decodes no image beyond the checks' probe.

The first two run the Transform graph (TFT layer) inside, so they crop exactly as training did, and
decode its stored uint8 crop with preprocessing.decode_crops (uint8 / 255), as the Trainer does.
`embed_transformed` takes float crops, not the stored bytes: the least surprising input for callers
and the one the TFLite converter and its calibration use. Given the decoded stored crop
(decode_crops of the Transform's output, i.e. any crop rounded to multiples of 1/255 as
preprocessing.quantize_crops does) it returns the other two signatures' embedding; an unrounded
crop differs from it by the rounding, at most 0.5 / 255 per value.
The signatures that take image bytes (all but embed_transformed, compare and operating_point)
refuse what ingest refuses, before any decode (models/serving_checks.py): an image over ingest's
pixel limit (read from the JPEG/PNG header) or byte limit, a format other than JPEG/PNG, a CMYK
JPEG, a truncated or undecodable file, an inverted or empty box, a box outside the image beyond
ingest's tolerance, given landmarks that are not 5 or 68 finite points or lie outside the image.
The InvalidArgumentError names each refused input's position in the batch and ingest's reason code
(`input 2: image_too_large: ...`). Any signature that takes image bytes must run
serving_checks.assert_servable before the Transform, as these do.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Dict

import tensorflow as tf
import tensorflow_transform as tft

from core import features
from core import operating_point as operating_point_lib
from models import preprocessing, serving_checks
from models.face_model import EMBEDDING
from models.layers import l2_normalize

SERVING_DEFAULT = "serving_default"
EMBED_IMAGES = "embed_images"
EMBED_TRANSFORMED = "embed_transformed"
CROP_EXAMPLES = "crop_examples"
CROP = "crop"
VERIFY = "verify"
VERIFY_LANDMARKS = "verify_landmarks"
COMPARE = "compare"
OPERATING_POINT = "operating_point"
OUTPUT = "embedding"
SCORE, MATCH, THRESHOLD = "score", "match", "threshold"
NO_OPERATING_POINT = ("this SavedModel carries no operating point (assets/operating_point.json is "
                      "the export's placeholder): only a model pushed by the GuardedPusher has a "
                      "threshold to verify with")
PAIR_SIDES = ("a", "b")
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


def _dense_landmarks(landmarks: tf.Tensor, batch: tf.Tensor) -> tf.SparseTensor:
    """float32 [n, k] landmarks as the parsed `landmarks` feature: a [n, k] SparseTensor holding
    every value (zeros included: 0 is a coordinate). InvalidArgumentError when n is not the
    request's `batch` of images."""
    shape = tf.shape(landmarks, out_type=tf.int64)
    rows_match = tf.debugging.assert_equal(
        shape[0], tf.cast(batch, tf.int64),
        message="serving request refused: the landmarks input needs one row per image")
    with tf.control_dependencies([rows_match]):
        rows, columns = tf.meshgrid(tf.range(shape[0]), tf.range(shape[1]), indexing="ij")
        indices = tf.reshape(tf.stack([rows, columns], axis=-1), [-1, 2])
        return tf.SparseTensor(indices, tf.reshape(landmarks, [-1]), shape)


class EmbeddingExport(tf.Module):
    def __init__(self, embedding_model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput,
                 image_size: int, scratch: str):
        super().__init__()
        self.embedding_model = embedding_model
        self.tft_layer = tf_transform_output.transform_features_layer()
        self._raw_spec = _serving_feature_spec(tf_transform_output.raw_feature_spec())
        self.image_size = image_size
        # The placeholder operating point, tracked as an asset: saved as assets/operating_point.json,
        # resolved to the loaded copy's file (the pushed one's) when loaded. `scratch` holds the
        # placeholder until the module is saved.
        placeholder = os.path.join(scratch, operating_point_lib.FILE)
        with open(placeholder, "w") as f:
            f.write(json.dumps(operating_point_lib.PLACEHOLDER, indent=1))
        self.operating_point_file = tf.saved_model.Asset(placeholder)

    def _embed(self, images: tf.Tensor) -> tf.Tensor:
        return l2_normalize(self.embedding_model(images, training=False)[EMBEDDING])

    def _check(self, raw_features: Dict[str, tf.Tensor], landmarks=None) -> tf.Operation:
        """serving_checks.assert_servable on raw features (their landmarks unless given)."""
        boxes = tf.stack([tf.reshape(raw_features[k], [-1]) for k in preprocessing.BOX_KEYS], 1)
        if landmarks is None:
            landmarks = raw_features.get(features.LANDMARKS)
        return serving_checks.assert_servable(tf.reshape(raw_features[features.IMAGE_RAW], [-1]),
                                              boxes, landmarks)

    def _crops_after(self, check: tf.Operation, raw_features: Dict[str, tf.Tensor]) -> tf.Tensor:
        """The Transform's crops (float32 [n, s, s, 3], uint8 / 255) of raw features, computed
        only after `check`."""
        transformed = self.tft_layer(serving_checks.guarded(check, raw_features))
        return preprocessing.decode_crops(transformed[preprocessing.IMAGE], self.image_size)

    def _crops_raw(self, raw_features: Dict[str, tf.Tensor]) -> tf.Tensor:
        """The Transform's crops of checked raw features."""
        return self._crops_after(self._check(raw_features), raw_features)

    def _embed_raw(self, raw_features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        return {OUTPUT: self._embed(self._crops_raw(raw_features))}

    def _image_request(self, image_bytes, x1, y1, x2, y2, landmarks=None):
        """(raw features, landmarks as a [n, k] SparseTensor) of an image-bytes request, with
        defaults for what it omits. `landmarks`: float32 [n, k] or None (none: the aligned crop
        recipe finds them with its network, as for a face list without them; the box recipe
        ignores them). The landmarks are returned apart for the check, which sees them also when
        the Transform takes none."""
        spec = self._raw_spec
        batch = tf.shape(image_bytes)[0]
        raw = {features.IMAGE_RAW: image_bytes, features.X1: x1, features.Y1: y1, features.X2: x2,
               features.Y2: y2}
        for name, default in _OPTIONAL_RAW_DEFAULTS.items():
            if name in spec:
                dtype = spec[name].dtype
                raw[name] = tf.fill([batch], tf.constant(default, dtype))
        raw = {k: tf.reshape(v, [-1, 1]) for k, v in raw.items() if k in spec}
        if landmarks is None:
            landmarks = tf.zeros([batch, 0], tf.float32)
        points = _dense_landmarks(landmarks, batch)
        if features.LANDMARKS in spec:
            raw[features.LANDMARKS] = points
        return raw, points

    def _embed_image_bytes(self, image_bytes, x1, y1, x2, y2) -> Dict[str, tf.Tensor]:
        """embed_images' request, checked (serving_checks.assert_servable) before the Transform."""
        raw, points = self._image_request(image_bytes, x1, y1, x2, y2)
        return {OUTPUT: self._embed(self._crops_after(self._check(raw, points), raw))}

    def _verify(self, side_a, side_b) -> Dict[str, tf.Tensor]:
        """The decision on pairs; each side (image_bytes, x1, y1, x2, y2, landmarks or None) is
        embedded as embed_images does, after both sides' checks passed."""
        (raw_a, points_a), (raw_b, points_b) = (self._image_request(*side)
                                                for side in (side_a, side_b))
        both = tf.group(self._check(raw_a, points_a), self._check(raw_b, points_b))
        return self._decide(self._embed(self._crops_after(both, raw_a)),
                            self._embed(self._crops_after(both, raw_b)))

    def _threshold(self) -> tf.Tensor:
        """The shipped threshold (float64), or an InvalidArgumentError without one."""
        text = tf.io.read_file(self.operating_point_file)
        found = tf.strings.regex_full_match(text, operating_point_lib.THRESHOLD_PATTERN)
        with tf.control_dependencies([tf.debugging.Assert(found, [NO_OPERATING_POINT])]):
            number = tf.strings.regex_replace(text, operating_point_lib.THRESHOLD_PATTERN, r"\1")
            return tf.strings.to_number(number, tf.float64)

    def _decide(self, a: tf.Tensor, b: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Cosine of the normalized embeddings a, b [n, d] and the decision at the threshold."""
        threshold = self._threshold()
        score = tf.reduce_sum(l2_normalize(a) * l2_normalize(b), axis=1)
        return {SCORE: score, MATCH: tf.cast(score, tf.float64) >= threshold,
                THRESHOLD: tf.fill(tf.shape(score), threshold)}

    @tf.function(input_signature=[])
    def operating_point(self):
        """The shipped operating point's text and threshold (NaN when it is the placeholder)."""
        text = tf.io.read_file(self.operating_point_file)
        found = tf.strings.regex_full_match(text, operating_point_lib.THRESHOLD_PATTERN)
        threshold = tf.cond(found, self._threshold, lambda: tf.constant(float("nan"), tf.float64))
        return {OPERATING_POINT: text, THRESHOLD: threshold}

    def signatures(self):
        size = self.image_size
        spec = self._raw_spec
        image_specs = ([tf.TensorSpec([None], tf.string, name="image_bytes")]
                       + [tf.TensorSpec([None], tf.int64, name=k) for k in preprocessing.BOX_KEYS])

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve_examples(examples):
            return self._embed_raw(tf.io.parse_example(examples, spec))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def crop_examples(examples):
            crops = self._crops_raw(tf.io.parse_example(examples, spec))
            return {CROP: tf.cast(tf.round(crops * 255.0), tf.uint8)}

        @tf.function(input_signature=image_specs)
        def embed_images(image_bytes, x1, y1, x2, y2):
            return self._embed_image_bytes(image_bytes, x1, y1, x2, y2)

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32,
                                                    name="image")])
        def embed_transformed(image):
            return {OUTPUT: self._embed(image)}

        @tf.function(input_signature=[tf.TensorSpec(s.shape, s.dtype, name=f"{s.name}_{side}")
                                      for side in PAIR_SIDES for s in image_specs])
        def verify(image_bytes_a, x1_a, y1_a, x2_a, y2_a, image_bytes_b, x1_b, y1_b, x2_b, y2_b):
            return self._verify((image_bytes_a, x1_a, y1_a, x2_a, y2_a, None),
                                (image_bytes_b, x1_b, y1_b, x2_b, y2_b, None))

        landmark_specs = image_specs + [tf.TensorSpec([None, None], tf.float32, name="landmarks")]

        @tf.function(input_signature=[tf.TensorSpec(s.shape, s.dtype, name=f"{s.name}_{side}")
                                      for side in PAIR_SIDES for s in landmark_specs])
        def verify_landmarks(image_bytes_a, x1_a, y1_a, x2_a, y2_a, landmarks_a,
                             image_bytes_b, x1_b, y1_b, x2_b, y2_b, landmarks_b):
            return self._verify((image_bytes_a, x1_a, y1_a, x2_a, y2_a, landmarks_a),
                                (image_bytes_b, x1_b, y1_b, x2_b, y2_b, landmarks_b))

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32,
                                                    name=f"embedding_{side}")
                                      for side in PAIR_SIDES])
        def compare(embedding_a, embedding_b):
            return self._decide(embedding_a, embedding_b)

        return {SERVING_DEFAULT: serve_examples, EMBED_IMAGES: embed_images,
                EMBED_TRANSFORMED: embed_transformed, CROP_EXAMPLES: crop_examples,
                VERIFY: verify, VERIFY_LANDMARKS: verify_landmarks, COMPARE: compare,
                OPERATING_POINT: self.operating_point}


def export_saved_model(embedding_model, tf_transform_output, image_size: int, export_dir: str,
                       model_config: Dict) -> None:
    with tempfile.TemporaryDirectory(prefix="ffem_export") as scratch:
        module = EmbeddingExport(embedding_model, tf_transform_output, image_size, scratch)
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
