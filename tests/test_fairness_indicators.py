"""TensorBoard's Fairness Indicators plugin shows the per-group 1:1 rates of a finished evaluation: a
real TensorBoard server on 127.0.0.1, read back through the plugin's HTTP data routes."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from components.recall_evaluator import tfma_results
from tests.test_tfma_results import metrics_dict

pytest.importorskip("tensorboard_plugin_fairness_indicators")
STARTUP_SECONDS = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read().decode())


@pytest.fixture
def tensorboard(tmp_path):
    evaluations = tmp_path / "evaluation"
    evaluation = str(evaluations / "7")
    tfma_results.write(metrics_dict(), evaluation, candidate_uri="/m/1", baseline_uri="/m/0")
    tfma_results.write_fairness_summary(evaluation)
    port = free_port()
    # --load_fast=false: the plugin reads summaries through TensorBoard's event multiplexer.
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(evaluations), "--host",
         "127.0.0.1", "--port", str(port), "--load_fast=false", "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                plugins = get_json(base + "/data/plugins_listing")
                if plugins.get("fairness_indicators", {}).get("enabled"):
                    break
            except OSError:
                pass
            assert process.poll() is None, "tensorboard exited"
            assert time.monotonic() < deadline, "tensorboard did not serve the plugin in time"
            time.sleep(1)
        yield base, evaluation
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_plugin_serves_every_group_slice_with_fnmr_and_fmr_at_the_gate_threshold(tensorboard):
    base, evaluation = tensorboard
    run = "7/" + tfma_results.FAIRNESS_LOG_DIR
    slices = get_json(base + "/data/plugin/fairness_indicators/get_evaluation_result?"
                      + urllib.parse.urlencode({"run": run}))
    by_slice = {entry["slice"]: entry["metrics"] for entry in slices}
    assert set(by_slice) == {"Overall", "group:east", "group:west"}
    fnr, fpr = tfma_results.fairness_names(0.4123)
    expected = metrics_dict()["verification"]
    for group in ("east", "west"):
        rates = by_slice[f"group:{group}"]
        assert rates[fnr]["boundedValue"]["value"] == expected[group]["fnmr"]
        assert rates[fpr]["boundedValue"]["value"] == expected[group]["fmr"]
        assert [rates[fnr]["boundedValue"]["lowerBound"], rates[fnr]["boundedValue"]["upperBound"]] \
            == expected[group]["fnmr_ci"]
    # The same through the route that takes the results' path instead of a run.
    direct = get_json(base + "/data/plugin/fairness_indicators/"
                      "get_evaluation_result_from_remote_path?" + urllib.parse.urlencode(
                          {"evaluation_output_path": os.path.join(evaluation,
                                                                  tfma_results.METRICS_FILE)}))
    assert {entry["slice"] for entry in direct} == set(by_slice)
