"""The local run's terminal: progress lines only, everything else in the run's log file.

Unit tests: the fd redirection (C-level writes and child processes land in the log), the component
lines read from a metadata store built here by hand. One subprocess run of local_runner.py on a
small generated set checks the real thing, quiet and with -v.
"""
import json
import logging
import math
import os
import re
import subprocess
import sys

import pytest
from ml_metadata.proto import metadata_store_pb2 as mlmd

from pipeline import metadata, progress
from tests.conftest import REPO_ROOT


def test_console_sends_every_fd_write_to_the_log_and_progress_to_the_terminal(tmp_path, capfd):
    log = tmp_path / "logs" / "run.log"
    console = progress.Console(str(log))
    console.start()
    try:
        os.write(1, b"c-level stdout\n")
        os.write(2, b"c-level stderr\n")
        subprocess.run([sys.executable, "-c", "import sys; print('child out'); "
                        "print('child err', file=sys.stderr)"], check=True)
        console.print("progress line")
    finally:
        console.stop()
    os.write(1, b"after the run\n")
    out, err = capfd.readouterr()
    assert out == "progress line\nafter the run\n" and err == ""
    lines = log.read_text().splitlines()
    assert sorted(lines) == ["c-level stderr", "c-level stdout", "child err", "child out"]


def test_console_without_log_file_redirects_nothing(capfd):
    console = progress.Console(None)
    console.start()
    os.write(2, b"shown\n")
    console.print("progress")
    console.stop()
    out, err = capfd.readouterr()
    assert out == "progress\n" and err == "shown\n"


def test_failure_puts_traceback_in_log_and_the_real_error_on_the_terminal(tmp_path, capfd):
    log = tmp_path / "run.log"
    console = progress.Console(str(log))
    console.start()
    try:
        raise TypeError("in user code:\n\n    File \"face_model.py\", line 181\n\n"
                        "    TypeError: head() takes 2 positional arguments but 3 were given\n")
    except TypeError as error:
        console.report_failure(error)
    finally:
        console.stop()
    out = capfd.readouterr().out.splitlines()
    assert out == ["error: TypeError: head() takes 2 positional arguments but 3 were given",
                   f"Full log: {log}"]
    assert "Traceback (most recent call last)" in log.read_text()


class Store:
    """A hand-built metadata store: one execution per node, with output artifacts."""

    def __init__(self, path):
        self.path = str(path)
        self.store = metadata.open_store(self.path, "create")
        self.node_type = self.store.put_context_type(mlmd.ContextType(name="node"))
        self.artifact_type = self.store.put_artifact_type(mlmd.ArtifactType(name="Artifact"))
        self.execution_type = self.store.put_execution_type(mlmd.ExecutionType(name="Execution"))

    def add(self, node, state, outputs, custom=None):
        """`outputs`: {key: (uri, {property: value})}."""
        context = mlmd.Context(type_id=self.node_type, name=f"ffem-tfx.{node}")
        [context.id] = self.store.put_contexts([context])
        execution = mlmd.Execution(type_id=self.execution_type, last_known_state=state)
        for name, value in (custom or {}).items():
            execution.custom_properties[name].string_value = value
        pairs = []
        for key, (uri, properties) in outputs.items():
            artifact = mlmd.Artifact(type_id=self.artifact_type, uri=uri,
                                     state=mlmd.Artifact.LIVE)
            for name, value in properties.items():
                field = "int_value" if isinstance(value, int) else "string_value"
                setattr(artifact.custom_properties[name], field, value)
            event = mlmd.Event(type=mlmd.Event.OUTPUT)
            event.path.steps.add().key = key
            pairs.append((artifact, event))
        self.store.put_execution(execution, pairs, [context])


def test_component_lines_show_status_seconds_and_key_figures(tmp_path):
    from models import export

    store = Store(tmp_path / "m.sqlite")
    summary = {"train": {"valid": 40, "quarantined": 2}, "eval": {"valid": 30, "quarantined": 1}}
    store.add("FaceExampleGen", mlmd.Execution.CACHED,
              {"examples": (str(tmp_path / "ex"), {"ingest_summary": json.dumps(summary)})})
    model_uri = tmp_path / "model"
    assets = model_uri / "Format-Serving" / "assets.extra"
    assets.mkdir(parents=True)
    (assets / export.MODEL_CONFIG_FILE).write_text(json.dumps({"recall_history": [
        {"epoch": 3, "overall": {"recall@1": 0.5}}, {"epoch": 4, "overall": {"recall@1": 0.625}}]}))
    store.add("Trainer", mlmd.Execution.COMPLETE, {"model": (str(model_uri), {})},
              custom={"custom_config": json.dumps({"epochs": 4, "loss": "ArcFace"})})
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    failed = ["north: Recall@1 0.300 < 0.500", "overall: drop 0.060 > 0.020"]
    (evaluation / "metrics.json").write_text(json.dumps({"failed_rules": failed}))
    store.add("RecallEvaluator", mlmd.Execution.COMPLETE, {"evaluation": (str(evaluation), {
        "blessed": 0, "recall_at_1": json.dumps({"overall": 0.42, "north": 0.3})})})
    store.add("Pusher", mlmd.Execution.COMPLETE,
              {"pushed_model": (str(tmp_path / "push"), {"pushed": 0})})
    store.add("StatisticsGen", mlmd.Execution.COMPLETE, {})

    def line(node):
        return progress.describe_node(store.path, node, 2.5)

    # 40 + 30 kept, 2 + 1 quarantined.
    assert re.fullmatch(r"FaceExampleGen +cached +2\.5s  70 records kept, 3 quarantined "
                        r"\(kept/quarantined: eval 30/1, train 40/2\)", line("FaceExampleGen"))
    assert re.fullmatch(r"Trainer +ran +2\.5s  4 epochs, validation Recall@1 0\.625",
                        line("Trainer"))
    assert line("RecallEvaluator").endswith(
        "Recall@1 0.420; not blessed: north: Recall@1 0.300 < 0.500; overall: drop 0.060 > 0.020")
    assert line("Pusher").endswith("not pushed (the model is not blessed)")
    assert re.fullmatch(r"StatisticsGen +ran +2\.5s", line("StatisticsGen"))


def test_blessed_and_pushed_lines(tmp_path):
    store = Store(tmp_path / "m.sqlite")
    store.add("RecallEvaluator", mlmd.Execution.COMPLETE, {"evaluation": (str(tmp_path), {
        "blessed": 1, "recall_at_1": json.dumps({"overall": 0.9})})})
    store.add("Pusher", mlmd.Execution.COMPLETE, {"pushed_model": (str(tmp_path / "p"), {
        "pushed": 1, "pushed_destination": "/serving/1700000000"})})
    assert progress.describe_node(store.path, "RecallEvaluator", 1).endswith(
        "Recall@1 0.900; blessed")
    assert progress.describe_node(store.path, "Pusher", 1).endswith(
        "pushed to /serving/1700000000")


def test_the_evaluator_line_names_what_is_not_gated_blessed_or_not(tmp_path):
    from core import json_safe

    advisories = [{"statistic": "fmr_differential", "scope": "overall", "value": 18.5,
                   "interval": [7.6, 31.0], "level": 4.0, "message": "..."},
                  {"statistic": "skewed_error_ratio", "scope": "overall", "value": math.inf,
                   "interval": [1.6, math.inf], "level": 1.5, "message": "..."}]
    for blessed in (1, 0):
        store = Store(tmp_path / f"m{blessed}.sqlite")
        evaluation = tmp_path / f"evaluation{blessed}"
        evaluation.mkdir()
        (evaluation / "metrics.json").write_text(json_safe.dumps(
            {"advisories": advisories, "failed_rules": [] if blessed else ["overall: drop"]}))
        store.add("RecallEvaluator", mlmd.Execution.COMPLETE, {"evaluation": (str(evaluation), {
            "blessed": blessed, "recall_at_1": json.dumps({"overall": 0.9})})})
        line = progress.describe_node(store.path, "RecallEvaluator", 1)
        verdict = "blessed" if blessed else "not blessed: overall: drop"
        assert line.endswith(f"Recall@1 0.900; {verdict}; not gated: FMR differential 18.5 [7.6, 31.0]; "
                             "skewed error ratio (FNMR) inf [1.6, inf]"), line


def test_reporter_turns_runner_records_into_lines_and_names_a_failed_component(tmp_path, capsys):
    store = Store(tmp_path / "m.sqlite")
    store.add("Transform", mlmd.Execution.CACHED, {})
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.INFO)

    def record(message, node):
        absl.handle(absl.makeRecord("absl", logging.INFO, __file__, 0, message, (node,), None))

    try:
        with pytest.raises(RuntimeError):
            with progress.Reporter(progress.Console(None), store.path):
                record("Component %s is running.", "Transform")
                record("Component %s is finished.", "Transform")
                record("Component %s is running.", "Trainer")
                raise RuntimeError("out of memory")
    finally:
        absl.setLevel(level)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["Transform", "cached"], ["Trainer", "FAILED"]]
    assert not any(isinstance(h, progress.ComponentProgress) for h in absl.handlers)


NOISE = re.compile(r"Traceback|Warning|WARNING|^[EWIF]\d{4} |^\S+ \S+: [EWIF] |"
                   r"Exception ignored|rendezvous", re.MULTILINE)
COMPONENTS = ("FaceExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
              "Transform", "Trainer")


def run_local(small_sample, work, *extra, env=None):
    argv = [sys.executable, os.path.join(REPO_ROOT, "local_runner.py"),
            "--data-root", small_sample, "--pipeline-root", str(work / "root"),
            "--metadata", str(work / "m.sqlite"), "--serving-dir", str(work / "serving"),
            "--last-stage", "train", "--image-size", "32", "--epochs", "2", "--batch-size", "8",
            "--embedding-size", "16", "--training", "checkpoint_every_steps=2", *extra,
            "--beam-args"]
    return subprocess.run(argv, cwd=str(work), env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow
@pytest.mark.pipeline
def test_default_output_is_progress_lines_and_the_log_holds_the_rest(small_sample, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = run_local(small_sample, tmp_path, env=env)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    out = quiet.stdout
    assert not NOISE.search(out), out
    assert quiet.stderr == ""
    [log] = os.listdir(tmp_path / "root" / "logs")
    log_path = str(tmp_path / "root" / "logs" / log)
    lines = out.splitlines()
    assert lines[0] == f"Log: {log_path}" and lines[-1] == f"Full log: {log_path}"
    for node in COMPONENTS:
        assert re.search(rf"^{node} +ran +\d+\.\ds", out, re.MULTILINE), (node, out)
    with open(os.path.join(small_sample, "train.json")) as f, \
            open(os.path.join(small_sample, "test.json")) as g:
        kept = len(json.load(f)) + len(json.load(g))
    assert f"{kept} records kept, 0 quarantined" in out
    epochs = re.findall(r"^  epoch (\d)/2: loss \d+\.\d{4}, validation Recall@1 (\d\.\d{3})$", out,
                        re.MULTILINE)
    assert [e for e, _ in epochs] == ["1", "2"], out
    # The Trainer's line reports the last epoch's Recall@1, read back from the exported model.
    assert re.search(rf"^Trainer .* 2 epochs, validation Recall@1 {epochs[-1][1]}$", out,
                     re.MULTILINE), out
    with open(log_path) as f:
        text = f.read()
    # The verbose output: TFX's INFO records, Keras's fit lines, TensorFlow's C++ log.
    assert "INFO:absl:Component Trainer is finished." in text
    assert "Epoch 2/2" in text
    assert re.search(r"^\S+ \S+: [EW] \S+\.cc:\d+\]", text, re.MULTILINE)

    # -v: everything on the terminal, nothing in a new log. The rerun takes its steps from the
    # cache (unless the code changed in between): each line says what the store recorded.
    verbose = run_local(small_sample, tmp_path, "-v")
    assert verbose.returncode == 0, verbose.stdout + verbose.stderr
    assert "INFO:absl:Component Trainer is finished." in verbose.stderr
    assert os.listdir(tmp_path / "root" / "logs") == [log]
    store = metadata.open_store(str(tmp_path / "m.sqlite"))
    for node in COMPONENTS:
        first, second = metadata.node_executions(store, node)[-2:]
        assert metadata.state_name(first) == "COMPLETE"
        status = {"CACHED": "cached", "COMPLETE": "ran"}[metadata.state_name(second)]
        assert re.search(rf"^{node} +{status} +\d+\.\ds", verbose.stdout, re.MULTILINE), (
            node, verbose.stdout)
