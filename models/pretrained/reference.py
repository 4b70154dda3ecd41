"""The face-api package's own JavaScript, run in Node on given tensors: the parity reference.

Runs tests/js/face_api_reference.js (which loads the cached package's `dist/face-api.node-wasm.js`
on TensorFlow.js's CPU backend and the package's model files, offline) on float32 tensors handed
over as raw files, and returns what the package computes: `computeFaceDescriptor` descriptors and
`detectLandmarks` positions. Needs `fetch.fetch(js_runtime=True)` to have run.

With `reuse=True` a result is kept under `<cache>/reference/`, keyed by the sha256 of the script,
the package version, the job and the tensor's bytes, so a rerun on the same inputs is instant (the
CPU backend takes about a second per descriptor). Timings (`seconds`) are only meaningful with
`reuse=False`.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from typing import List, Optional, Tuple

import numpy as np

from models.pretrained import fetch

SCRIPT = os.path.join(fetch.REPO_ROOT, "tests", "js", "face_api_reference.js")


def _key(kind: str, images: np.ndarray, batch: bool) -> str:
    digest = hashlib.sha256()
    with open(SCRIPT, "rb") as f:
        digest.update(f.read())
    digest.update(json.dumps([fetch.VERSION, fetch.JS_RUNTIME, kind, list(images.shape), batch]).encode())
    digest.update(np.ascontiguousarray(images, dtype="<f4").tobytes())
    return digest.hexdigest()


def run(kind: str, images: np.ndarray, batch: bool = False, reuse: bool = True,
        cache: Optional[str] = None, timeout: float = 1800) -> dict:
    """The package's result for `images` (float32 [n, h, w, 3], RGB 0..255).

    kind "descriptor" -> {"descriptors": [n, 128], "seconds"}; "landmarks" -> {"positions":
    [n, 68, 2] in pixels of each input, "seconds"}. `batch` hands the n tensors to the package in
    one call. Raises PretrainedUnavailable when Node, the package or its runtime is missing.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [n, height, width, 3], got shape {list(images.shape)}")
    if not os.path.isfile(SCRIPT):
        raise fetch.PretrainedUnavailable(f"{SCRIPT} is missing: the JS reference ships with the "
                                          "repository's tests, not with the library")
    cache = os.path.abspath(cache or fetch.cache_dir())
    stored = os.path.join(cache, "reference", _key(kind, images, batch) + ".json")
    if reuse and os.path.isfile(stored):
        with open(stored) as f:
            return json.load(f)
    result = run_jobs([(kind, images, batch)], cache, timeout)[0]
    if reuse:
        os.makedirs(os.path.dirname(stored), exist_ok=True)
        partial = stored + ".tmp"
        with open(partial, "w") as f:
            json.dump(result, f)
        os.replace(partial, stored)
    return result


def run_jobs(jobs: List[Tuple[str, np.ndarray, bool]], cache: Optional[str] = None,
             timeout: float = 1800) -> List[dict]:
    """Runs (kind, images, batch) jobs in one Node process, in order (so a first job can warm the
    backend up for the timing of the next ones); nothing is reused. Results as `run` returns them."""
    if shutil.which("node") is None:
        raise fetch.PretrainedUnavailable(fetch.tools_available() or "node not found on PATH")
    package = fetch.package_dir(cache)
    if not os.path.isfile(SCRIPT):
        raise fetch.PretrainedUnavailable(f"{SCRIPT} is missing: the JS reference ships with the "
                                          "repository's tests, not with the library")
    with tempfile.TemporaryDirectory(prefix="face-api-ref-") as work:
        requests = []
        for i, (kind, images, batch) in enumerate(jobs):
            images = np.ascontiguousarray(images, dtype="<f4")
            tensor = os.path.join(work, f"input{i}.f32")
            images.tofile(tensor)
            requests.append({"kind": kind, "tensor": tensor, "shape": list(images.shape), "batch": batch})
        return _node(package, requests, work, timeout)


def _node(package: str, requests: List[dict], work: str, timeout: float) -> List[dict]:
    """Runs the script on `requests` (tensor files already in `work`) in one Node process."""
    request = os.path.join(work, "request.json")
    with open(request, "w") as f:
        json.dump({"package_dir": package, "jobs": requests}, f)
    done = subprocess.run(["node", SCRIPT, request], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise fetch.PretrainedUnavailable(f"node {SCRIPT} failed (exit {done.returncode}): "
                                          f"{done.stderr.strip()[-2000:]} (has `python -m "
                                          "tools.fetch_face_api --js-runtime` run?)")
    output = json.loads(done.stdout)
    return [dict(result, tfjs_backend=output["tfjs_backend"]) for result in output["results"]]


def align(photos: List[np.ndarray], boxes, refine_passes: int = 1, reuse: bool = True,
          cache: Optional[str] = None, timeout: float = 3600) -> dict:
    """face-api's own alignment of each photo (float32 [h, w, 3], RGB 0..255, sizes may differ)
    around its face box (x1, y1, x2, y2), as tests/js/face_api_reference.js's "align" job does it
    (landmarks searched again `refine_passes` times in face-api's box of the previous ones).

    -> {"landmarks": [n, 68, 2] photo pixels, "boxes": [n, 4] aligned (x, y, w, h), "crops":
    float32 [n, 150, 150, 3] (the tensor computeFaceDescriptor feeds the network), "descriptors":
    [n, 128], "seconds"}. Cached like `run` under `<cache>/reference/`.
    """
    photos = [np.ascontiguousarray(p, dtype="<f4") for p in photos]
    boxes = [[int(v) for v in box] for box in boxes]
    if len(photos) != len(boxes) or any(p.ndim != 3 or p.shape[-1] != 3 for p in photos):
        raise ValueError("align needs one [h, w, 3] photo per box")
    cache = os.path.abspath(cache or fetch.cache_dir())
    digest = hashlib.sha256()
    with open(SCRIPT, "rb") as f:
        digest.update(f.read())
    digest.update(json.dumps([fetch.VERSION, fetch.JS_RUNTIME, "align", boxes, refine_passes,
                              [list(p.shape) for p in photos]]).encode())
    for p in photos:
        digest.update(p.tobytes())
    stored = os.path.join(cache, "reference", digest.hexdigest() + ".json")
    if reuse and os.path.isfile(stored):
        with open(stored) as f:
            result = json.load(f)
    else:
        if shutil.which("node") is None:
            raise fetch.PretrainedUnavailable(fetch.tools_available() or "node not found on PATH")
        package = fetch.package_dir(cache)
        with tempfile.TemporaryDirectory(prefix="face-api-ref-") as work:
            tensor = os.path.join(work, "photos.f32")
            with open(tensor, "wb") as f:
                for p in photos:
                    f.write(p.tobytes())
            result = _node(package, [{"kind": "align", "tensor": tensor, "boxes": boxes,
                                      "refine_passes": int(refine_passes),
                                      "shapes": [list(p.shape) for p in photos]}], work, timeout)[0]
        if reuse:
            os.makedirs(os.path.dirname(stored), exist_ok=True)
            with open(stored + ".tmp", "w") as f:
                json.dump(result, f)
            os.replace(stored + ".tmp", stored)
    crops = [np.frombuffer(base64.b64decode(c), dtype="<f4").reshape(150, 150, 3) for c in result["crops"]]
    return {"landmarks": np.asarray(result["landmarks"], np.float64),
            "boxes": np.asarray(result["boxes"], np.int64), "crops": np.stack(crops),
            "descriptors": np.asarray(result["descriptors"], np.float64), "seconds": result["seconds"]}


def descriptors(images: np.ndarray, **kwargs) -> Tuple[np.ndarray, float]:
    """(face-api's descriptors [n, 128], seconds) for 150 x 150 crops."""
    result = run("descriptor", images, **kwargs)
    return np.asarray(result["descriptors"], dtype=np.float64), float(result["seconds"])


def landmarks(images: np.ndarray, **kwargs) -> Tuple[np.ndarray, float]:
    """(face-api's landmarks [n, 68, 2] in pixels of each crop, seconds) for 112 x 112 crops."""
    result = run("landmarks", images, **kwargs)
    positions: List = result["positions"]
    return np.asarray(positions, dtype=np.float64), float(result["seconds"])
