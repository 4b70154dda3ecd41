"""Descriptors per second: the Keras port of face-api's FaceRecognitionNet against the package's own
JavaScript (TensorFlow.js 4.22, pure-JS CPU backend, in Node), one image and a batch of 32.

    python -m benchmarks.pretrained_bench            # one image (median of 5 calls) and 32 images
    python -m benchmarks.pretrained_bench --quick    # 2 calls, a batch of 2 (smoke test)

Both get the same float32 [n, 150, 150, 3] tensors (uniform noise 0..255: the time does not depend
on the content). Keras: the model as a tf.function (traced and run once before timing), called on
one image `repeats` times (median) and on the whole batch once. JavaScript: one Node process; a
first descriptor warms the backend up, then `repeats` single-image calls (their mean) and one call
with the batch (face-api's array input); Node's start and the weight loading are not timed. Needs
the cached package (`make pretrained`); the JS rows need Node and say why when they cannot run.
Prints a Markdown table; writes nothing.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Dict, List

import numpy as np

from models.pretrained import fetch, reference
from models.pretrained.recognition_net import INPUT_SIZE, face_recognition_net


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, INPUT_SIZE, INPUT_SIZE, 3)).astype(np.float32)


def keras_rates(batch: int, repeats: int) -> Dict[int, float]:
    """{batch size: descriptors per second} of the Keras port."""
    import tensorflow as tf

    model = face_recognition_net()
    # autograph=False: the model's call needs no conversion, and converting Keras internals would
    # only slow the (untimed) trace down.
    embed = tf.function(model, autograph=False)
    images = _images(batch)
    one = tf.constant(images[:1])
    many = tf.constant(images)
    embed(one).numpy()
    embed(many).numpy()
    singles = []
    for _ in range(repeats):
        start = time.perf_counter()
        embed(one).numpy()
        singles.append(time.perf_counter() - start)
    start = time.perf_counter()
    embed(many).numpy()
    return {1: 1 / statistics.median(singles), batch: batch / (time.perf_counter() - start)}


def js_rates(batch: int, repeats: int) -> Dict[int, float]:
    """{batch size: descriptors per second} of the package's JavaScript."""
    images = _images(batch)
    _, singles, together = reference.run_jobs([("descriptor", images[:1], False),
                                               ("descriptor", images[:repeats], False),
                                               ("descriptor", images, True)])
    return {1: repeats / singles["seconds"], batch: batch / together["seconds"]}


def run(quick: bool = False) -> List[Dict]:
    """Rows {implementation, batch, descriptors_per_s or note}: the entry point for benchmarks.run."""
    batch, repeats = (2, 2) if quick else (32, 5)
    fetch.package_dir()  # a clear error, with how to fetch, before anything is built
    rows = [{"implementation": "Keras port (TensorFlow, CPU)", "batch": b, "descriptors_per_s": r}
            for b, r in keras_rates(batch, repeats).items()]
    name = "face-api JS (TF.js 4.22 CPU backend, Node)"
    try:
        fetch.fetch(js_runtime=True)
        rows += [{"implementation": name, "batch": b, "descriptors_per_s": r}
                 for b, r in js_rates(batch, repeats).items()]
    except fetch.PretrainedUnavailable as e:
        rows.append({"implementation": name, "batch": None, "note": f"not run: {e}"})
    return rows


def markdown_table(rows: List[Dict]) -> str:
    lines = ["| FaceRecognitionNet, 150 x 150 | batch | descriptors/s | vs JS |", "|---|---:|---:|---:|"]
    js = {r["batch"]: r["descriptors_per_s"] for r in rows if "JS" in r["implementation"]
          and "descriptors_per_s" in r}
    for r in rows:
        if "descriptors_per_s" not in r:
            lines.append(f"| {r['implementation']} | | {r['note']} | |")
            continue
        ratio = f"{r['descriptors_per_s'] / js[r['batch']]:.1f}x" if r["batch"] in js else ""
        lines.append(f"| {r['implementation']} | {r['batch']} | {r['descriptors_per_s']:.2f} | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    args = parser.parse_args(argv)
    try:
        rows = run(quick=args.quick)
    except fetch.PretrainedUnavailable as e:
        print(f"pretrained_bench: {e}", file=sys.stderr)
        return 2
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
