"""The pinned npm package that carries the pretrained face-api networks, and its local cache.

`@vladmandic/face-api` 1.7.15 (MIT) ships the networks in TensorFlow.js's weights format under
`model/`. `fetch()` gets it with `npm pack` (the npm registry, through the user's npm configuration),
refuses a tarball whose sha256 differs from the pinned one, and unpacks it into the cache folder
(`.cache/face-api/` at the repository root, or `$FFEM_FACE_API_CACHE`). `fetch(js_runtime=True)`
also installs the pinned TensorFlow.js runtime the package's own JavaScript needs, which only the
parity tests and the benchmark use.

Nothing here runs at model-building time: `package_dir()` only looks in the cache and, when the
package is missing, raises `PretrainedUnavailable` saying how to get it. The fetch runs from
`make pretrained` (`python -m tools.fetch_face_api`) or from the test fixture that needs it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from typing import Optional

PACKAGE = "@vladmandic/face-api"
VERSION = "1.7.15"
TARBALL = "vladmandic-face-api-1.7.15.tgz"
TARBALL_SHA256 = "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031"
# What dist/face-api.node-wasm.js requires; its CPU backend comes with @tensorflow/tfjs.
JS_RUNTIME = {"@tensorflow/tfjs": "4.22.0", "@tensorflow/tfjs-backend-wasm": "4.22.0"}

CACHE_ENV = "FFEM_FACE_API_CACHE"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOW_TO_GET = ("run `make pretrained` (or `python -m tools.fetch_face_api`); it needs Node.js and "
              "npm, and fetches " + f"{PACKAGE}@{VERSION} from the npm registry into the cache folder "
              f"(set ${CACHE_ENV} to choose another)")


class PretrainedUnavailable(RuntimeError):
    """The pretrained package is not in the cache, or cannot be fetched on this machine."""


def cache_dir() -> str:
    return os.path.abspath(os.environ.get(CACHE_ENV) or os.path.join(REPO_ROOT, ".cache", "face-api"))


def _package_root(cache: Optional[str] = None) -> str:
    return os.path.join(cache or cache_dir(), f"face-api-{VERSION}", "package")


def package_dir(cache: Optional[str] = None) -> str:
    """The unpacked, checksum-verified package (holds `model/`, `dist/`, `LICENSE`); never fetches."""
    root = _package_root(cache)
    if not os.path.isfile(os.path.join(root, "package.json")):
        raise PretrainedUnavailable(f"{PACKAGE}@{VERSION} is not in {os.path.dirname(root)}: {HOW_TO_GET}")
    return root


def model_dir(cache: Optional[str] = None) -> str:
    return os.path.join(package_dir(cache), "model")


def tools_available() -> Optional[str]:
    """None when `node` and `npm` are on PATH, else the reason they are needed."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        return (f"{' and '.join(missing)} not found on PATH: the pretrained face-api networks come "
                f"from the npm registry ({PACKAGE}@{VERSION}); install Node.js (which brings npm)")
    return None


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(command, cwd: str) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise PretrainedUnavailable(f"`{' '.join(command)}` failed (exit {done.returncode}): "
                                    f"{done.stderr.strip()[-2000:]}")


def _verified_tarball(cache: str) -> str:
    """The pinned tarball in `cache`, fetched with `npm pack` when absent; a mismatch is removed."""
    tarball = os.path.join(cache, TARBALL)
    if not os.path.isfile(tarball):
        reason = tools_available()
        if reason:
            raise PretrainedUnavailable(reason)
        _run(["npm", "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", cache, "--silent"], cwd=cache)
        if not os.path.isfile(tarball):
            raise PretrainedUnavailable(f"`npm pack {PACKAGE}@{VERSION}` did not write {tarball}")
    actual = sha256_of(tarball)
    if actual != TARBALL_SHA256:
        os.remove(tarball)
        raise PretrainedUnavailable(f"{tarball}: sha256 {actual} is not the pinned {TARBALL_SHA256}; "
                                    "removed it, refusing to use it")
    return tarball


def _unpack(tarball: str, destination: str) -> None:
    """Unpacks into a temporary sibling, then renames: a half-written package is never seen."""
    parent = os.path.dirname(destination)
    staging = tempfile.mkdtemp(prefix=".unpack-", dir=parent)
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive.getmembers():
                if not (member.isfile() or member.isdir()) or os.path.isabs(member.name) or \
                        ".." in member.name.split("/"):
                    raise PretrainedUnavailable(f"{tarball}: unexpected member {member.name!r}")
            archive.extractall(staging)
        try:
            os.replace(os.path.join(staging, "package"), destination)
        except OSError:
            if not os.path.isfile(os.path.join(destination, "package.json")):
                raise
            # another process unpacked the same verified tarball first
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _runtime_installed(cache: str) -> bool:
    for name, version in JS_RUNTIME.items():
        manifest = os.path.join(cache, "node_modules", *name.split("/"), "package.json")
        try:
            with open(manifest) as f:
                if json.load(f).get("version") != version:
                    return False
        except (OSError, ValueError):
            return False
    return True


def fetch(cache: Optional[str] = None, js_runtime: bool = False) -> str:
    """Makes the pinned package (and, with `js_runtime`, its JS runtime) present in the cache.

    Idempotent: a verified cache is reused without touching the network. Returns `package_dir()`.
    Raises PretrainedUnavailable naming the reason (no Node/npm, npm failure, checksum mismatch).
    """
    cache = os.path.abspath(cache or cache_dir())
    os.makedirs(cache, exist_ok=True)
    root = _package_root(cache)
    if not os.path.isfile(os.path.join(root, "package.json")):
        tarball = _verified_tarball(cache)
        os.makedirs(os.path.dirname(root), exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        _unpack(tarball, root)
    if js_runtime and not _runtime_installed(cache):
        reason = tools_available()
        if reason:
            raise PretrainedUnavailable(reason)
        _run(["npm", "install", "--no-save", "--ignore-scripts", "--no-audit", "--no-fund",
              "--prefix", cache, *[f"{name}@{version}" for name, version in JS_RUNTIME.items()]],
             cwd=cache)
        if not _runtime_installed(cache):
            raise PretrainedUnavailable(f"npm install did not leave {JS_RUNTIME} in {cache}/node_modules")
    return package_dir(cache)
