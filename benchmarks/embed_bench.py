"""The RecallEvaluator's embedding and metric step at scale.

    python -m benchmarks.embed_bench --root <pipeline root>     # a run's Trainer model and eval split
    python -m benchmarks.embed_bench --root <pipeline root> --quick

Embedding (`embed_rows`): the eval split, its records repeated under new paths up to `images`
(the per-image cost is the model's and the decoder's, so repeating costs the same as new faces),
embedded by
    (a) the former one-process loop: the SavedModel's serving_default called on batches;
    Beam, 1 worker: components/recall_evaluator/beam_embed.py on FnApiRunner in one process;
    Beam, 2 workers: the same, --direct_running_mode=multi_processing --direct_num_workers=2.
Wall times are medians of `repeats` runs. The Beam rows also give the start-up (the same pipeline
on a 32-image split: Beam, worker processes, model loading, the scratch round trip) and the
throughput without it, `(N - 32) / (t(N) - t(32))`, per worker: the figure that scales with
Dataflow workers.

Metric step (`memory_rows`): tracemalloc's peak of `executor.evaluate()` (recall, 1:1
verification, bootstrap intervals; default gate) on Gaussian embeddings at several N, D = 512,
5 images per identity, 4 groups (benchmarks.recall_bench.make_data), with the embeddings
themselves, beside the model of its terms (`memory_model`), and an extrapolation to N = 1,000,000:
the model's terms, with its one N^2 term (the 1:1 impostor selection) scaled by measured / modelled
at the largest measured N. Extrapolated, not measured: say so wherever the figure is quoted.
"""
from __future__ import annotations

import gc
import glob
import os
import tempfile
import tracemalloc
from typing import Dict, List, Optional, Sequence

from benchmarks.common import timed_median

SMALL = 32
TWO_WORKERS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def _latest(path_glob: str) -> str:
    paths = sorted(glob.glob(path_glob), key=lambda p: int(os.path.basename(p)))
    if not paths:
        raise FileNotFoundError(path_glob)
    return paths[-1]


def from_root(root: str):
    """(serving model dir, eval split files) of a pipeline root's latest Trainer and ExampleGen."""
    model = os.path.join(_latest(os.path.join(root, "Trainer", "model", "*")), "Format-Serving")
    examples = _latest(os.path.join(root, "FaceExampleGen", "examples", "*"))
    files = sorted(glob.glob(os.path.join(examples, "Split-eval", "*")))
    if not files:
        raise FileNotFoundError(f"no eval split under {examples}")
    return model, files


def synthetic_split(files: Sequence[str], images: int, out: str) -> List[str]:
    """The split's records repeated under new paths (`<path>#<copy>`) up to `images`, two files."""
    import tensorflow as tf

    from core import features

    records = [r.numpy() for r in tf.data.TFRecordDataset(list(files), compression_type="GZIP")]
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, f"part-{i}.gz") for i in range(2)]
    writers = [tf.io.TFRecordWriter(p, options="GZIP") for p in paths]
    for i in range(images):
        example = tf.train.Example.FromString(records[i % len(records)])
        value = example.features.feature[features.PATH].bytes_list.value
        path = value[0] if value else b"record"
        del value[:]
        value.append(path + f"#{i // len(records)}".encode())
        writers[i % 2].write(example.SerializeToString())
    for writer in writers:
        writer.close()
    return paths


def one_process_loop(model_dir: str, files: Sequence[str], batch_size: int) -> int:
    """(a): what the evaluator did before: one process, the signature on batches."""
    import tensorflow as tf

    embed = tf.saved_model.load(model_dir).signatures["serving_default"]
    count = 0
    for batch in tf.data.TFRecordDataset(list(files), compression_type="GZIP").batch(batch_size):
        count += len(embed(examples=batch)["embedding"].numpy())
    return count


def beam_embed_once(model_dir: str, files: Sequence[str], batch_size: int, beam_args: List[str],
                    work: str) -> int:
    import apache_beam as beam

    from components.recall_evaluator import beam_embed

    argv = ["--runner=FnApiRunner", *beam_args]
    gathered = beam_embed.embed_split({"candidate": model_dir}, files, batch_size,
                                      lambda: beam.Pipeline(argv=argv), work)
    return len(gathered["candidate"]["labels"])


def embed_rows(model_dir: str, files: Sequence[str], images: int, repeats: int,
               batch_size: int = 256) -> List[Dict]:
    rows = []
    with tempfile.TemporaryDirectory() as work:
        big = synthetic_split(files, images, os.path.join(work, "big"))
        small = synthetic_split(files, SMALL, os.path.join(work, "small"))
        seconds, count = timed_median(lambda: one_process_loop(model_dir, big, batch_size), repeats)
        rows.append({"case": "(a) one-process loop (former evaluator)", "workers": 1, "images": count,
                     "seconds": seconds, "images_per_s": count / seconds, "startup_seconds": None,
                     "steady_images_per_s": None})
        for name, workers, args in (("Beam RunInference, 1 worker", 1, []),
                                    ("Beam RunInference, 2 workers", 2, TWO_WORKERS)):
            seconds, count = timed_median(lambda: beam_embed_once(model_dir, big, batch_size, args,
                                                            os.path.join(work, "run")), repeats)
            startup, _ = timed_median(lambda: beam_embed_once(model_dir, small, batch_size, args,
                                                        os.path.join(work, "run")), repeats)
            # None when the small run took as long as the large one (a busy machine): no estimate.
            steady = (count - SMALL) / (seconds - startup) if seconds > startup else None
            rows.append({"case": name, "workers": workers, "images": count, "seconds": seconds,
                         "images_per_s": count / seconds, "startup_seconds": startup,
                         "steady_images_per_s": steady})
    for row in rows:
        rate = row["steady_images_per_s"] if row["startup_seconds"] is not None else row["images_per_s"]
        row["per_worker"] = rate / row["workers"] if rate else None
    return rows


# ----------------------------------------------------------------------------- metric step memory

def _kept_sizes(n: int, per_identity: int = 5, groups: int = 4) -> List[int]:
    """The one-pass selection's kept scores per scope (overall first) on the modelled eval set."""
    from core import pair_counter, verification

    largest = max(max(verification.DEFAULT_FARS), verification.DEFAULT_TARGET_FMR)
    genuine = n * (per_identity - 1) / 2
    impostor = n * (n - 1) / 2 - genuine
    group_n = n / groups
    group_impostor = group_n * (group_n - 1) / 2 - genuine / groups
    return ([pair_counter._kept(int(impostor), largest)]
            + [pair_counter._kept(int(group_impostor), max(verification.DEFAULT_FARS))] * groups)


def _one_pass_selection(n: int, per_identity: int = 5, groups: int = 4) -> bool:
    from core import verification

    return verification._selection_fits(_kept_sizes(n, per_identity, groups), n)


def memory_model(n: int, dim: int = 512, per_identity: int = 5, groups: int = 4,
                 resamples: int = 1000, k_max: int = 20) -> Dict[str, float]:
    """Bytes of the metric step's large arrays at N = n, from the code's own sizes:
    the embeddings and their normalised float32 copy (2 N D 4), one similarity block and its mask
    (chunk^2 x 5, core.recall.DEFAULT_CHUNK_SIZE), the running top-k_max lists (N k_max x 12),
    the genuine pairs (N (m - 1) / 2 x 36: indices, block keys, order, score), the 1:1 impostor side
    of core/verification.py and the bootstrap (weights: resamples x identities float64, 1.25 x
    while built; the sparse false-matching pairs of identities). The impostor
    side is, within its budget, the one-pass selection (overall K = max(largest FAR x impostor pairs,
    DET_MIN_KEPT) scores with both indices, 20 B each, buffered up to 2 K before compaction; per
    group 4 B each, same buffer), beyond it the radix passes' histograms (65,536 int64 bins per scope,
    about three copies, plus the second pass's per-block bin counts of up to 1 + 3 x (groups + 1)
    wanted ranks, and about 24 B per pair of one block for its keys and bins)."""
    from core import recall, verification

    chunk = recall.DEFAULT_CHUNK_SIZE
    genuine = n * (per_identity - 1) / 2
    kept, group_kept = _kept_sizes(n, per_identity, groups)[:2]
    if _one_pass_selection(n, per_identity, groups):
        impostor_side = 2 * kept * 20.0 + groups * 2 * group_kept * 4.0
    else:
        scopes, wanted = 1 + groups, 1 + 3 * (1 + groups)
        # ... and each block's keys, scope codes and bin indices (about 24 B per pair).
        impostor_side = 3 * scopes * 65536 * 8.0 + 2 * wanted * 65536 * 8.0 + chunk * chunk * 24.0
    return {"embeddings": 2 * n * dim * 4.0,
            "blocks": chunk * chunk * 5.0 + n * k_max * 12.0,
            "genuine pairs": genuine * 36.0,
            "impostor selection": impostor_side,
            # The weights, at most 1.25 x while built (core/intervals.py), and the 1:1 bootstrap's
            # sparse false-matching pairs of identities (24 B each, at most EXACT_UNIT_PAIRS).
            "bootstrap": 1.25 * resamples * (n / per_identity) * 8.0 + 24.0 * min(
                verification.EXACT_UNIT_PAIRS,
                verification.DEFAULT_TARGET_FMR * n * (n - per_identity) / 2)}


def _peak_bytes(fn) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def memory_rows(sizes: Sequence[int], dim: int = 512, extrapolate_to: int = 1_000_000) -> List[Dict]:
    from benchmarks.recall_bench import make_data
    from components.recall_evaluator import executor, gate

    rows = []
    warm = make_data(500, dim, seed=1)     # first call: lazy imports and caches, not the metric's
    executor.evaluate(dict(zip(("embeddings", "labels", "groups"), warm)), gate.GateConfig())
    for n in sizes:
        embeddings, labels, groups = make_data(n, dim, seed=0)
        data = {"embeddings": embeddings, "labels": labels, "groups": groups}
        peak = _peak_bytes(lambda: executor.evaluate(data, gate.GateConfig()))
        model = memory_model(n, dim)
        rows.append({"n": n, "dim": dim, "measured_mb": (peak + embeddings.nbytes) / 1e6,
                     "model_mb": sum(model.values()) / 1e6, "terms": model})
    # Extrapolation: every term from the model, the impostor side scaled by what the largest measured
    # N shows against the model (the selection's compaction copies) when it is still the one-pass
    # selection at `extrapolate_to` (beyond the budget it is the radix passes' constant histograms).
    last = rows[-1]
    rest = sum(v for k, v in last["terms"].items() if k != "impostor selection")
    scale = max(1.0, (last["measured_mb"] * 1e6 - rest) / last["terms"]["impostor selection"])
    model = memory_model(extrapolate_to, dim)
    if not _one_pass_selection(extrapolate_to):
        scale = 1.0
    extrapolated = sum(model.values()) + (scale - 1) * model["impostor selection"]
    rows.append({"n": extrapolate_to, "dim": dim, "measured_mb": None, "model_mb": sum(model.values()) / 1e6,
                 "extrapolated_mb": extrapolated / 1e6, "selection_scale": scale, "terms": model})
    return rows


def run(quick: bool, model_dir: Optional[str] = None, files: Optional[Sequence[str]] = None,
        root: Optional[str] = None) -> Dict[str, List[Dict]]:
    """{"embed": embed_rows (when a model and split, or a pipeline root, are given), "memory":
    memory_rows}."""
    if root is not None:
        model_dir, files = from_root(root)
    result = {"embed": [], "memory": memory_rows((500, 1000) if quick else (5000, 10000, 20000))}
    if model_dir is not None:
        result["embed"] = embed_rows(model_dir, files, images=64 if quick else 4000,
                                     repeats=1 if quick else 3)
    return result


def markdown_table(result: Dict[str, List[Dict]]) -> str:
    lines = []
    if result["embed"]:
        lines += ["| embedding the eval split | workers | images | s (median) | images/s | start-up s | "
                  "images/s without start-up | per worker |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in result["embed"]:
            steady = r["steady_images_per_s"]
            lines.append(f"| {r['case']} | {r['workers']} | {r['images']} | {r['seconds']:.1f} | "
                         f"{r['images_per_s']:.0f} | "
                         + (f"{r['startup_seconds']:.1f} | " if r["startup_seconds"] is not None else "- | ")
                         + (f"{steady:.0f} | " if steady else "- | ")
                         + (f"{r['per_worker']:.0f} |" if r["per_worker"] else "- |"))
        lines.append("")
    names = list(result["memory"][0]["terms"])
    lines += ["| metric step (evaluate()), D = 512 | measured peak MB | model MB | "
              + " | ".join(f"{name} MB" for name in names) + " |",
              "|---:|---:|---:|" + "---:|" * len(names)]
    for r in result["memory"]:
        measured = (f"{r['measured_mb']:.0f}" if r["measured_mb"] is not None else
                    f"{r['extrapolated_mb']:,.0f} (extrapolated: selection x {r['selection_scale']:.1f})")
        lines.append(f"| {r['n']:,} | {measured} | {r['model_mb']:,.0f} | "
                     + " | ".join(f"{r['terms'][name] / 1e6:,.0f}" for name in names) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="a pipeline root with Trainer and FaceExampleGen outputs")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(markdown_table(run(args.quick, root=args.root)))
