"""Generates the embedded sample data set (pipeline/sample_data.py says what it holds).

    python -m tools.make_sample_data --out data/sample --seed 0
"""
import argparse
import os
import sys

from pipeline.sample_data import generate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/sample", help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-identities", type=int, default=160)
    parser.add_argument("--train-images", type=int, default=12, help="images per train identity")
    parser.add_argument("--test-identities", type=int, default=100)
    parser.add_argument("--test-images", type=int, default=6, help="images per test identity (>= 4)")
    parser.add_argument("--workers", type=int, default=0, help="processes (default: up to 4)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    counts = generate(args.out, args.seed, args.train_identities, args.train_images,
                      args.test_identities, args.test_images, args.workers, not args.quiet)
    for name, count in counts.items():
        print(f"{os.path.join(args.out, name)}: {count} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
