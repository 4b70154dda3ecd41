"""Runs the FFEM-TFX pipeline locally: LocalDagRunner, SQLite metadata, the generated sample data.

    python local_runner.py                       # the README's main command (via `make demo`)
    python local_runner.py --data-root /data/rfw --image-root /data/rfw/images \
        --list-files train=train.json eval=test.json --pipeline-root runs/rfw

The sample data is generated first when it is missing (tools/make_sample_data.py).
"""
from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from typing import Dict, List, Optional  # noqa: E402

from pipeline import configs  # noqa: E402


def _key_values(pairs: List[str], cast=str) -> Dict[str, object]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected name=value, got {pair!r}")
        result[key] = cast(value)
    return result


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    defaults = configs.PipelineConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data-root", default=None,
                      help="directory holding the face lists (default: the sample data, generated "
                           "when missing)")
    data.add_argument("--image-root", default=None,
                      help="directory the list keys are relative to (default: <data-root>/images)")
    data.add_argument("--list-files", nargs="+", default=None, metavar="SPLIT=PATTERN",
                      help="list file per split (default: train=train.json eval=test.json)")
    data.add_argument("--identity-split", nargs="+", default=None, metavar="SPLIT=BUCKETS",
                      help="split one list by label hash, e.g. train=9 eval=1")
    data.add_argument("--max-bad-fraction", type=float, default=defaults.ingest.max_bad_fraction)
    data.add_argument("--sample-seed", type=int, default=0,
                      help="seed of the generated sample data")
    run = parser.add_argument_group("run")
    run.add_argument("--pipeline-root", default=defaults.pipeline_root)
    run.add_argument("--metadata", default=defaults.metadata_path, help="SQLite metadata file")
    run.add_argument("--no-cache", action="store_true", help="rerun every component")
    run.add_argument("--beam-args", nargs="*", default=None,
                     help="Beam pipeline args (default: DirectRunner, multi_processing, 2 workers)")
    run.add_argument("-v", "--verbose", action="store_true", help="INFO logging from TFX")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> configs.PipelineConfig:
    ingest = configs.IngestConfig(max_bad_fraction=args.max_bad_fraction)
    if args.data_root:
        ingest.data_root = os.path.abspath(args.data_root)
        ingest.image_root = os.path.abspath(args.image_root or os.path.join(args.data_root,
                                                                           "images"))
    elif args.image_root:
        ingest.image_root = os.path.abspath(args.image_root)
    if args.list_files:
        ingest.list_files = _key_values(args.list_files)
    if args.identity_split:
        ingest.identity_split = _key_values(args.identity_split, int)
    config = configs.PipelineConfig(pipeline_root=os.path.abspath(args.pipeline_root),
                                    metadata_path=os.path.abspath(args.metadata),
                                    ingest=ingest, enable_cache=not args.no_cache)
    if args.beam_args is not None:
        config.beam_pipeline_args = list(args.beam_args)
    return config


def ensure_sample_data(config: configs.PipelineConfig, seed: int) -> None:
    """Generates the sample data when the default data root is used and its lists are missing."""
    if config.ingest.data_root != configs.SAMPLE_DATA_DIR:
        return
    lists = [os.path.join(config.ingest.data_root, p) for p in config.ingest.list_files.values()]
    if all(os.path.exists(p) for p in lists):
        return
    from tools import make_sample_data

    print(f"Generating the sample data in {config.ingest.data_root} ...", flush=True)
    make_sample_data.generate(config.ingest.data_root, seed=seed)


def run(argv: Optional[List[str]] = None) -> configs.PipelineConfig:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.INFO if args.verbose else absl_logging.WARNING)

    from tfx import v1 as tfx
    from pipeline.pipeline import create_pipeline

    config = build_config(args)
    ensure_sample_data(config, args.sample_seed)
    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    print(f"Running pipeline {config.pipeline_name!r}: root {config.pipeline_root}, "
          f"metadata {config.metadata_path}", flush=True)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config))
    return config


if __name__ == "__main__":
    run()
    sys.exit(0)
