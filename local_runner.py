"""Runs the FFEM-TFX pipeline locally: LocalDagRunner, SQLite metadata, the generated sample data.

    python local_runner.py                        # the README's main command (via `make demo`)
    python local_runner.py --loss GroupAware --epochs 20 --min-recall 0.7
    python local_runner.py --data-root /data/rfw --image-root /data/rfw/images --preset production
    python local_runner.py --config experiments/cosface.json --epochs 5

The settings: the preset, --config, then the flags (pipeline/overrides.py); the run itself:
pipeline/local_run.py (docs/running.md).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional

from pipeline import configs, overrides


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=configs.presets(), default="demo",
                        help="configs/NAME.json: demo, a small CNN on 64x64 crops (minutes on a "
                             "CPU); production, the original's ResNet50V2, 512-d, 112x112, and "
                             "the production gate (default: demo)")
    data = parser.add_argument_group("data")
    data.add_argument("--data-root", help="directory holding the face lists (default: the sample "
                      "data, generated when missing)")
    data.add_argument("--image-root", help="the list keys' directory (default: <data-root>/images)")
    data.add_argument("--max-bad-fraction", type=float, default=None)
    data.add_argument("--offset-labels", action="store_true",
                      help="a list pattern matches several data sets, each labelled from 0: "
                           "shift each one's labels so identities never collide")
    data.add_argument("--sample-seed", type=int, default=0, help="seed of the sample data")
    model = parser.add_argument_group("model and training (default: the preset's)")
    model.add_argument("--loss", help="e.g. ArcFace, CosFace, GroupAware (docs/training.md)")
    model.add_argument("--backbone")
    model.add_argument("--embedding-size", type=int)
    model.add_argument("--epochs", type=int)
    model.add_argument("--batch-size", type=int)
    model.add_argument("--warm-start", help="'latest_blessed' or a model directory to start from")
    gate = parser.add_argument_group("release gate (default: the preset's)")
    gate.add_argument("--min-recall", type=float, help="Recall@1 bar for every group")
    gate.add_argument("--group-min-recall", nargs="+", default=None, metavar="GROUP=BAR")
    gate.add_argument("--max-drop", type=float, help="allowed Recall@1 drop vs the last blessed")
    gate.add_argument("--report-examples", type=int, metavar="N",
                      help="the report's error gallery: N pairs per group and kind (default 6); 0 "
                           "copies no image into the report")
    run = parser.add_argument_group("run")
    run.add_argument("--pipeline-root", default=None)
    run.add_argument("--metadata", default=None, help="SQLite metadata file")
    run.add_argument("--serving-dir", default=None, help="where blessed models are pushed")
    run.add_argument("--last-stage", choices=configs.STAGES, default=None,
                     help="build the pipeline only up to this stage")
    run.add_argument("--no-cache", action="store_true", help="rerun every component")
    run.add_argument("--evaluate-model", default=None, metavar="DIR|pretrained:NAME",
                     help="evaluate this model instead of training one: a SavedModel with the "
                          "serving signatures, a Model artifact directory, or "
                          "pretrained:face_recognition_net; pushed only with --push")
    run.add_argument("--push", action="store_true",
                     help="with --evaluate-model: push the model when the gate blesses it")
    run.add_argument("--crop", choices=configs.CROPS, default=None,
                     help="Transform's crop recipe (default: the one the backbone needs)")
    run.add_argument("--beam-args", nargs=argparse.REMAINDER, default=None,
                     help="last option: everything after it goes to Beam, e.g. --beam-args "
                          "--direct_num_workers=4 (default: FnApiRunner, multi_processing, 2 "
                          "workers; --beam-args alone: one in-process worker)")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="every log line on the terminal (default: progress lines only, the "
                          "rest in <pipeline root>/logs/run-<time>.log)")
    overrides.add_arguments(parser)
    return parser.parse_args(argv)


# Named flags -> (section, setting); "" is the top level. Paths are made absolute.
_FLAG_SETTINGS = (
    ("data_root", "ingest", "data_root"), ("image_root", "ingest", "image_root"),
    ("max_bad_fraction", "ingest", "max_bad_fraction"), ("offset_labels", "ingest", "offset_labels"),
    ("loss", "model", "loss"), ("backbone", "model", "backbone"),
    ("embedding_size", "model", "embedding_size"), ("epochs", "training", "epochs"),
    ("batch_size", "training", "batch_size"), ("min_recall", "gate", "min_recall"),
    ("max_drop", "gate", "max_drop"), ("report_examples", "gate", "report_examples"),
    ("pipeline_root", "", "pipeline_root"),
    ("metadata", "", "metadata_path"), ("serving_dir", "", "serving_model_dir"),
    ("warm_start", "", "warm_start"), ("last_stage", "", "last_stage"),
    ("evaluate_model", "", "evaluate_model"), ("crop", "", "crop"))
_PATH_FLAGS = ("data_root", "image_root", "pipeline_root", "metadata", "serving_dir")


def flag_overrides(args: argparse.Namespace) -> Dict[str, Any]:
    """This command's flags as an overrides dict (pipeline/overrides.py): only flags given. The
    named flags come first, so `--model`/`--training`/`--gate` pairs win over them."""
    layer: Dict[str, Any] = {}
    for flag, section, key in _FLAG_SETTINGS:
        value = getattr(args, flag)
        if value is None or value is False:
            continue
        value = os.path.abspath(value) if flag in _PATH_FLAGS else value
        (layer.setdefault(section, {}) if section else layer)[key] = value
    if args.group_min_recall:
        layer.setdefault("gate", {})["group_min_recall"] = overrides.parse_pairs(
            args.group_min_recall, "--group-min-recall", "float", "GROUP=BAR")
    if args.no_cache:
        layer["enable_cache"] = False
    if args.evaluate_model and not args.push and not args.last_stage:
        layer["last_stage"] = "evaluate"
    if args.beam_args is not None:
        layer["beam_pipeline_args"] = list(args.beam_args)
    return overrides.merge(layer, overrides.from_arguments(args))


def build_config(args: argparse.Namespace) -> configs.PipelineConfig:
    """The preset, then --config FILE, then the flags: each layer wins over the one before.
    Local paths from the file are taken relative to the working directory, as flags are."""
    config = configs.preset(args.preset)
    file_layer = overrides.load_file(args.config) if args.config else {}
    flags = flag_overrides(args)
    overrides.check_keys(flags, "command line")
    config = overrides.apply(config, overrides.merge(file_layer, flags),
                             f"--config {args.config}" if args.config else "command line")
    for owner, name in ((config, "pipeline_root"), (config, "metadata_path"),
                        (config, "serving_model_dir"), (config.ingest, "data_root"),
                        (config.ingest, "image_root")):
        value = getattr(owner, name)
        if value and "://" not in value:
            setattr(owner, name, os.path.abspath(value))
    return config


def run(argv: Optional[List[str]] = None, keep_log_until_exit: bool = False
        ) -> configs.PipelineConfig:
    """Builds the config and runs it (pipeline/local_run.py: the console, the log, recovery, the
    outcome). Configuration errors exit before anything starts."""
    args = parse_args(argv)
    try:
        config = build_config(args)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    from pipeline import local_run

    local_run.run(config, verbose=args.verbose, sample_seed=args.sample_seed,
                  keep_log_until_exit=keep_log_until_exit)
    return config


if __name__ == "__main__":
    run(keep_log_until_exit=True)
    sys.exit(0)
