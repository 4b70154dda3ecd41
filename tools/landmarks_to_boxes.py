"""Turns public face data sets' 5-point landmark files into the pipeline's face list (the original's
`generate_bbox` step).

    python -m tools.landmarks_to_boxes rfw --landmarks African_lmk.txt \
        --landmarks Asian_lmk.txt --image-root RFW/test/data --out rfw.json [--clip]
    python -m tools.landmarks_to_boxes vggface2 --landmarks loose_landmark_train.csv \
        [--boxes loose_bb_train.csv] --image-root VGGFace2/train --out vggface2.json
    python -m tools.landmarks_to_boxes trillion --landmarks msra_lmk --image-root glint \
        --out msra.json

The formats, the output and the box geometry: `core.landmark_files` (one module per format).
"""
import argparse
import sys
from collections import Counter

from core.landmark_files import FORMATS, LandmarkFormatError, convert, write_face_list, write_rejected

_PRINTED_REJECTIONS = 20


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m tools.landmarks_to_boxes", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("format", choices=FORMATS)
    parser.add_argument("--landmarks", action="append", required=True, metavar="FILE",
                        help="landmark file; repeat for several (e.g. one per RFW race)")
    parser.add_argument("--boxes", metavar="FILE", help="vggface2: loose_bb_<split>.csv")
    parser.add_argument("--image-root", metavar="DIR",
                        help="folder the keys are relative to; every image's header is read")
    parser.add_argument("--clip", action="store_true", help="clip boxes to the image (needs "
                                                            "--image-root)")
    parser.add_argument("--group", metavar="NAME",
                        help="rfw: the race, when the file is not named <race>_lmk.txt")
    parser.add_argument("--key-prefix", metavar="DIR",
                        help="folder put before every listed path (image root one level up)")
    parser.add_argument("--out", required=True, metavar="FILE", help="face list to write (.json)")
    parser.add_argument("--rejected", metavar="FILE",
                        help="rejected lines as JSON Lines (default: <out>.rejected.jsonl)")
    parser.add_argument("--max-bad-fraction", type=float, default=0.01,
                        help="exit 2 when more than this fraction of landmark lines is rejected")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    rejected_path = args.rejected or args.out + ".rejected.jsonl"
    try:
        records, rejected = convert(args.format, args.landmarks, args.boxes, args.image_root,
                                    args.clip, args.group, args.key_prefix)
    except (LandmarkFormatError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    write_face_list(args.out, records)
    write_rejected(rejected_path, rejected)

    bad_landmark_lines = sum(1 for entry in rejected if entry["kind"] == "landmarks")
    landmark_lines = len(records) + bad_landmark_lines
    bad_fraction = bad_landmark_lines / landmark_lines if landmark_lines else 1.0
    groups = Counter(key.partition("/")[0] for key in records)
    identities = len({record["label"] for record in records.values()})
    print(f"landmark lines: {landmark_lines}, written: {len(records)} faces of {identities} "
          f"identities -> {args.out}")
    print(f"groups: {len(groups)} " + ", ".join(f"{name}={count}"
                                                 for name, count in sorted(groups.items())[:8])
          + (" ..." if len(groups) > 8 else ""))
    print(f"rejected: {bad_landmark_lines} landmark lines ({bad_fraction:.2%}), "
          f"{len(rejected) - bad_landmark_lines} box lines -> {rejected_path}")
    for reason, count in Counter(entry["reason"] for entry in rejected).most_common():
        print(f"  {reason}: {count}")
    for entry in rejected[:_PRINTED_REJECTIONS]:
        print(f"  {entry['file']}:{entry['line']}: {entry['reason']}: {entry['detail']}",
              file=sys.stderr)
    if len(rejected) > _PRINTED_REJECTIONS:
        print(f"  ... {len(rejected) - _PRINTED_REJECTIONS} more in {rejected_path}",
              file=sys.stderr)
    if bad_fraction > args.max_bad_fraction:
        print(f"error: {bad_fraction:.2%} of the landmark lines were rejected, more than "
              f"--max-bad-fraction {args.max_bad_fraction:.2%}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
