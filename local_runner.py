"""Runs the FFEM-TFX pipeline locally: LocalDagRunner, SQLite metadata, the generated sample data.

    python local_runner.py                        # the README's main command (via `make demo`)
    python local_runner.py --loss GroupAware --epochs 20 --min-recall 0.7
    python local_runner.py --data-root /data/rfw --image-root /data/rfw/images --preset production

The sample data is generated first when it is missing (tools/make_sample_data.py). The run ends by
printing where the evaluation report and the pushed model are.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Dict, List, Optional

from pipeline import configs


def _key_values(pairs: List[str], cast=str) -> Dict[str, object]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: expected name=value, got {pair!r}")
        result[key] = cast(value)
    return result


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("demo", "production"), default="demo",
                        help="demo: small CNN on 64x64 crops (minutes on a CPU); production: the "
                             "original's ResNet50V2, 512-d, 112x112 (default: demo)")
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
    data.add_argument("--max-bad-fraction", type=float, default=None)
    data.add_argument("--offset-labels", action="store_true",
                      help="a list pattern matches several data sets, each labelled from 0: "
                           "shift each one's labels so identities never collide")
    data.add_argument("--sample-seed", type=int, default=0, help="seed of the sample data")
    model = parser.add_argument_group("model and training (default: the preset's)")
    model.add_argument("--loss", choices=("SoftmaxCenter", "AngularMargin", "GroupAware",
                                          "CosFace", "SubCenterArcFace"))
    model.add_argument("--backbone")
    model.add_argument("--embedding-size", type=int)
    model.add_argument("--epochs", type=int)
    model.add_argument("--batch-size", type=int)
    model.add_argument("--image-size", type=int, help="Transform's crop size")
    model.add_argument("--training", nargs="+", default=None, metavar="KEY=JSON",
                       help="any other Trainer setting, e.g. optimizer='\"sgd\"' "
                            "mixed_precision=true")
    model.add_argument("--warm-start", default=None,
                       help="'latest_blessed' or a model directory to warm start from")
    gate = parser.add_argument_group("release gate (default: the preset's)")
    gate.add_argument("--min-recall", type=float, help="Recall@1 bar for every group")
    gate.add_argument("--group-min-recall", nargs="+", default=None, metavar="GROUP=BAR")
    gate.add_argument("--max-drop", type=float, help="allowed Recall@1 drop vs the last blessed")
    run = parser.add_argument_group("run")
    run.add_argument("--pipeline-root", default=None)
    run.add_argument("--metadata", default=None, help="SQLite metadata file")
    run.add_argument("--tflite-levels", type=int, nargs="+", choices=(0, 1, 2), default=None,
                     help="after the Pusher, convert the pushed model to TFLite at these "
                          "quantization levels, each checked against the SavedModel")
    run.add_argument("--serving-dir", default=None, help="where blessed models are pushed")
    run.add_argument("--last-stage", choices=configs.STAGES, default=None,
                     help="build the pipeline only up to this stage")
    run.add_argument("--no-cache", action="store_true", help="rerun every component")
    run.add_argument("--beam-args", nargs=argparse.REMAINDER, default=None,
                     help="last option: everything after it goes to Beam, e.g. --beam-args "
                          "--direct_num_workers=4 (default: FnApiRunner, multi_processing, 2 "
                          "workers; --beam-args alone: one in-process worker)")
    run.add_argument("-v", "--verbose", action="store_true", help="INFO logging from TFX")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> configs.PipelineConfig:
    config = configs.demo_config() if args.preset == "demo" else configs.PipelineConfig()
    ingest = config.ingest
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
    if args.max_bad_fraction is not None:
        ingest.max_bad_fraction = args.max_bad_fraction
    ingest.offset_labels = args.offset_labels
    for flag, key in (("loss", "loss"), ("backbone", "backbone"),
                      ("embedding_size", "embedding_size"), ("epochs", "epochs"),
                      ("batch_size", "batch_size")):
        if getattr(args, flag) is not None:
            config.training[key] = getattr(args, flag)
    if args.training:
        config.training.update(_key_values(args.training, json.loads))
    if args.image_size:
        config.image_size = args.image_size
    if args.min_recall is not None:
        config.gate["min_recall"] = args.min_recall
    if args.group_min_recall:
        config.gate["group_min_recall"] = _key_values(args.group_min_recall, float)
    if args.max_drop is not None:
        config.gate["max_drop"] = args.max_drop
    config.warm_start = args.warm_start
    for flag, attribute in (("pipeline_root", "pipeline_root"), ("metadata", "metadata_path"),
                            ("serving_dir", "serving_model_dir")):
        if getattr(args, flag):
            setattr(config, attribute, os.path.abspath(getattr(args, flag)))
    if args.last_stage:
        config.last_stage = args.last_stage
    config.enable_cache = not args.no_cache
    if args.tflite_levels:
        config.tflite_levels = list(args.tflite_levels)
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


def print_outcome(config: configs.PipelineConfig) -> None:
    from tools import review

    runs = review.list_runs(review.open_store(config.metadata_path))
    if not runs:
        return
    run = runs[-1]
    print(f"\nRun {run['run_id']} finished.")
    if run["recall_at_1"]:
        print(f"Recall@1 on unseen identities: {review.format_recall(run['recall_at_1'])}")
        pixels = review.pixel_recall_at_1(review.read_metrics(run))
        if pixels:
            print(f"Raw-pixel nearest neighbour:    {review.format_recall(pixels)}")
        print(f"Blessed: {'yes' if run['blessed'] else 'no'}")
        print(f"Report: {run['report']}")
    if run["pushed"]:
        print(f"Pushed model: {run['pushed_to']}")
        if run["tflite_uri"]:
            print(f"TFLite models: {run['tflite_uri']}")
    elif run["pushed"] is not None:
        print(f"Nothing pushed (the model was not blessed); serving dir: "
              f"{config.serving_model_dir}")
    print(f"Review runs: python -m tools.review --metadata {config.metadata_path} list")


def run(argv: Optional[List[str]] = None) -> configs.PipelineConfig:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.INFO if args.verbose else absl_logging.WARNING)

    from tfx import v1 as tfx

    from pipeline import recovery
    from pipeline.pipeline import create_pipeline

    config = build_config(args)
    ensure_sample_data(config, args.sample_seed)
    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    print(f"Running pipeline {config.pipeline_name!r}: root {config.pipeline_root}, "
          f"metadata {config.metadata_path}", flush=True)
    with recovery.exclusive_run(config.metadata_path):
        interrupted = recovery.abandon_interrupted_executions(config.metadata_path)
        if interrupted:
            print(f"Recovered from an interrupted run: executions {interrupted} marked canceled; "
                  f"finished steps come from the cache.", flush=True)
        # TFX's Beam executors parse sys.argv with absl flags: this command's own options
        # (e.g. -v, which absl reads as --verbosity) are parsed already and must not reach them.
        saved_argv, sys.argv = sys.argv, sys.argv[:1]
        try:
            tfx.orchestration.LocalDagRunner().run(create_pipeline(config))
        finally:
            sys.argv = saved_argv
    print_outcome(config)
    return config


if __name__ == "__main__":
    run()
    sys.exit(0)
