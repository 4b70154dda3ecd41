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


def test_bootstrap_installs_once_and_again_only_when_its_inputs_change(tmp_path):
    """scripts/bootstrap.sh with a stand-in venv interpreter that records its calls."""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(os.path.join(REPO_ROOT, "scripts"), repo / "scripts")
    for name in ("constraints.txt", "setup.py"):
        shutil.copy(os.path.join(REPO_ROOT, name), repo / name)
    venv_python = repo / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    calls = tmp_path / "calls.log"
    venv_python.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexit 0\n')
    venv_python.chmod(0o755)

    def bootstrap():
        result = subprocess.run(["bash", str(repo / "scripts" / "bootstrap.sh")],
                                capture_output=True, text=True, timeout=60,
                                env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                     "PYTHON": sys.executable})
        assert result.returncode == 0, result.stderr
        installs = calls.read_text().count("-m pip install") if calls.exists() else 0
        calls.unlink(missing_ok=True)
        return installs

    assert bootstrap() == 2                   # pip itself, then the project with constraints
    assert bootstrap() == 0                   # nothing changed: no install
    with open(repo / "constraints.txt", "a") as f:
        f.write("\n# a changed pin\n")
    assert bootstrap() == 2
    assert bootstrap() == 0
