"""An environment without the checkout, as a Beam worker on Dataflow has: the project's wheel
installed into a fresh virtual environment, and Beam worker pools started from it.

The fresh environment is made from the same base interpreter and borrows this environment's
third-party packages (TensorFlow, Beam, TFX: gigabytes not worth reinstalling) through a .pth file
whose one line is this environment's site-packages directory. Python adds such a plain path line
to sys.path without processing the .pth files inside it, so the editable install's finder (which
maps `core`, `components`, ... to the checkout) is not active there: `import core` fails until the
wheel is installed (`fresh_environment` checks it).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from typing import Iterator, Sequence

from tests.conftest import REPO_ROOT

# Build artefacts and local state that are not sources (a stale build/lib would leak into a wheel).
_NOT_SOURCES = shutil.ignore_patterns(".venv*", ".git", "build", "dist", "*.egg-info", "__pycache__",
                                      "*.pyc", "runs", ".cache", ".pytest_cache", "data")


def clean_copy(work_dir: str, drop: Sequence[str] = ()) -> str:
    """The checkout's sources copied to `work_dir`/source, without the relative paths in `drop`."""
    source = os.path.join(work_dir, "source")
    shutil.copytree(REPO_ROOT, source, ignore=_NOT_SOURCES)
    for path in drop:
        target = os.path.join(source, path)
        shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
    return source


def build_wheel(work_dir: str, drop: Sequence[str] = ()) -> str:
    """The wheel `pip wheel` builds from a clean copy of the checkout (without the relative paths
    in `drop`), offline and without build isolation; returns its path."""
    source = clean_copy(work_dir, drop)
    dist = os.path.join(work_dir, "dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "--disable-pip-version-check", "-q", "-w", dist, source],
                   check=True, capture_output=True, timeout=300, cwd=work_dir)
    [wheel] = [os.path.join(dist, name) for name in os.listdir(dist) if name.endswith(".whl")]
    return wheel


@dataclasses.dataclass(frozen=True)
class Environment:
    root: str

    @property
    def python(self) -> str:
        return os.path.join(self.root, "bin", "python")

    @property
    def site_packages(self) -> str:
        return os.path.join(self.root, "lib", "python%d.%d" % sys.version_info[:2],
                            "site-packages")

    def env(self) -> dict:
        """Process environment: this environment's bin first on PATH (the pool starts its
        workers as `python`), no PYTHONPATH (it would name the checkout), no bytecode writes:
        the workers borrow this process's site-packages, and a worker writing a `.pyc` there
        while TFX copies its own installed package (the package it builds for a Beam step that
        names no dependency flag) makes that copy fail."""
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        env["PATH"] = os.path.join(self.root, "bin") + os.pathsep + os.environ.get("PATH", "")
        env["TF_USE_LEGACY_KERAS"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return env

    def run(self, code: str, cwd: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([self.python, "-c", code], cwd=cwd, env=self.env(), text=True,
                              capture_output=True, timeout=timeout)


def fresh_environment(root: str, wheel: str) -> Environment:
    """A virtual environment without the checkout, with `wheel` (or an sdist, built offline)
    installed (--no-deps: the third-party packages are borrowed, see the module docstring)."""
    base = os.path.realpath(sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", root], check=True, timeout=120)
    environment = Environment(root)
    borrowed = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    with open(os.path.join(environment.site_packages, "_borrowed_packages.pth"), "w") as f:
        f.write("".join(path + "\n" for path in borrowed))
    outside = os.path.dirname(root)
    before = environment.run("import core", cwd=outside)
    assert before.returncode != 0 and "No module named 'core'" in before.stderr, (
        "the fresh environment sees the checkout before the wheel is installed", before.stderr)
    subprocess.run([environment.python, "-m", "pip", "install", "--no-deps", "--no-index",
                    "--no-build-isolation", "--ignore-installed", "--disable-pip-version-check",
                    "-q", wheel],
                   check=True, capture_output=True, timeout=300, cwd=outside, env=environment.env())
    return environment


@dataclasses.dataclass(frozen=True)
class Pool:
    address: str
    pid: int
    log: str        # the pool's output: a line "Starting worker with command ..." per worker

    def workers_started(self) -> int:
        with open(self.log) as f:
            return f.read().count("Starting worker with command")

    def beam_args(self) -> list:
        """The portable runner in this process (embedded job server), its workers from the pool."""
        return ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
                f"--environment_config={self.address}"]


@contextlib.contextmanager
def worker_pool(environment: Environment, cwd: str, start_timeout: float = 120) -> Iterator[Pool]:
    """Beam's worker pool (worker_pool_main) started from `environment` in `cwd`, on a free port
    of 127.0.0.1; it and its workers (one process group) are killed on exit."""
    import portpicker

    port = portpicker.pick_unused_port()
    log_path = os.path.join(cwd, f"worker-pool-{port}.log")
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [environment.python, "-m", "apache_beam.runners.worker.worker_pool_main",
             f"--service_port={port}"], cwd=cwd, env=environment.env(), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    with open(log_path) as f:
                        raise RuntimeError(f"the worker pool did not start:\n{f.read()[-3000:]}")
                time.sleep(0.2)
        yield Pool(f"127.0.0.1:{port}", process.pid, log_path)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
