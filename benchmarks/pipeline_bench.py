"""The README's main command end to end, and what its run produced.

    demo        wall time of `python local_runner.py` cold (sample data generated, nothing cached)
                and of the identical rerun (everything cached but the evaluation)
    serving     p50/p99 latency of the pushed model's `embed_images` for 1 and for 32 images
    storage     raw (ExampleGen) vs transformed (Transform) Examples, bytes per image on disk
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo_runs(work: str, data_dir: Optional[str] = None,
              extra_args: Sequence[str] = ()) -> Dict[str, float]:
    """Wall times of the main command in a fresh work directory: cold, then the identical rerun.

    Without `data_dir` the sample data is generated first, as the main command does on a fresh
    clone, and its time counts towards the cold run.
    """
    times = {"generate": 0.0}
    if data_dir is None:
        from pipeline import sample_data

        data_dir = os.path.join(work, "data")
        start = time.perf_counter()
        sample_data.generate(data_dir, seed=0, progress=False)
        times["generate"] = time.perf_counter() - start
    command = [sys.executable, os.path.join(REPO, "local_runner.py"), "--data-root", data_dir,
               "--pipeline-root", os.path.join(work, "root"),
               "--metadata", os.path.join(work, "metadata.sqlite"),
               "--serving-dir", os.path.join(work, "serving"), *extra_args]
    for name in ("cold", "cached"):
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if result.returncode:
            raise RuntimeError(result.stderr[-3000:])
        times[name] = time.perf_counter() - start
    times["cold"] += times["generate"]
    times["data_dir"] = data_dir
    return times


def _latest(path_glob: str) -> str:
    paths = sorted(glob.glob(path_glob), key=lambda p: int(os.path.basename(p)))
    if not paths:
        raise FileNotFoundError(path_glob)
    return paths[-1]


def serving_latency(serving_dir: str, data_dir: str, calls: int = 200) -> List[Dict]:
    import tensorflow as tf

    version = sorted(os.listdir(serving_dir))[-1]
    embed = tf.saved_model.load(os.path.join(serving_dir, version)).signatures["embed_images"]
    with open(os.path.join(data_dir, "test.json")) as f:
        listing = sorted(json.load(f).items())[:32]
    images = []
    for key, _ in listing:
        with open(os.path.join(data_dir, "images", key), "rb") as f:
            images.append(f.read())
    rows = []
    for batch in (1, 32):
        inputs = {"image_bytes": tf.constant(images[:batch])}
        for name in ("x1", "y1", "x2", "y2"):
            inputs[name] = tf.constant([box[name] for _, box in listing[:batch]], tf.int64)
        for _ in range(10):
            embed(**inputs)                                  # warm-up: tracing, allocation
        latencies = []
        for _ in range(calls):
            start = time.perf_counter()
            embed(**inputs)["embedding"].numpy()
            latencies.append((time.perf_counter() - start) * 1000)
        rows.append({"batch": batch, "p50_ms": float(np.percentile(latencies, 50)),
                     "p99_ms": float(np.percentile(latencies, 99)),
                     "images_per_s": batch * 1000 / float(np.median(latencies))})
    return rows


def _bytes_and_count(split_dir: str):
    import tensorflow as tf

    files = glob.glob(os.path.join(split_dir, "*"))
    size = sum(os.path.getsize(f) for f in files)
    count = sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))
    return size, count


def storage(pipeline_root: str) -> List[Dict]:
    raw_uri = _latest(os.path.join(pipeline_root, "FaceExampleGen", "examples", "*"))
    transformed_uri = _latest(os.path.join(pipeline_root, "Transform", "transformed_examples",
                                           "*"))
    rows = []
    for name, uri in (("raw Examples (ExampleGen: JPEG bytes + box)", raw_uri),
                      ("transformed Examples (Transform: uint8 crop)", transformed_uri)):
        size, count = _bytes_and_count(os.path.join(uri, "Split-train"))
        rows.append({"case": name, "images": count, "bytes_per_image": size / count})
    rows[1]["ratio"] = rows[1]["bytes_per_image"] / rows[0]["bytes_per_image"]
    rows[0]["ratio"] = 1.0
    return rows
