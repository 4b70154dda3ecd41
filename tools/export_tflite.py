"""TFLite export of a pushed SavedModel at the chosen quantization levels, checked against it.

    python -m tools.export_tflite --model runs/serving_model/<version> \\
        --list data/sample/test.json --image-root data/sample/images --levels 0 1 2 --out OUT \\
        [--calibration-images 200] [--check-images 100] [--min-cosine X]

Writes OUT/model_q{level}.tflite per level and OUT/tflite_report.json: per level the file size and
the cosine between the TFLite embedding and the SavedModel's embedding of the same face crops (mean
and min over the check crops), and the operating point each level carries. The list's images
are shuffled and split into check crops and calibration crops (disjoint when the list is long
enough). Exits 1 when a level's mean cosine is below its bound or a pushed model's operating point
is missing or unreadable (a version the Pusher wrote holds its marker file), 2 on bad input
(missing model directory or signature, missing or empty list, missing or rejected image).

Levels, the TFLite model's input, how to feed level 2 and the bounds: models/tflite.py.
"""
from __future__ import annotations

import os
import sys

from models.tflite import (
    LEVELS,
    MIN_MEAN_COSINE,
    REPORT_FILE,
    export_tflite,
    load_embed_transformed,
    split_calibration_and_check,
)
from tools.face_lists import load_crops, model_tool_parser, read_face_list


def main(argv=None) -> int:
    parser = model_tool_parser(__doc__)
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS), choices=LEVELS)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--calibration-images", type=int, default=200)
    parser.add_argument("--check-images", type=int, default=100)
    parser.add_argument("--min-cosine", type=float, default=None,
                        help=f"override every level's bound on the mean cosine (default: per level, "
                             f"{MIN_MEAN_COSINE})")
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
        below = entry["cosine_mean"] < entry["min_mean_cosine"]
        print(f"level {level} ({entry['name']}): {entry['size_bytes']} bytes, cosine mean "
              f"{entry['cosine_mean']:.5f} min {entry['cosine_min']:.5f} (bound "
              f"{entry['min_mean_cosine']}) {'BELOW BOUND' if below else 'ok'}, threshold "
              f"{entry['threshold']} {'ok' if entry['threshold_matches'] else 'MISMATCH'}")
        if level == "2" and entry["float_ops"]:
            print(f"  note: level 2 still computes {', '.join(entry['float_ops'])} in float32 "
                  f"(no int8 kernel)", file=sys.stderr)
    if report["operating_point_error"]:
        print(f"error: no operating point for the TFLite models: {report['operating_point_error']}",
              file=sys.stderr)
    print(f"report: {os.path.join(args.out, REPORT_FILE)}")
    if not disjoint:
        print("note: the list is too short for disjoint calibration and check images",
              file=sys.stderr)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
