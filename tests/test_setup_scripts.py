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


def _chromium_script(tmp_path, uid, chromium, sudo=False):
    """scripts/chromium.sh with stand-ins for id, apt-get, sudo and chromium on its PATH; returns
    (result, the apt-get calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "calls"
    stubs = {"id": f"echo {uid}", "apt-get": f'echo "apt-get $*" >> {log}',
             "sudo": 'if [ "$1" = -n ] && [ "$2" = true ]; then exit 0; fi; shift; "$@"'
             if sudo else "exit 1"}
    if chromium:
        stubs["chromium"] = "exit 0"
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    if not chromium:
        # apt-get "installs" chromium: later lookups find it.
        (bin_dir / "apt-get").write_text(
            f'#!/bin/bash\necho "apt-get $*" >> {log}\n'
            f'if [ "$1" = install ]; then printf "#!/bin/bash\\n" > {bin_dir}/chromium; '
            f'/bin/chmod +x {bin_dir}/chromium; fi\n')
    result = subprocess.run(["/bin/bash", os.path.join(REPO_ROOT, "scripts", "chromium.sh")],
                            capture_output=True, text=True, timeout=60,
                            env={"PATH": str(bin_dir)})
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


def test_chromium_setup_installs_as_root_only_when_missing_and_never_fails(tmp_path):
    result, calls = _chromium_script(tmp_path / "present", 0, chromium=True)
    assert result.returncode == 0 and calls == []                 # present: nothing to do
    result, calls = _chromium_script(tmp_path / "root", 0, chromium=False)
    assert result.returncode == 0, result.stderr
    assert [c.split()[:2] for c in calls] == [["apt-get", "update"], ["apt-get", "install"]]
    assert calls[1].split()[-1] == "chromium" and "installed" in result.stderr
    result, calls = _chromium_script(tmp_path / "sudo", 1000, chromium=False, sudo=True)
    assert result.returncode == 0 and len(calls) == 2              # through passwordless sudo
    result, calls = _chromium_script(tmp_path / "user", 1000, chromium=False)
    assert result.returncode == 0 and calls == [] and "will skip" in result.stderr
