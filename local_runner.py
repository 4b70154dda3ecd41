"""Runs the FFEM-TFX pipeline locally: LocalDagRunner, SQLite metadata, the generated sample data.

    python local_runner.py                        # the README's main command (via `make demo`)
    python local_runner.py --loss GroupAware --epochs 20 --min-recall 0.7
    python local_runner.py --data-root /data/rfw --image-root /data/rfw/images --preset production
    python local_runner.py --config experiments/cosface.json --epochs 5

The sample data is generated first when it is missing (pipeline/sample_data.py). The run prints
one line per component as it finishes and one per training epoch; everything else (TensorFlow, Beam
and TFX logs) goes to <pipeline root>/logs/run-<time>.log, or to the terminal with -v. The run ends
by printing where the evaluation report and the pushed model are.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import Any, Dict, List, Optional

from pipeline import configs, overrides, progress


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=configs.presets(), default="demo",
                        help="configs/NAME.json: demo, a small CNN on 64x64 crops (minutes on a "
                             "CPU); production, the original's ResNet50V2, 512-d, 112x112, and "
                             "the production gate (default: demo)")
    data = parser.add_argument_group("data")
    data.add_argument("--data-root", default=None,
                      help="directory holding the face lists (default: the sample data, generated "
                           "when missing)")
    data.add_argument("--image-root", default=None,
                      help="directory the list keys are relative to (default: <data-root>/images)")
    data.add_argument("--max-bad-fraction", type=float, default=None)
    data.add_argument("--offset-labels", action="store_true",
                      help="a list pattern matches several data sets, each labelled from 0: "
                           "shift each one's labels so identities never collide")
    data.add_argument("--sample-seed", type=int, default=0, help="seed of the sample data")
    model = parser.add_argument_group("model and training (default: the preset's)")
    model.add_argument("--loss", help="a loss of models/face_model.py, e.g. ArcFace, CosFace, "
                                      "GroupAware")
    model.add_argument("--backbone")
    model.add_argument("--embedding-size", type=int)
    model.add_argument("--epochs", type=int)
    model.add_argument("--batch-size", type=int)
    model.add_argument("--warm-start", default=None,
                       help="'latest_blessed' or a model directory to warm start from")
    gate = parser.add_argument_group("release gate (default: the preset's)")
    gate.add_argument("--min-recall", type=float, help="Recall@1 bar for every group")
    gate.add_argument("--group-min-recall", nargs="+", default=None, metavar="GROUP=BAR")
    gate.add_argument("--max-drop", type=float, help="allowed Recall@1 drop vs the last blessed")
    gate.add_argument("--report-examples", type=int, metavar="N",
                      help="error gallery of the report: N highest-scoring impostor and N "
                           "lowest-scoring genuine pairs per group (default 6); 0 copies no image "
                           "into the report")
    run = parser.add_argument_group("run")
    run.add_argument("--pipeline-root", default=None)
    run.add_argument("--metadata", default=None, help="SQLite metadata file")
    run.add_argument("--serving-dir", default=None, help="where blessed models are pushed")
    run.add_argument("--last-stage", choices=configs.STAGES, default=None,
                     help="build the pipeline only up to this stage")
    run.add_argument("--no-cache", action="store_true", help="rerun every component")
    run.add_argument("--evaluate-model", default=None, metavar="DIR|pretrained:NAME",
                     help="evaluate this model instead of training one: a SavedModel with the "
                          "project's serving signatures (or a Model artifact directory holding "
                          "one in Format-Serving/), or pretrained:face_recognition_net (face-api's "
                          "network, exported with its aligned crop); nothing is pushed without "
                          "--push")
    run.add_argument("--push", action="store_true",
                     help="with --evaluate-model: push the model when the gate blesses it")
    run.add_argument("--crop", choices=("box", "face_api_aligned"), default=None,
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


def print_outcome(config: configs.PipelineConfig) -> None:
    from pipeline import runs

    text = runs.outcome_text(config)
    if text:
        print(text)


def run(argv: Optional[List[str]] = None, keep_log_until_exit: bool = False
        ) -> configs.PipelineConfig:
    """Builds the config, runs the pipeline, prints the outcome.

    Without -v, fds 1 and 2 go to <pipeline root>/logs/run-<time>.log for the run (see
    pipeline/progress.py) and only progress lines reach the terminal. `keep_log_until_exit`
    (the command line) leaves them on the log afterwards, for what TensorFlow prints while the
    interpreter shuts down. Configuration errors exit before anything starts."""
    args = parse_args(argv)
    try:
        config = build_config(args)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    console = progress.Console(None if args.verbose else progress.log_path(config.pipeline_root))
    if not args.verbose:
        progress.quiet_library_noise()
        console.print(f"Log: {console.log_file}")
    console.start()
    try:
        _run_pipeline(args, config, console)
    except BaseException as error:
        console.report_failure(error)
        console.stop(keep_redirected=keep_log_until_exit)
        raise
    with contextlib.redirect_stdout(console.terminal):
        print_outcome(config)
    if console.log_file:
        console.print(f"Full log: {console.log_file}")
    console.stop(keep_redirected=keep_log_until_exit)
    return config


def _run_pipeline(args: argparse.Namespace, config: configs.PipelineConfig,
                  console: progress.Console) -> None:
    # INFO in both modes: it is the log file's content without -v.
    logging.basicConfig(level=logging.INFO)
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.INFO)

    from tfx import v1 as tfx

    from pipeline import model_import, recovery, sample_data
    from pipeline.pipeline import beam_pipeline_args, check_config, create_pipeline

    try:
        check_config(config)
        beam_pipeline_args(config)      # remote Beam workers without the project's code: refused
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    sample_data.ensure_sample_data(config, args.sample_seed, say=console.print)
    if config.evaluate_model:
        try:
            model_import.resolve_evaluate_model(config, say=console.print)
        except (ValueError, FileNotFoundError) as e:
            raise SystemExit(f"error: {e}") from None
    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    console.print(f"Running pipeline {config.pipeline_name!r}: root {config.pipeline_root}, "
                  f"metadata {config.metadata_path}")
    with recovery.exclusive_run(config.metadata_path):
        interrupted = recovery.abandon_interrupted_executions(config.metadata_path)
        if interrupted:
            console.print(f"Recovered from an interrupted run: executions {interrupted} marked "
                          f"canceled; finished steps come from the cache.")
        # TFX's Beam executors parse sys.argv with absl flags: this command's own options
        # (e.g. -v, which absl reads as --verbosity) are parsed already and must not reach them.
        saved_argv, sys.argv = sys.argv, sys.argv[:1]
        try:
            with progress.Reporter(console, config.metadata_path):
                tfx.orchestration.LocalDagRunner().run(create_pipeline(config))
        finally:
            sys.argv = saved_argv


if __name__ == "__main__":
    run(keep_log_until_exit=True)
    sys.exit(0)
