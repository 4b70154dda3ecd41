"""scripts/find_python.sh: finds Python 3.10 or fails with a clear message."""
import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

SCRIPT = os.path.join(REPO_ROOT, "scripts", "find_python.sh")


def find(env):
    clean = {"PATH": "/usr/bin:/bin", "HOME": env.pop("HOME", "/nonexistent")}
    return subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env={**clean, **env},
                          timeout=60)


def test_explicit_python_must_be_3_10(tmp_path):
    result = find({"PYTHON": "/bin/false", "HOME": str(tmp_path)})
    assert result.returncode == 1 and "PYTHON=/bin/false is not a working Python 3.10" in \
        result.stderr
    result = find({"PYTHON": sys.executable, "HOME": str(tmp_path)})   # the venv's 3.10
    assert result.returncode == 0 and result.stdout.strip()


def test_found_under_a_pyenv_root(tmp_path):
    fake = tmp_path / "pyenv" / "versions" / "3.10.99" / "bin"
    fake.mkdir(parents=True)
    os.symlink(sys.executable, fake / "python3.10")
    result = find({"PYENV_ROOT": str(tmp_path / "pyenv"), "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(fake / "python3.10")


def test_clear_error_when_no_3_10_exists(tmp_path):
    result = find({"PYENV_ROOT": str(tmp_path / "none"), "HOME": str(tmp_path)})
    assert result.returncode == 1
    assert "no Python 3.10 found" in result.stderr and "PYTHON=" in result.stderr
