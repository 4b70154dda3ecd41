"""Runs of tests/distributed_check.py in subprocesses, shared by the distributed tests."""
import json
import os
import subprocess
import sys

import numpy as np

from tests.conftest import REPO_ROOT


def run_check(args, env=None, timeout=600):
    return subprocess.Popen([sys.executable, "-m", "tests.distributed_check", *args], cwd=REPO_ROOT,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def two_local_workers(tmp_path, loss, backbone="small_cnn"):
    """The final states of two MultiWorkerMirroredStrategy workers on 127.0.0.1 (asserted equal)."""
    import portpicker

    ports = [portpicker.pick_unused_port() for _ in range(2)]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        processes.append(run_check(["worker", "--loss", loss, "--backbone", backbone, "--out",
                                    str(tmp_path / f"w{index}.npz")], {"TF_CONFIG": tf_config}))
    for process in processes:
        _, stderr = process.communicate(timeout=1200)
        assert process.returncode == 0, stderr[-3000:]
    first, second = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert first.files == second.files
    for name in first.files:
        np.testing.assert_allclose(first[name], second[name], rtol=1e-6, atol=1e-7, err_msg=name)
    return first, second
