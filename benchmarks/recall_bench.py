"""Times the evaluator's whole `evaluate()` and `recall_at_k` against the plain NumPy full-matrix
Recall@1, the full-matrix NumPy brute force of the same figures and a per-query Python loop.

    python -m benchmarks.recall_bench                      # N = 5,000 and 20,000, D = 512
    python -m benchmarks.recall_bench --quick              # N = 500, D = 64, one repeat (smoke test)
    python -m benchmarks.recall_bench --sizes 8000 --dim 256 --repeats 5

All run in this process on the same data: unit-normalised Gaussian embeddings, ~5 images per
identity (identity centre + noise, so recall is neither 0 nor 1), identities spread over 4 groups.
* NumPy Recall@1, the point of comparison of `evaluate()`: S = E @ E.T, the diagonal masked,
  argmax per row (`numpy_recall_at_1`; its Recall@1 must equal recall_at_k's, asserted).
* `evaluate()`: the RecallEvaluator's pure entry point with the default settings (GateConfig()):
  Recall@K whole-gallery and within-group, the exact 1:1 view, the bootstrap intervals with the
  exact identity-bootstrap weights (one model, no baseline; `fmr_bootstrap` must be "exact",
  asserted). It also runs with the 1:1 view forced onto the bounded-memory radix passes that larger
  N take (core/verification.py; one timed run), whose figures must equal the first run's.
* `recall_at_k` (ks 1 and 5, with the groups) against the NumPy brute force of the same figures
  (`brute_force_recall_at_k`, which must answer the same, asserted), and the per-query loop
  (overall recall@1 only, one run, only for N <= 5,000).
Times are medians of `repeats` runs, the cases timed round-robin (common.timed_medians_interleaved),
so on a shared machine each case and its baseline see the same conditions. Peak extra memory is
measured in a separate pass under tracemalloc (which sees NumPy's allocations, not BLAS's internal
buffers), so tracing does not distort timings. Prints a Markdown table; writes nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import sys
import time
import tracemalloc
from typing import Callable, Dict, List, Sequence

import numpy as np

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import timed_medians_interleaved  # noqa: E402
from core.recall import brute_force_recall_at_k, per_row_loop_recall_at_1, recall_at_k  # noqa: E402


@contextlib.contextmanager
def _radix_verification():
    """The 1:1 view on its three radix passes, as beyond the one-pass selection's budget."""
    from core import verification

    original = verification._selection_fits
    verification._selection_fits = lambda sizes, n: False
    try:
        yield
    finally:
        verification._selection_fits = original


def _evaluate_fn(embeddings, labels, groups):
    from components.recall_evaluator import executor, gate  # TensorFlow: import only when timed

    data = {"embeddings": embeddings, "labels": labels, "groups": groups}
    config = gate.GateConfig()           # the default settings
    return lambda: executor.evaluate(data, config)


def numpy_recall_at_1(embeddings, labels) -> float:
    """Overall Recall@1 the plain full-matrix way: S = E @ E.T of the float32 unit rows, the query
    itself masked, argmax per row (the lowest index among ties); queries whose identity has no other
    image are skipped. The point of comparison of evaluate()'s time."""
    unit = np.asarray(embeddings, dtype=np.float32)
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    nearest = sims.argmax(axis=1)
    del sims
    _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    answerable = counts[codes.reshape(-1)] > 1
    return float(np.mean(labels[nearest][answerable] == labels[answerable]))

KS = (1, 5)
# evaluate() at N = TARGET_N (D = 512, 4 groups): at most this times the NumPy full-matrix Recall@1.
EVALUATE_TARGET = 0.6
TARGET_N = 20000
IMAGES_PER_IDENTITY = 5
N_GROUPS = 4
LOOP_MAX_N = 5000
# Noise per coordinate relative to the identity centre's: at 2.2 overall recall@1 is ~0.9 at N = 8,000.
NOISE = 2.2


def make_data(n: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    n_identities = max(1, n // IMAGES_PER_IDENTITY)
    labels = rng.integers(0, n_identities, size=n)
    centres = rng.standard_normal((n_identities, dim), dtype=np.float32)
    embeddings = centres[labels] + NOISE * rng.standard_normal((n, dim), dtype=np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    groups = np.array([f"group{g}" for g in range(N_GROUPS)])[labels % N_GROUPS]
    return embeddings, labels, groups


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_extra_mb(fn: Callable[[], object]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return (peak - before) / 2**20


def run(sizes: Sequence[int] = (5000, 20000), dim: int = 512, repeats: int = 3,
        seed: int = 0) -> List[Dict]:
    rows = []
    for n in sizes:
        embeddings, labels, groups = make_data(n, dim, seed)
        cases = {
            "numpy_r1": lambda: numpy_recall_at_1(embeddings, labels),
            "evaluate": _evaluate_fn(embeddings, labels, groups),
            "recall_at_k": lambda: recall_at_k(embeddings, labels, groups, ks=KS),
            "numpy_full": lambda: brute_force_recall_at_k(embeddings, labels, groups, ks=KS),
        }
        loop = lambda: per_row_loop_recall_at_1(embeddings, labels)  # noqa: E731
        with_loop = n <= LOOP_MAX_N

        result = cases["recall_at_k"]()  # also warms up BLAS threads and page caches
        reference = cases["numpy_full"]()
        assert result == reference, f"recall_at_k != brute force at N={n}:\n{result}\n{reference}"
        assert cases["numpy_r1"]() == result["overall"]["recall@1"], "NumPy Recall@1 disagrees"
        metrics = cases["evaluate"]()
        assert metrics["verification"]["fmr_bootstrap"] == "exact", metrics["verification"]
        loop_agrees = None
        if with_loop:
            loop_agrees = loop()["overall"] == {key: result["overall"][key]
                                                for key in ("n_queries", "n_skipped", "recall@1")}

        timed = timed_medians_interleaved(cases, repeats)
        row = {"n": n, "dim": dim, "repeats": repeats,
               **{f"{name}_s": seconds for name, (seconds, _) in timed.items()},
               "loop_s": _median_seconds(loop, 1) if with_loop else None,
               "fmr_bootstrap": metrics["verification"]["fmr_bootstrap"]}
        row["ratio"] = row["recall_at_k_s"] / row["numpy_full_s"]
        row["evaluate_ratio"] = row["evaluate_s"] / row["numpy_r1_s"]
        row["evaluate_peak_mb"] = _peak_extra_mb(cases["evaluate"])
        with _radix_verification():
            radix_summary = cases["evaluate"]()["verification"]
            row["evaluate_radix_s"] = _median_seconds(cases["evaluate"], 1)
            row["evaluate_radix_peak_mb"] = _peak_extra_mb(cases["evaluate"])
        row["evaluate_radix_ratio"] = row["evaluate_radix_s"] / row["numpy_r1_s"]
        _assert_same_verification(metrics["verification"], radix_summary)
        row["recall_at_k_peak_mb"] = _peak_extra_mb(cases["recall_at_k"])
        row["numpy_r1_peak_mb"] = _peak_extra_mb(cases["numpy_r1"])
        row["numpy_peak_mb"] = _peak_extra_mb(cases["numpy_full"])
        row["loop_peak_mb"] = _peak_extra_mb(loop) if with_loop else None
        row["results_equal"] = True
        row["loop_agrees"] = loop_agrees
        row["recall@1"] = result["overall"]["recall@1"]
        row["recall@5"] = result["overall"]["recall@5"]
        rows.append(row)
    return rows


def _assert_same_verification(one_pass: Dict, radix: Dict):
    """Every 1:1 figure but the DET points (which sit at other thresholds) must agree."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "det"}
        return value
    assert strip(one_pass) == strip(radix), "the radix passes disagree with the one-pass selection"


def markdown_table(rows: List[Dict]) -> str:
    def num(value, fmt):
        return "—" if value is None else format(value, fmt)

    lines = [
        "| N | D | NumPy Recall@1 s | evaluate() s | ratio | 1:1 bootstrap "
        "| evaluate() radix 1:1 s | ratio | recall_at_k s | NumPy full s | ratio | loop s "
        "| peak MB NumPy Recall@1 | peak MB evaluate() | peak MB evaluate() radix "
        "| peak MB recall_at_k | peak MB NumPy full | peak MB loop | recall@1 / @5 (overall) "
        "| loop agrees |",
        "|---:|---:|---:|---:|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:"
        "|:---:|:---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['dim']} | {r['numpy_r1_s']:.3f} | {r['evaluate_s']:.3f} "
            f"| {r['evaluate_ratio']:.2f} | {r['fmr_bootstrap']} "
            f"| {r['evaluate_radix_s']:.3f} | {r['evaluate_radix_ratio']:.2f} "
            f"| {r['recall_at_k_s']:.3f} | {r['numpy_full_s']:.3f} | {r['ratio']:.2f} "
            f"| {num(r['loop_s'], '.2f')} | {r['numpy_r1_peak_mb']:.1f} "
            f"| {r['evaluate_peak_mb']:.1f} | {r['evaluate_radix_peak_mb']:.1f} "
            f"| {r['recall_at_k_peak_mb']:.1f} | {r['numpy_peak_mb']:.1f} "
            f"| {num(r['loop_peak_mb'], '.1f')} | {r['recall@1']:.3f} / {r['recall@5']:.3f} "
            f"| {'—' if r['loop_agrees'] is None else ('yes' if r['loop_agrees'] else 'NO')} |")
    return "\n".join(lines)


def target_verdict(rows: List[Dict], n: int = TARGET_N) -> str:
    """Whether evaluate() met EVALUATE_TARGET x the NumPy Recall@1 at N = n (if measured)."""
    row = next((r for r in rows if r["n"] == n), None)
    if row is None:
        return f"Not measured at N = {n:,}."
    met = row["evaluate_ratio"] <= EVALUATE_TARGET
    return (f"{'Met' if met else 'NOT met'}: evaluate() {row['evaluate_ratio']:.2f}x the NumPy "
            f"Recall@1 at N = {n:,} (medians of {row['repeats']}, same run).")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000], help="values of N")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="N=500, D=64, 1 repeat (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.dim, args.repeats = [500], 64, 1
    rows = run(args.sizes, args.dim, args.repeats, args.seed)
    print(f"ks={KS}, {N_GROUPS} groups, ~{IMAGES_PER_IDENTITY} images per identity, "
          f"{os.cpu_count()} CPUs, times are medians of {args.repeats} run(s) (loop: 1 run)\n")
    print(markdown_table(rows))
    print("\n" + target_verdict(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
