"""Killed runs: SIGKILL the local runner during ExampleGen and during the Trainer, then rerun.

The rerun must finish, reuse what was finished, resume the Trainer from its backup, and leave a
consistent metadata store: nothing RUNNING, the killed step's outputs ABANDONED (never LIVE, never
consumed downstream).
"""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from ml_metadata.proto import metadata_store_pb2

from tests.conftest import REPO_ROOT
from tests.pipeline_helpers import node_executions, open_store, output_artifacts, state_name
from tests.trainer_helpers import TINY_TRAINING, split_settings

pytestmark = pytest.mark.pipeline

# Runs local_runner.run(argv); with FFEM_TEST_SLOW_INGEST set, every record check sleeps first,
# so that ExampleGen is still running when the test kills the process.
RUNNER = """
import os, sys, time
if os.environ.get("FFEM_TEST_SLOW_INGEST"):
    from components.face_example_gen import beam_ingest
    original = beam_ingest.check_record
    def slow(*args, **kwargs):
        time.sleep(0.25)
        return original(*args, **kwargs)
    beam_ingest.check_record = slow
import local_runner
local_runner.run(sys.argv[1:])
"""


def runner_args(data, work, last_stage="push", epochs=6):
    model, training = split_settings({**TINY_TRAINING, "epochs": epochs, "checkpoint_every_steps": 2})
    return ["--data-root", data, "--image-size", "32", "--pipeline-root", str(work / "root"),
            "--metadata", str(work / "m.sqlite"), "--serving-dir", str(work / "serving"),
            "--min-recall", "0", "--last-stage", last_stage,
            "--model", *[f"{k}={json.dumps(v)}" for k, v in model.items()],
            "--training", *[f"{k}={json.dumps(v)}" for k, v in training.items()], "--beam-args"]


def start(args, slow_ingest=False):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if slow_ingest:
        env["FFEM_TEST_SLOW_INGEST"] = "1"
    return subprocess.Popen([sys.executable, "-c", RUNNER, *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def kill_when(process, condition, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise AssertionError(f"the run ended before it could be killed:\n{stderr[-3000:]}")
        if condition():
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError("the kill condition never came true")


def finish(args):
    result = subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=900,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def assert_consistent(store):
    """Nothing left running; every LIVE artifact's files exist; no pending artifact remains."""
    for execution in store.get_executions():
        assert execution.last_known_state not in (metadata_store_pb2.Execution.RUNNING,
                                                  metadata_store_pb2.Execution.NEW), execution
    for artifact in store.get_artifacts():
        assert artifact.state != metadata_store_pb2.Artifact.PENDING, artifact
        if artifact.state == metadata_store_pb2.Artifact.LIVE and artifact.uri:
            assert os.path.exists(artifact.uri), artifact.uri


def test_kill_during_example_gen_then_rerun(small_sample, tmp_path):
    args = runner_args(small_sample, tmp_path, last_stage="ingest")
    process = start(args, slow_ingest=True)
    kill_when(process, lambda: glob.glob(str(tmp_path / "root/FaceExampleGen/examples/*")))

    output = finish(args)
    assert "Recovered from an interrupted run" in output
    store = open_store(str(tmp_path / "m.sqlite"))
    killed, rerun = node_executions(store, "FaceExampleGen")
    assert state_name(killed) == "CANCELED" and state_name(rerun) == "COMPLETE"
    # The killed execution's output, if it was registered at all, is abandoned, never LIVE; the
    # directory it was writing is no LIVE artifact's.
    killed_dirs = set(glob.glob(str(tmp_path / "root/FaceExampleGen/examples/*")))
    [complete] = output_artifacts(store, rerun.id, "examples")
    for partial in output_artifacts(store, killed.id):
        assert partial.state == metadata_store_pb2.Artifact.ABANDONED
    live_uris = {a.uri for a in store.get_artifacts()
                 if a.state == metadata_store_pb2.Artifact.LIVE}
    assert len(killed_dirs - {complete.uri}) == 1 and not (killed_dirs - {complete.uri}) & live_uris
    assert complete.state == metadata_store_pb2.Artifact.LIVE
    summary = json.loads(complete.custom_properties["ingest_summary"].string_value)
    assert summary["train"]["valid"] == summary["train"]["input"] == 36
    # Downstream read the complete artifact, never the partial one.
    [statistics] = node_executions(store, "StatisticsGen")
    inputs = [e.artifact_id for e in store.get_events_by_execution_ids([statistics.id])
              if e.type == metadata_store_pb2.Event.INPUT]
    assert inputs == [complete.id]
    assert_consistent(store)


@pytest.mark.slow
def test_kill_during_training_then_rerun_resumes(small_sample, tmp_path):
    args = runner_args(small_sample, tmp_path)
    process = start(args)
    # A backup exists once two optimizer steps ran: kill right then.
    kill_when(process, lambda: glob.glob(str(tmp_path / "root/Trainer/resume/*/*/checkpoint")))

    finish(args)
    store = open_store(str(tmp_path / "m.sqlite"))
    for node in ("FaceExampleGen", "StatisticsGen", "Transform"):
        states = [state_name(e) for e in node_executions(store, node)]
        assert states == ["COMPLETE", "CACHED"], (node, states)
    killed, rerun = node_executions(store, "Trainer")
    assert state_name(killed) == "CANCELED" and state_name(rerun) == "COMPLETE"
    [model] = output_artifacts(store, rerun.id, "model")
    with open(os.path.join(model.uri, "Format-Serving", "assets.extra",
                           "ffem_model_config.json")) as f:
        summary = json.load(f)
    assert summary["total_steps"] == 24
    assert 2 <= summary["resumed_from_step"] < 24       # fewer steps ran than from scratch
    for artifact in output_artifacts(store, killed.id):      # if registered: abandoned
        assert artifact.state == metadata_store_pb2.Artifact.ABANDONED
    assert [state_name(e) for e in node_executions(store, "Pusher")] == ["COMPLETE"]
    assert_consistent(store)
