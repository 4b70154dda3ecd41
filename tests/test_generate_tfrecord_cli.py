"""The original's CLI, end to end in a subprocess, on the shared Beam transform."""
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT
from tests.pipeline_helpers import feature_value

CLI = os.path.join(REPO_ROOT, "generate_tfrecord", "main.py")


def run_cli(*args):
    return subprocess.run([sys.executable, CLI, *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_cli_writes_examples_quarantine_and_reports_counts(small_sample, tmp_path):
    with open(os.path.join(small_sample, "test.json")) as f:
        records = json.load(f)
    keys = sorted(records)
    records[keys[0]]["x1"] = records[keys[0]]["x2"]                 # bad_box
    records["nowhere/x/0.jpg"] = dict(records[keys[1]])              # missing_file
    list_path = tmp_path / "list.json"
    list_path.write_text(json.dumps(records))
    output = tmp_path / "out.tfrecord"

    result = run_cli("--root_path", os.path.join(small_sample, "images"), "--json_file",
                     str(list_path), "--output", str(output), "--max_bad_fraction", "0.1")
    assert result.returncode == 0, result.stderr
    assert "input=33 valid=31 quarantined=2" in result.stdout
    labels = sorted({records[k]["label"] for k in keys[1:]})
    assert f"labels {labels[0]}..{labels[-1]}" in result.stdout

    examples = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(output))]
    paths = {feature_value(e, "path").decode() for e in examples}
    assert paths == set(keys[1:])
    with open(str(output) + ".quarantine.jsonl") as f:
        quarantine = {q["key"]: q["reason"] for q in map(json.loads, f)}
    assert quarantine == {keys[0]: "bad_box", "nowhere/x/0.jpg": "missing_file"}

    # Over the limit: exit status 2 and the reasons on stderr; the quarantine is still written.
    result = run_cli("--root_path", os.path.join(small_sample, "images"), "--json_file",
                     str(list_path), "--output", str(output))
    assert result.returncode == 2
    assert "bad_box: 1" in result.stderr and "missing_file: 1" in result.stderr
    assert os.path.exists(str(output) + ".quarantine.jsonl")


def test_cli_accepts_json_lines_and_beam_args(small_sample, tmp_path):
    with open(os.path.join(small_sample, "train.json")) as f:
        records = json.load(f)
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text("".join(json.dumps({"path": k, **v}) + "\n" for k, v in records.items()))
    output = tmp_path / "o.tfrecord"
    result = run_cli("--root_path", os.path.join(small_sample, "images"), "--json_file", str(jsonl),
                     "--output", str(output), "--direct_num_workers=1")
    assert result.returncode == 0, result.stderr
    assert f"input={len(records)} valid={len(records)} quarantined=0" in result.stdout


def test_a_file_per_worker_holds_every_example_once(small_sample, tmp_path):
    with open(os.path.join(small_sample, "train.json")) as f:
        records = json.load(f)
    output = tmp_path / "o.tfrecord"
    result = run_cli("--root_path", os.path.join(small_sample, "images"), "--json_file",
                     os.path.join(small_sample, "train.json"), "--output", str(output),
                     "--num_shards=0", "--direct_num_workers=2",
                     "--direct_running_mode=multi_processing")
    assert result.returncode == 0, result.stderr
    assert f"examples: {output}-*" in result.stdout
    shards = sorted(tf.io.gfile.glob(f"{output}-*"))
    assert len(shards) >= 1 and not output.exists()
    assert not [name for name in os.listdir(tmp_path) if ".staging-" in name]
    paths = [feature_value(tf.train.Example.FromString(r.numpy()), "path").decode()
             for r in tf.data.TFRecordDataset(shards)]
    assert sorted(paths) == sorted(records)


def test_runs_on_the_fn_api_runner_unless_a_runner_is_named():
    import importlib.util

    from pipeline import beam_options

    assert beam_options.with_default_runner(["--direct_num_workers=2"]) == [
        "--runner=FnApiRunner", "--direct_num_workers=2"]
    assert beam_options.with_default_runner(["--runner=DataflowRunner"]) == ["--runner=DataflowRunner"]
    assert beam_options.with_default_runner(["--runner", "PrismRunner"]) == ["--runner", "PrismRunner"]
    spec = importlib.util.spec_from_file_location("generate_tfrecord_main", CLI)
    cli_main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli_main)
    assert cli_main.run(["--root_path", "r", "--json_file", "j", "--output", "o",
                         "--num_shards=-1"]) == 1


def test_dataflow_workers_of_the_converter_get_the_checkouts_setup_file(tmp_path, monkeypatch):
    """What the CLI hands Beam for a Dataflow run (recorded; nothing is submitted)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate_tfrecord_main", CLI)
    cli_main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli_main)
    seen = []

    class Recorded(Exception):
        pass

    def recording_options(args):
        seen.append(list(args))
        raise Recorded

    monkeypatch.setattr(cli_main, "PipelineOptions", recording_options)
    dataflow = ["--runner=DataflowRunner", "--project=acme"]
    for extra, added in (([], [f"--setup_file={os.path.join(REPO_ROOT, 'setup.py')}"]),
                         (["--extra_package=dist/ffem.whl"], [])):
        with pytest.raises(Recorded):
            cli_main.run(["--root_path", "r", "--json_file", "j", "--output",
                          str(tmp_path / "o"), *dataflow, *extra])
        assert seen.pop() == [*dataflow, *extra, *added]
