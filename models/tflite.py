"""TFLite conversion of the SavedModel's embedding network at three quantization levels, with a check.

Levels (all converted from the SavedModel's `embed_transformed` signature, models.export, with the
batch fixed at 1):
    0  dynamic range: int8 weights, float32 activations, float32 input and output
    1  full integer where supported: int8 weights and activations calibrated on a representative
       sample of face crops, float fallback for ops without an int8 kernel; float32 input and output
    2  integer only (TFLITE_BUILTINS_INT8): uint8 input and uint8 output. Caveat: the converter
       silently leaves ops without an int8 kernel in float (tensorflow/tensorflow#56535); with a
       GNAP head that is the per-position norm weighting (SQUARE, SQRT, MEAN, MAXIMUM, DIV on the
       [1, h, w, 1] norms of the final feature map), while convolutions and the FC run in int8.
       The report lists such ops per level ("float_ops"): an int8-only accelerator would fall back
       to the CPU there.

Input of every level: the face CROP, float32 [1, s, s, 3] in [0, 1] (s = the model's image size).
Decoding the image and cropping/resizing the face box stay outside the TFLite model; a caller must
crop exactly like `models.preprocessing.crop_faces` (pixel box, half-pixel centres, bilinear) and
round the crop to multiples of 1/255 as the Transform stores it (`quantize_crops`, then / 255) to get
the embeddings the SavedModel's serving signatures give. The calibration and check crops of the
TFLite step are the Transform's stored crops, decoded so (`decode_crops`).

Feeding a level-2 model (`run_tflite` does this): read the input tensor's (scale, zero_point) from
`interpreter.get_input_details()[0]["quantization"]` and feed
`clip(round(crop / scale + zero_point), 0, 255).astype(uint8)`; the output is
`(uint8_output.astype(float32) - zero_point) * scale` with the OUTPUT tensor's parameters. The input
scale comes from calibration (close to 1/255 with zero point 0 for crops in [0, 1], but not exactly:
use the parameters, never assume `pixel / 255`). The dequantized embedding is only approximately
unit length; normalize it before comparing with cosine or Euclidean distance.

The operating point: a pushed SavedModel's operating_point.json travels into every level's
metadata (models/tflite_metadata.py); the check reads it back from the written file and a level
whose threshold differs from the SavedModel's (or is missing while the SavedModel has one) fails.
A pushed SavedModel (the pipeline's TFLite step converts only those; the Pusher's marker file
marks a pushed version) must carry a valid one: a missing or unreadable asset fails every level,
the report naming the file (`operating_point_error`), rather than two missing thresholds agreeing.
A SavedModel that was exported, not pushed, gives TFLite models without one.

The check: each level embeds check crops (disjoint from the calibration crops when the sample allows,
`split_calibration_and_check`) and is compared with the SavedModel's embeddings of the same crops by
cosine. Bounds on the mean cosine (MIN_MEAN_COSINE): level 0 >= 0.995, levels 1 and 2 >= 0.98. Why:
level 0 rounds only the weights, so its error is the smallest and its bound the tightest; levels 1
and 2 also round every activation, an error that grows with depth, so their bound leaves room for
backbones deeper than the demo's (about ten times the error observed on the demo model, see
benchmarks/results.md). Levels 1 and 2 share calibration, and uint8 with zero point z + 128 is the
same grid as int8 with zero point z, so they are expected to agree. A broken export (wrong
preprocessing, crops fed in the wrong order, a wrong signature) gives embeddings nearly unrelated
to the SavedModel's, far below either bound.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from core import operating_point
from models import tflite_metadata
from models.export import EMBED_TRANSFORMED, OUTPUT, load_signature

LEVELS = (0, 1, 2)
LEVEL_NAMES = {0: "dynamic_range_int8_weights", 1: "full_integer_float_fallback",
               2: "integer_only_uint8_io"}
# Lowest acceptable mean cosine per level (the reasons are in the module docstring).
MIN_MEAN_COSINE = {0: 0.995, 1: 0.98, 2: 0.98}
REPORT_FILE = "tflite_report.json"
_CROP_BATCH = 64          # crops embedded per SavedModel call: bounded memory on large samples


def tflite_path(out_dir: str, level: int) -> str:
    return os.path.join(out_dir, f"model_q{level}.tflite")


# ----------------------------------------------------------------------------- the SavedModel

def load_embed_transformed(saved_model_dir: str):
    """(loaded SavedModel, its embed_transformed signature, image size); clear errors otherwise."""
    loaded, signature = load_signature(saved_model_dir, EMBED_TRANSFORMED)
    specs = signature.structured_input_signature[1]
    if len(specs) != 1:
        raise ValueError(f"{EMBED_TRANSFORMED!r} of {saved_model_dir!r} should take one image "
                         f"input, takes {sorted(specs)}")
    spec = next(iter(specs.values()))
    shape = spec.shape.as_list()
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
        raise ValueError(f"{EMBED_TRANSFORMED!r} of {saved_model_dir!r} takes {spec}; expected "
                         f"float32 [n, s, s, 3]")
    return loaded, signature, int(shape[1])


def saved_model_embeddings(signature, crops: np.ndarray) -> np.ndarray:
    """The SavedModel's embeddings of float32 crops [n, s, s, 3] (the reference for the check)."""
    name = next(iter(signature.structured_input_signature[1]))
    parts = [signature(**{name: tf.constant(crops[i:i + _CROP_BATCH])})[OUTPUT].numpy()
             for i in range(0, len(crops), _CROP_BATCH)]
    return np.concatenate(parts).astype(np.float32)


# ----------------------------------------------------------------------------- conversion

def _batch_of_one(signature, image_size: int):
    """The signature as a concrete function with a static [1, s, s, 3] input: TFLite kernels and
    int8 calibration work on static shapes, and on-device callers embed one face at a time."""
    input_name = next(iter(signature.structured_input_signature[1]))

    @tf.function(input_signature=[tf.TensorSpec([1, image_size, image_size, 3], tf.float32,
                                                name="image")])
    def embed_one(image):
        return {OUTPUT: signature(**{input_name: image})[OUTPUT]}

    return embed_one.get_concrete_function()


def convert(loaded, signature, image_size: int, level: int,
            calibration_crops: Optional[np.ndarray] = None) -> bytes:
    """The .tflite flatbuffer of `level` (0, 1 or 2). Levels 1 and 2 need calibration crops."""
    if level not in LEVELS:
        raise ValueError(f"unknown quantization level {level!r}; choose from {LEVELS}")
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [_batch_of_one(signature, image_size)], loaded)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if level >= 1:
        if calibration_crops is None or len(calibration_crops) == 0:
            raise ValueError(f"level {level} needs calibration crops (a representative sample of "
                             f"face crops) to choose the activation ranges")
        crops = np.asarray(calibration_crops, np.float32)

        def representative_dataset():
            for crop in crops:
                yield [crop[np.newaxis]]

        converter.representative_dataset = representative_dataset
    if level == 2:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    return converter.convert()


# ----------------------------------------------------------------------------- running it

def _quantize(values: np.ndarray, detail: Dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if scale == 0:
        raise ValueError(f"input tensor {detail['name']!r} is {detail['dtype'].__name__} but has "
                         f"no quantization parameters")
    info = np.iinfo(detail["dtype"])
    quantized = np.clip(np.round(values / scale + zero_point), info.min, info.max)
    return quantized.astype(detail["dtype"])


def _dequantize(values: np.ndarray, detail: Dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float32) - zero_point) * scale


def run_tflite(path: str, crops: np.ndarray) -> np.ndarray:
    """Embeddings [n, d] (float32) of crops [n, s, s, 3] in [0, 1] from a .tflite of any level.

    Integer inputs/outputs (level 2) are quantized/dequantized with the tensors' own parameters.
    The result is NOT re-normalized: the dequantized level-2 output is only about unit length.
    """
    interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    [input_detail] = interpreter.get_input_details()
    output_detail = interpreter.get_output_details()[0]
    integer_input = np.issubdtype(input_detail["dtype"], np.integer)
    integer_output = np.issubdtype(output_detail["dtype"], np.integer)
    embeddings = []
    for crop in np.asarray(crops, np.float32):
        value = crop[np.newaxis]
        value = _quantize(value, input_detail) if integer_input else value
        interpreter.set_tensor(input_detail["index"], value)
        interpreter.invoke()
        out = interpreter.get_tensor(output_detail["index"])
        embeddings.append(_dequantize(out, output_detail) if integer_output else out)
    return np.concatenate(embeddings).astype(np.float32)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.sum(a * b, axis=1)


def float_ops(path: str) -> Optional[List[str]]:
    """Op types that compute in float32 inside the model (the final DEQUANTIZE of a float output
    excepted), or None when this TFLite has no op listing. The converter leaves ops without an int8
    kernel in float even under TFLITE_BUILTINS_INT8 (tensorflow/tensorflow#56535): for GNAP that is
    the per-position norm weighting (SQUARE, SQRT, MEAN, MAXIMUM, DIV on [1, h, w, 1])."""
    # Without the default XNNPACK delegate: it would replace op lists by opaque DELEGATE nodes.
    interpreter = tf.lite.Interpreter(
        model_path=path, experimental_op_resolver_type=(
            tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    interpreter.allocate_tensors()
    ops_details = getattr(interpreter, "_get_ops_details", None)   # private, but stable since 2.5
    if ops_details is None:
        return None
    dtypes = {t["index"]: np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
    model_outputs = {d["index"] for d in interpreter.get_output_details()}
    names = set()
    for op in ops_details():
        outputs = [i for i in op["outputs"] if i >= 0]
        if op["op_name"] == "DEQUANTIZE" and set(outputs) <= model_outputs:
            continue
        if any(dtypes[i] == np.float32 for i in outputs):
            names.add(op["op_name"])
    return sorted(names)


def _directory_bytes(path: str) -> int:
    return sum(tf.io.gfile.stat(os.path.join(folder, name)).length
               for folder, _, names in tf.io.gfile.walk(path) for name in names)


def export_tflite(saved_model_dir: str, levels: Iterable[int], out_dir: str,
                  calibration_crops: np.ndarray, check_crops: np.ndarray,
                  min_mean_cosine: Optional[Dict[int, float]] = None,
                  extra_report: Optional[Dict] = None, pushed: bool = False) -> Dict:
    """Converts each level, checks it against the SavedModel on `check_crops`, writes the files.

    Returns (and writes to OUT/tflite_report.json) {"levels": {"<level>": {...}}, "passed": bool,
    "operating_point_error": None or the reason, ...}; a level passes when its mean cosine is >=
    its bound (MIN_MEAN_COSINE, or `min_mean_cosine[level]`) and it carries the SavedModel's
    threshold. `pushed`: the SavedModel is a pushed model (also known from the Pusher's marker
    file), so it must carry a valid operating point: without one every level fails and
    `operating_point_error` names the file and why (tflite_metadata.saved_model_operating_point).
    Does not raise on a failed check: the caller decides.
    """
    levels = sorted({int(level) for level in levels})
    for level in levels:
        if level not in LEVELS:
            raise ValueError(f"unknown quantization level {level!r}; choose from {LEVELS}")
    check_crops = np.asarray(check_crops, np.float32)
    if len(check_crops) == 0:
        raise ValueError("no check crops: the TFLite models cannot be compared with the SavedModel")
    loaded, signature, image_size = load_embed_transformed(saved_model_dir)
    if check_crops.shape[1:] != (image_size, image_size, 3):
        raise ValueError(f"check crops have shape {check_crops.shape[1:]}, the model takes "
                         f"({image_size}, {image_size}, 3)")
    bounds = {**MIN_MEAN_COSINE, **(min_mean_cosine or {})}
    reference = saved_model_embeddings(signature, check_crops)
    point, point_error = tflite_metadata.saved_model_operating_point(saved_model_dir, pushed)
    threshold = operating_point.threshold_of(point) if point else None
    report = {"saved_model": _absolute(saved_model_dir), "image_size": image_size,
              "embedding_size": int(reference.shape[1]),
              "saved_model_variables_bytes": _directory_bytes(
                  os.path.join(saved_model_dir, "variables")),
              "calibration_crops": int(len(calibration_crops)) if calibration_crops is not None
              else 0,
              "check_crops": int(len(check_crops)), **(extra_report or {}), "levels": {}}
    # The interpreter reads local files only: each level is written and checked in a local
    # folder, then copied to `out_dir` (a local folder or any URI tf.io.gfile writes, e.g. gs://).
    with tempfile.TemporaryDirectory(prefix="tflite-") as work:
        for level in levels:
            path = tflite_path(work, level)
            converted = convert(loaded, signature, image_size, level, calibration_crops)
            with open(path, "wb") as f:
                f.write(tflite_metadata.with_operating_point(converted, point) if point
                        else converted)
            interpreter = tf.lite.Interpreter(model_path=path)
            similarity = cosines(run_tflite(path, check_crops), reference)
            carried = tflite_metadata.read_operating_point(path)
            carried = operating_point.threshold_of(carried) if carried else None
            # No operating point matches a missing one that the SavedModel must have.
            matches = carried == threshold and point_error is None
            report["levels"][str(level)] = {
                "name": LEVEL_NAMES[level], "path": _absolute(tflite_path(out_dir, level)),
                "size_bytes": os.path.getsize(path),
                "input_dtype": np.dtype(interpreter.get_input_details()[0]["dtype"]).name,
                "output_dtype": np.dtype(interpreter.get_output_details()[0]["dtype"]).name,
                "float_ops": float_ops(path),
                "cosine_mean": float(np.mean(similarity)), "cosine_min": float(np.min(similarity)),
                "min_mean_cosine": float(bounds[level]),
                "threshold": carried, "threshold_matches": matches,
                "passed": bool(np.mean(similarity) >= bounds[level]) and matches,
            }
        report["saved_model_threshold"] = threshold
        report["operating_point_error"] = point_error
        report["passed"] = all(entry["passed"] for entry in report["levels"].values())
        tf.io.gfile.makedirs(out_dir)
        for level in levels:
            tf.io.gfile.copy(tflite_path(work, level), tflite_path(out_dir, level), overwrite=True)
    with tf.io.gfile.GFile(os.path.join(out_dir, REPORT_FILE), "w") as f:
        f.write(json.dumps(report, indent=1))
    return report


def _absolute(path: str) -> str:
    """A local path made absolute; a URI (gs://...) as it is."""
    return path if "://" in path else os.path.abspath(path)


# ----------------------------------------------------------------------------- calibration / check

def split_calibration_and_check(keys: Sequence, calibration_images: int, check_images: int,
                                seed: int = 0) -> Tuple[List, List, bool]:
    """(calibration keys, check keys, disjoint?).

    Keys are shuffled first because lists are ordered by group: the first N would all come from
    one group. Check keys are taken first; calibration uses the rest, and only when nothing is left
    reuses the check keys (then `disjoint` is False and the report says so).
    """
    order = [keys[i] for i in np.random.default_rng(seed).permutation(len(keys))]
    check = order[:max(1, check_images)]
    rest = order[len(check):]
    if rest:
        return rest[:max(1, calibration_images)], check, True
    return check[:max(1, calibration_images)], check, False
