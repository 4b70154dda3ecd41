"""`make bench` at tiny sizes: every stage runs and lands in the results table."""
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.pipeline


@pytest.mark.slow
def test_benchmark_command_runs_every_stage(tmp_path):
    out = tmp_path / "results.md"
    result = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    for heading in ("## Recall evaluation", "## Ingest", "## The main command",
                    "## Training throughput", "## Serving", "## Storage",
                    "## Coverage of the gate's intervals"):
        assert heading in text
    assert "Machine: " in text and "Date: " in text
    for row in ("| (b) checking loop", "| CLI, Beam 2 workers", "| run_fn step, augmentation off",
                "| 32 image(s)", "| transformed Examples"):
        line = next(x for x in text.splitlines() if x.startswith(row))
        assert any(ch.isdigit() for ch in line), line
