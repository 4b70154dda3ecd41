"""What a local run prints: one line per component and per training epoch; the rest in a log file.

TensorFlow and XLA log from C++, Beam's worker processes and the Google client libraries write to
the process's file descriptors directly, where no Python logging setting reaches. A quiet run
therefore points file descriptors 1 and 2 into the log file (os.dup2) and writes its progress lines
to a duplicate of the real stdout taken before: everything any library prints lands in the log,
nothing is filtered away from it by guessing at message texts.

Component lines come from LocalDagRunner's own log records ("Component X is running." / "Component X
is finished.", tfx/orchestration/local/local_dag_runner.py) and the node's latest execution in the
metadata store: ran or cached, seconds, and the component's key figures read from its output
artifacts. Epoch lines come from the Trainer through the `ffem.progress` logger.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
import warnings
from typing import Callable, Dict, Optional, TextIO

PROGRESS_LOGGER = "ffem.progress"      # the Trainer's one line per epoch
_RUNNING = "Component %s is running."   # LocalDagRunner's records, tfx 1.16
_FINISHED = "Component %s is finished."
_STATES = {"COMPLETE": "ran", "CACHED": "cached"}


def log_path(pipeline_root: str) -> str:
    """<pipeline_root>/logs/run-<local time>.log"""
    return os.path.join(pipeline_root, "logs", f"run-{time.strftime('%Y%m%d-%H%M%S')}.log")


def quiet_library_noise() -> None:
    """Narrow filters for what every run of this pipeline prints and nobody can act on: the Google
    client libraries' FutureWarnings about Python 3.10 (and older google-cloud-storage). Set
    TF_CPP_MIN_LOG_LEVEL to 1 (no C++ INFO lines) unless the user chose a level."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


class Console:
    """The terminal of a run. With a `log_file`, `start()` sends fds 1 and 2 (Python's sys.stdout
    and sys.stderr, C++ logs, child processes) into that file until `stop()`; `print` writes to
    the real stdout. Without one (verbose), nothing is redirected and `print` is a plain print."""

    def __init__(self, log_file: Optional[str] = None):
        self.log_file = log_file
        self.terminal: TextIO = sys.stdout
        self._saved: Dict[int, int] = {}

    @property
    def redirected(self) -> bool:
        return bool(self._saved)

    def start(self) -> None:
        if not self.log_file or self.redirected:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.log_file)), exist_ok=True)
        _flush()
        log_fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._saved = {fd: os.dup(fd) for fd in (1, 2)}
        self.terminal = os.fdopen(os.dup(self._saved[1]), "w", buffering=1)
        for fd in (1, 2):
            os.dup2(log_fd, fd)
        os.close(log_fd)
        for stream in (sys.stdout, sys.stderr):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(line_buffering=True)   # log lines in the order they happen

    def print(self, text: str = "") -> None:
        print(text, file=self.terminal, flush=True)

    def report_failure(self, error: BaseException) -> None:
        """The traceback into the log, one line and the log's path on the terminal."""
        if not self.redirected:
            return
        _flush()
        with open(self.log_file, "a") as log:     # sys.stderr may not be fd 2 (e.g. pytest)
            traceback.print_exception(type(error), error, error.__traceback__, file=log)
        if isinstance(error, SystemExit):
            self.print(str(error) or f"exit status {error.code}")
        elif isinstance(error, KeyboardInterrupt):
            self.print("interrupted")
        else:
            self.print(f"error: {type(error).__name__}: {error_summary(error)}".rstrip(": "))
        self.print(f"Full log: {self.log_file}")

    def stop(self, keep_redirected: bool = False) -> None:
        """Restores fds 1 and 2. `keep_redirected`: leave them on the log for the rest of the
        process (the command line's case: TensorFlow's objects still print tracebacks while the
        interpreter shuts down); the terminal stays open for `print`."""
        if not self.redirected:
            return
        _flush()
        if keep_redirected:
            return
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)
            os.close(saved)
        self._saved = {}
        self.terminal.close()
        self.terminal = sys.stdout


def error_summary(error: BaseException) -> str:
    """One line of an error's message: the first, or the last when the first only introduces
    the rest (TensorFlow's "in user code:" followed by the graph's stack and the real error)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1] if lines[0].endswith(":") else lines[0]
    prefix = f"{type(error).__name__}: "
    return line[len(prefix):] if line.startswith(prefix) else line


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass


class _ToConsole(logging.Handler):
    def __init__(self, console: Console):
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(self.format(record))
        except Exception:   # noqa: BLE001 - a progress line must never fail the run
            self.handleError(record)


class ComponentProgress(logging.Handler):
    """One console line per finished component, from LocalDagRunner's log records (absl logger at
    INFO) and the node's latest execution in the metadata store."""

    def __init__(self, metadata_path: str, write: Callable[[str], None]):
        super().__init__(logging.INFO)
        self.metadata_path = metadata_path
        self.write = write
        self.started: Dict[str, float] = {}
        self.running: Optional[str] = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg not in (_RUNNING, _FINISHED) or not record.args:
            return
        node = str(record.args[0])
        if record.msg == _RUNNING:
            self.started[node], self.running = time.monotonic(), node
            return
        seconds = time.monotonic() - self.started.pop(node, time.monotonic())
        self.running = None
        try:
            line = describe_node(self.metadata_path, node, seconds)
        except Exception as e:   # noqa: BLE001 - the figures are a courtesy, the run goes on
            logging.getLogger(__name__).warning("no figures for %s: %s", node, e, exc_info=True)
            line = format_line(node, "finished", seconds, "")
        self.write(line)


def format_line(node: str, status: str, seconds: float, figures: str) -> str:
    return f"{node:<30} {status:<7} {seconds:7.1f}s  {figures}".rstrip()


def describe_node(metadata_path: str, node: str, seconds: float) -> str:
    """The console line of a finished node: status of its latest execution and its key figures."""
    from pipeline import metadata

    store = metadata.open_store(metadata_path)
    executions = metadata.node_executions(store, node)
    if not executions:
        return format_line(node, "done", seconds, "")
    execution = executions[-1]
    state = metadata.state_name(execution)
    figures = FIGURES.get(node)
    return format_line(node, _STATES.get(state, state.lower()), seconds,
                       figures(store, execution.id) if figures else "")


def _only_output(store, execution_id: int, key: str):
    from pipeline import metadata

    outputs = metadata.output_artifacts(store, execution_id, key)
    return outputs[0] if outputs else None


def ingest_figures(store, execution_id: int) -> str:
    """Records kept and quarantined per split (the Examples artifact's `ingest_summary`)."""
    from pipeline import metadata

    examples = _only_output(store, execution_id, "examples")
    summary = json.loads(metadata.custom_property(examples, "ingest_summary", "{}")
                         if examples is not None else "{}")
    if not summary:
        return ""
    kept = sum(s["valid"] for s in summary.values())
    quarantined = sum(s["quarantined"] for s in summary.values())
    splits = ", ".join(f"{split} {s['valid']}/{s['quarantined']}"
                       for split, s in sorted(summary.items()))
    return f"{kept} records kept, {quarantined} quarantined (kept/quarantined: {splits})"


def trainer_figures(store, execution_id: int) -> str:
    """Epochs (the execution's custom_config) and the last validation Recall@1 (the exported
    model's recall history)."""
    from tfx.utils import path_utils

    from core.features import OVERALL
    from models import export
    from pipeline import metadata

    model = _only_output(store, execution_id, "model")
    if model is None:
        return ""
    [execution] = store.get_executions_by_id([execution_id])
    epochs = json.loads(metadata.custom_property(execution, "custom_config", "{}")).get("epochs")
    history = export.read_model_config(path_utils.serving_model_dir(model.uri)).get(
        "recall_history") or []
    text = f"{epochs} epochs" if epochs is not None else ""
    if history:
        last = history[-1]
        recall = last.get(OVERALL, {}).get("recall@1")
        text += f", validation Recall@1 {'n/a' if recall is None else f'{recall:.3f}'}"
        if last["epoch"] != epochs:
            text += f" (epoch {last['epoch']})"
    return text.lstrip(", ")


def evaluator_figures(store, execution_id: int) -> str:
    """Blessed or not, the failed rules when not, and what is not gated (metrics.json's advisories:
    "blessed; not gated: FMR differential 18.5 [7.6, 31.0]")."""
    import tensorflow as tf

    from components.recall_evaluator import gate
    from core import json_safe
    from core.features import OVERALL
    from pipeline import metadata

    evaluation = _only_output(store, execution_id, "evaluation")
    if evaluation is None:
        return ""
    recall = json.loads(metadata.custom_property(evaluation, "recall_at_1", "{}"))
    overall = recall.get(OVERALL)
    prefix = f"Recall@1 {overall:.3f}; " if overall is not None else ""
    path = os.path.join(evaluation.uri, "metrics.json")
    metrics = {}
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            metrics = json_safe.load(f)
    advisories = "; ".join(gate.advisory_text(a) for a in metrics.get("advisories") or [])
    suffix = f"; not gated: {advisories}" if advisories else ""
    if metadata.custom_property(evaluation, "blessed", 0):
        return prefix + "blessed" + suffix
    failed = metrics.get("failed_rules") or []
    return prefix + "not blessed: " + ("; ".join(failed) or "no reason recorded") + suffix


def pusher_figures(store, execution_id: int) -> str:
    from pipeline import metadata

    pushed = _only_output(store, execution_id, "pushed_model")
    if pushed is None:
        return ""
    if metadata.custom_property(pushed, "pushed", 0):
        return f"pushed to {metadata.custom_property(pushed, 'pushed_destination', '?')}"
    return "not pushed (the model is not blessed)"


def tflite_figures(store, execution_id: int) -> str:
    from pipeline import metadata

    tflite = _only_output(store, execution_id, "tflite_model")
    if tflite is None:
        return ""
    return (f"TFLite models in {tflite.uri}" if metadata.custom_property(tflite, "exported", 0)
            else "nothing converted (nothing pushed)")


FIGURES = {"FaceExampleGen": ingest_figures, "Trainer": trainer_figures,
           "RecallEvaluator": evaluator_figures, "Pusher": pusher_figures,
           "TFLiteExporter": tflite_figures}


class Reporter:
    """Wires a Console to the run's log records: component lines and the Trainer's epoch lines
    reach the terminal; everything else follows the logging configuration (the log file when
    redirected)."""

    def __init__(self, console: Console, metadata_path: str):
        self.console = console
        self.components = ComponentProgress(metadata_path, console.print)
        self.epochs = _ToConsole(console)
        self.epochs.setFormatter(logging.Formatter("  %(message)s"))

    def __enter__(self) -> "Reporter":
        logging.getLogger("absl").addHandler(self.components)
        progress = logging.getLogger(PROGRESS_LOGGER)
        progress.setLevel(logging.INFO)
        if self.console.redirected:    # verbose: the root logger prints them already
            progress.addHandler(self.epochs)
        return self

    def __exit__(self, kind, error, trace) -> None:
        running = self.components.running
        if kind is not None and running is not None:
            seconds = time.monotonic() - self.components.started.get(running, time.monotonic())
            self.console.print(format_line(running, "FAILED", seconds, "(details in the log)"
                                           if self.console.redirected else ""))
        logging.getLogger("absl").removeHandler(self.components)
        logging.getLogger(PROGRESS_LOGGER).removeHandler(self.epochs)
