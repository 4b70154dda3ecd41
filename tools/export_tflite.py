"""TFLite export of the SavedModel's embedding network, at three quantization levels, with a check.

    python -m tools.export_tflite --model runs/serving_model/<version> \\
        --list data/sample/test.json --image-root data/sample/images --levels 0 1 2 --out OUT \\
        [--calibration-images 200] [--check-images 100] [--min-cosine X]

Writes OUT/model_q{level}.tflite per level and OUT/tflite_report.json: per level the file size and
the cosine between the TFLite embedding and the SavedModel's embedding of the same face crops (mean
and min over the check crops). Exits 1 when a level's mean cosine is below its bound, 2 on bad
input (missing model directory or signature, missing or empty list, missing image).

Levels (all converted from the `embed_transformed` signature, batch fixed at 1):
    0  dynamic range: int8 weights, float32 activations, float32 input and output
    1  full integer where supported: int8 weights and activations calibrated on a representative
       sample of face crops, float fallback for ops without an int8 kernel; float32 input and output
    2  integer only (TFLITE_BUILTINS_INT8): uint8 input and uint8 output. Caveat: the converter
       silently leaves ops without an int8 kernel in float (tensorflow/tensorflow#56535); in this
       model that is GNAP's per-position norm weighting (SQRT, MEAN, MAXIMUM, DIV on the
       [1, h, w, 1] norms of the final feature map). Convolutions and the FC run in int8. The
       report lists such ops per level ("float_ops"): an int8-only accelerator would fall back to
       the CPU there.

The TFLite model's input is the face CROP, float32 [1, s, s, 3] in [0, 1] (s = the model's image
size): decoding the image and cropping/resizing the face box stay outside the TFLite model, and a
caller must crop exactly like `models.preprocessing.crop_faces` (pixel box, half-pixel centres,
bilinear) to get the embeddings the SavedModel gives.

Feeding a level-2 model (`run_tflite` does this): read the input tensor's (scale, zero_point) from
`interpreter.get_input_details()[0]["quantization"]` and feed
`clip(round(crop / scale + zero_point), 0, 255).astype(uint8)`; the output is
`(uint8_output.astype(float32) - zero_point) * scale` with the OUTPUT tensor's parameters. The input
scale comes from calibration (about 1/255 with zero point 0 for crops in [0, 1], but not exactly:
use the parameters, never assume `pixel / 255`). The dequantized embedding is only approximately
unit length; normalize it before comparing with cosine or Euclidean distance.

Bounds on the mean cosine over the check crops (MIN_MEAN_COSINE; override with --min-cosine):
level 0 >= 0.995, levels 1 and 2 >= 0.98. Measured on the demo model (small_cnn, 64x64, 128-d,
200 calibration / 100 other check crops): 0.99986, 0.99882, 0.99882 (min 0.9997, 0.9973, 0.9973);
a random-weight 32x32 16-d small_cnn gives 0.9993, 0.9922, 0.9922. Levels 1 and 2 agree exactly:
they share calibration and input quantization, and uint8 with zero point 128 is the same grid as
int8 with zero point 0. Fed the wrong crops (the check batch reversed), the tiny model scores
about 0.04: the check separates a faithful export from a broken one by a wide margin.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tools.face_lists import load_crops, load_signature, model_tool_parser, read_face_list

EMBED_TRANSFORMED = "embed_transformed"   # = models.export.EMBED_TRANSFORMED (kept light to import)
LEVELS = (0, 1, 2)
LEVEL_NAMES = {0: "dynamic_range_int8_weights", 1: "full_integer_float_fallback",
               2: "integer_only_uint8_io"}
# Lowest acceptable mean cosine per level: about 10x the error measured on the demo model (0.99986,
# 0.99882, 0.99882), leaving room for bigger backbones whose int8 activations lose more.
MIN_MEAN_COSINE = {0: 0.995, 1: 0.98, 2: 0.98}
REPORT_FILE = "tflite_report.json"
_CROP_BATCH = 64          # crops decoded / embedded per call: bounded memory on large lists


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
    parts = [signature(**{name: tf.constant(crops[i:i + _CROP_BATCH])})["embedding"].numpy()
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
        return {"embedding": signature(**{input_name: image})["embedding"]}

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
    the per-position norm weighting (SQRT, MEAN, MAXIMUM, DIV on [1, h, w, 1])."""
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
    return sum(os.path.getsize(os.path.join(folder, name))
               for folder, _, names in os.walk(path) for name in names)


def export_tflite(saved_model_dir: str, levels: Iterable[int], out_dir: str,
                  calibration_crops: np.ndarray, check_crops: np.ndarray,
                  min_mean_cosine: Optional[Dict[int, float]] = None,
                  extra_report: Optional[Dict] = None) -> Dict:
    """Converts each level, checks it against the SavedModel on `check_crops`, writes the files.

    Returns (and writes to OUT/tflite_report.json) {"levels": {"<level>": {...}}, "passed": bool,
    ...}; a level passes when its mean cosine is >= its bound (MIN_MEAN_COSINE, or
    `min_mean_cosine[level]`). Does not raise on a failed bound: the caller decides.
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
    os.makedirs(out_dir, exist_ok=True)
    report = {"saved_model": os.path.abspath(saved_model_dir), "image_size": image_size,
              "embedding_size": int(reference.shape[1]),
              "saved_model_variables_bytes": _directory_bytes(
                  os.path.join(saved_model_dir, "variables")),
              "calibration_crops": int(len(calibration_crops)) if calibration_crops is not None
              else 0,
              "check_crops": int(len(check_crops)), **(extra_report or {}), "levels": {}}
    for level in levels:
        path = tflite_path(out_dir, level)
        with open(path, "wb") as f:
            f.write(convert(loaded, signature, image_size, level, calibration_crops))
        interpreter = tf.lite.Interpreter(model_path=path)
        similarity = cosines(run_tflite(path, check_crops), reference)
        report["levels"][str(level)] = {
            "name": LEVEL_NAMES[level], "path": os.path.abspath(path),
            "size_bytes": os.path.getsize(path),
            "input_dtype": np.dtype(interpreter.get_input_details()[0]["dtype"]).name,
            "output_dtype": np.dtype(interpreter.get_output_details()[0]["dtype"]).name,
            "float_ops": float_ops(path),
            "cosine_mean": float(np.mean(similarity)), "cosine_min": float(np.min(similarity)),
            "min_mean_cosine": float(bounds[level]),
            "passed": bool(np.mean(similarity) >= bounds[level]),
        }
    report["passed"] = all(entry["passed"] for entry in report["levels"].values())
    with open(os.path.join(out_dir, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=1)
    return report


# ----------------------------------------------------------------------------- crops from a list

def split_calibration_and_check(keys: Sequence[str], calibration_images: int, check_images: int,
                                seed: int = 0) -> Tuple[List[str], List[str], bool]:
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


# ----------------------------------------------------------------------------- CLI

def main(argv=None) -> int:
    parser = model_tool_parser(__doc__)
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS), choices=LEVELS)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--calibration-images", type=int, default=200)
    parser.add_argument("--check-images", type=int, default=100)
    parser.add_argument("--min-cosine", type=float, default=None,
                        help="override every level's bound on the mean cosine")
    args = parser.parse_args(argv)

    try:
        _, _, image_size = load_embed_transformed(args.model)
        records = read_face_list(args.list)
        calibration_keys, check_keys, disjoint = split_calibration_and_check(
            list(records), args.calibration_images, args.check_images)
        calibration = load_crops(records, calibration_keys, args.image_root, image_size)
        check = load_crops(records, check_keys, args.image_root, image_size)
        bounds = ({level: args.min_cosine for level in LEVELS} if args.min_cosine is not None
                  else None)
        report = export_tflite(args.model, args.levels, args.out, calibration, check, bounds,
                               extra_report={"list": os.path.abspath(args.list),
                                             "check_disjoint_from_calibration": disjoint})
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    for level, entry in report["levels"].items():
        print(f"level {level} ({entry['name']}): {entry['size_bytes']} bytes, cosine mean "
              f"{entry['cosine_mean']:.5f} min {entry['cosine_min']:.5f} (bound "
              f"{entry['min_mean_cosine']}) {'ok' if entry['passed'] else 'BELOW BOUND'}")
        if level == "2" and entry["float_ops"]:
            print(f"  note: level 2 still computes {', '.join(entry['float_ops'])} in float32 "
                  f"(no int8 kernel)", file=sys.stderr)
    print(f"report: {os.path.join(args.out, REPORT_FILE)}")
    if not disjoint:
        print("note: the list is too short for disjoint calibration and check images",
              file=sys.stderr)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
