"""A local run of the pipeline (LocalDagRunner, SQLite metadata): the quiet console and its log,
the sample data and an imported model made ready, one run at a time on a metadata store
(recovering an interrupted one), and the outcome printed at the end. local_runner.py builds the
settings and calls `run`."""
from __future__ import annotations

import contextlib
import logging
import os
import sys

from pipeline import configs, progress


def print_outcome(config: configs.PipelineConfig) -> None:
    from pipeline import runs

    text = runs.outcome_text(config)
    if text:
        print(text)


def run(config: configs.PipelineConfig, verbose: bool = False, sample_seed: int = 0,
        keep_log_until_exit: bool = False) -> None:
    """Runs the pipeline of `config` and prints the outcome.

    Without `verbose`, fds 1 and 2 go to <pipeline root>/logs/run-<time>.log for the run (see
    pipeline/progress.py) and only progress lines reach the terminal. `keep_log_until_exit`
    (the command line) leaves them on the log afterwards, for what TensorFlow prints while the
    interpreter shuts down."""
    console = progress.Console(None if verbose else progress.log_path(config.pipeline_root))
    if not verbose:
        progress.quiet_library_noise()
        console.print(f"Log: {console.log_file}")
    console.start()
    try:
        _run_pipeline(config, sample_seed, console)
    except BaseException as error:
        console.report_failure(error)
        console.stop(keep_redirected=keep_log_until_exit)
        raise
    with contextlib.redirect_stdout(console.terminal):
        print_outcome(config)
    if console.log_file:
        console.print(f"Full log: {console.log_file}")
    console.stop(keep_redirected=keep_log_until_exit)


def _run_pipeline(config: configs.PipelineConfig, sample_seed: int,
                  console: progress.Console) -> None:
    # INFO in both modes: it is the log file's content without -v.
    logging.basicConfig(level=logging.INFO)
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.INFO)

    from tfx import v1 as tfx

    from pipeline import model_import, recovery, sample_data
    from pipeline.pipeline import create_pipeline

    try:
        write_import = model_import.plan_import(config) if config.evaluate_model else None
        # Every setting is checked here, once (remote Beam workers without the project's code
        # too), before anything is written.
        pipeline = create_pipeline(config)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    sample_data.ensure_sample_data(config, sample_seed, say=console.print)
    if write_import is not None:
        try:
            write_import(console.print)
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
                tfx.orchestration.LocalDagRunner().run(pipeline)
        finally:
            sys.argv = saved_argv
