"""Every benchmark, against its baseline, in one run on this machine: `make bench`.

    python -m benchmarks.run               # full sizes (about 15-25 minutes on 2 cores)
    python -m benchmarks.run --quick       # tiny sizes: checks that everything runs (tests use it)
    python -m benchmarks.run --only recall pipeline --out /tmp/part.md   # some stages only
    python -m benchmarks.run --only coverage   # replaces only the coverage section (about 12 min)

Writes benchmarks/results.md (or --out): the machine, the date and one table per stage, with the
targets. Stages: recall evaluation, ingest, training throughput, the demo command cold and cached,
serving latency, storage, and the coverage of the gate's intervals by simulation
(benchmarks/coverage.py). With --only, an existing file keeps everything but the sections of the
stages run, which are replaced in place (or appended) and say when and where they were measured.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import re
import sys
import tempfile
from typing import List

from benchmarks import (
    coverage,
    embed_bench,
    ingest_bench,
    partial_fc_bench,
    pipeline_bench,
    pretrained_bench,
    recall_bench,
    train_bench,
)
from models.pretrained import PretrainedUnavailable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TARGETS = {
    "recall": "at N = 20,000 (D = 512, 4 groups, 5 images per identity) the whole evaluate() with the "
              "default settings (Recall@K whole-gallery and within-group, the 1:1 view, the intervals "
              "with the exact identity-bootstrap weights) <= 0.6x the NumPy full-matrix Recall@1 "
              "(S = E @ E.T, self masked, argmax) of the same run, and recall_at_k <= 0.75x the NumPy "
              "full-matrix computation of its figures; memory O(chunk x N)",
    "ingest": "CLI with 2 workers, start-up excluded (images/s without start-up), >= 1.6x the "
              "checking loop (b); the end-to-end list size from which it holds is reported",
    "train": "run_fn step (augmentation off) >= 0.95x plain tf.keras fit",
    "storage": "transformed Examples <= 0.3x the bytes per image of the float32 crops they replaced "
               "(39,577 B/image at 64 px on the sample data)",
    "demo": "cold <= 10 min, cached <= 2 min on 2 cores",
    "partial_fc": "head step (C = 200,000, D = 512, batch 64) with sample_rate 0.1 <= 0.3x the full "
                  "softmax head's step",
    "coverage": "every 95 % interval the gate uses covers its truth 0.93-0.97 of the time; "
                "false-bless <= 0.025 for every rule judged on the interval",
}
COVERAGE_HEADING = "## Coverage of the gate's intervals"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
        memory = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    # The pinned stack (docs/stacks.md) the numbers were measured on.
    stack = ", ".join(f"{label} {importlib.metadata.version(package)}" for label, package in
                      (("TFX", "tfx"), ("TF", "tensorflow")))
    return (f"{os.cpu_count()} cores ({cpu}){memory}, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, {stack}")


def serving_table(rows) -> str:
    lines = ["| serving `embed_images` | p50 ms | p99 ms | images/s |", "|---|---:|---:|---:|"]
    lines += [f"| {r['batch']} image(s) | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['images_per_s']:.0f} |" for r in rows]
    return "\n".join(lines)


def storage_table(rows) -> str:
    lines = ["| storage (train split, gzip TFRecords) | images | bytes/image | vs raw |",
             "|---|---:|---:|---:|"]
    lines += [f"| {r['case']} | {r['images']} | {r['bytes_per_image']:.0f} | {r['ratio']:.1f}x |"
              for r in rows]
    return "\n".join(lines)


def demo_table(times, target: bool) -> str:
    lines = ["| main command (`python local_runner.py`) | wall time |", "|---|---:|",
             f"| cold: sample data generated ({times['generate']:.0f} s) + every component | "
             f"{times['cold'] / 60:.1f} min |",
             f"| cached rerun | {times['cached']:.0f} s |"]
    if target:
        lines.append(f"\nTarget: {TARGETS['demo']}.")
    return "\n".join(lines)


# Stages that can run alone; "pipeline" is the demo command cold and cached plus what measures its
# outputs (training throughput, evaluator embedding, serving, storage).
STAGES = ("recall", "partial_fc", "pretrained", "ingest", "pipeline", "coverage")
# Eval sets per cell of the coverage stage, by identities per group, and bootstrap resamples per
# set: the larger sets cost several times as much per evaluate() call, so they take fewer
# resamples (not fewer sets) to keep the stage near 20 minutes on 2 shared cores.
COVERAGE_SETS = {20: 500, 80: 500}
COVERAGE_RESAMPLES = {20: 1000, 80: 400}


def coverage_section(quick: bool) -> List[str]:
    """The coverage stage's section: heading, its mode and time, tables, target (the machine and
    date: the file's first line, or a partial run's note under the heading)."""
    print("coverage (simulated eval sets through evaluate()) ...", flush=True)
    if quick:
        cells = coverage.run(quick=True)
    else:
        cells = coverage.run(sets=COVERAGE_SETS, resamples=COVERAGE_RESAMPLES)
    return [COVERAGE_HEADING, "",
            f"Mode: {'quick (smoke sizes, not comparable)' if quick else 'full'}. "
            f"Stage time: {sum(c['seconds'] + c['truth_seconds'] for c in cells) / 60:.1f} min "
            f"in evaluate() and the Recall@1 truths (plus the populations).", "",
            coverage.markdown(cells), "", f"Target: {TARGETS['coverage']}.", ""]


def run(quick: bool, out: str, stages=STAGES) -> str:
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    sections: List[str] = [
        "# Benchmarks", "",
        f"Machine: {machine()}. Date: {datetime.date.today().isoformat()}. "
        f"Mode: {'quick (smoke sizes, not comparable)' if quick else 'full'}"
        + ("" if tuple(stages) == STAGES else f", stages: {', '.join(stages)}") + ".", ""]

    if "recall" in stages:
        print("recall ...", flush=True)
        rows = recall_bench.run(sizes=(500,) if quick else (5000, 20000), dim=64 if quick else 512,
                                repeats=1 if quick else 3)
        sections += ["## Recall evaluation", "", recall_bench.markdown_table(rows), "",
                     f"Target: {TARGETS['recall']}. {recall_bench.target_verdict(rows)}", ""]

    if not quick and "partial_fc" in stages:   # minutes each; their modules hold the quick sizes
        print("Partial FC head ...", flush=True)
        sections += ["## Partial FC", "", partial_fc_bench.markdown_table(
            partial_fc_bench.run(quick)), "", f"Target: {TARGETS['partial_fc']}.", ""]
    if not quick and "pretrained" in stages:
        print("pretrained network ...", flush=True)
        try:
            sections += ["## Pretrained FaceRecognitionNet", "",
                         pretrained_bench.markdown_table(pretrained_bench.run(quick)), ""]
        except PretrainedUnavailable as e:
            sections += ["## Pretrained FaceRecognitionNet", "", f"Not measured: {e}", ""]

    if "ingest" in stages:
        print("ingest ...", flush=True)
        with tempfile.TemporaryDirectory() as cache:
            rows = ingest_bench.run(images=40 if quick else 20000, repeats=1 if quick else 3,
                                    cache=None if not quick else cache)
        sections += ["## Ingest", "", ingest_bench.markdown_table(rows), "",
                     f"Target: {TARGETS['ingest']}. {ingest_bench.target_verdict(rows)}", ""]

    if "pipeline" in stages:
        sections += _pipeline_stages(quick)

    if "coverage" in stages:
        sections += coverage_section(quick)

    text = "\n".join(sections)
    if tuple(stages) != STAGES and os.path.exists(out):
        with open(out) as f:
            text = replace_sections(f.read(), text, partial_run_note(stages, quick))
    with open(out, "w") as f:
        f.write(text)
    print(text)
    return text


def _split_sections(text: str):
    """(the text before the first "## " heading, [(heading line, section text)])."""
    head, sections, current = [], [], None
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            current = [line.rstrip("\n"), line]
            sections.append(current)
        elif current is None:
            head.append(line)
        else:
            current[1] += line
    return "".join(head), [(heading, body) for heading, body in sections]


def partial_run_note(stages, quick: bool) -> str:
    """The line under each heading a partial run replaces: its date, command and machine."""
    command = f"make bench ARGS=\"{'--quick ' if quick else ''}--only {' '.join(stages)}\""
    mode = " (quick: smoke sizes, not comparable)" if quick else ""
    return f"Measured {datetime.date.today().isoformat()} with `{command}`{mode} on {machine()}."


def _subsections(body: str):
    """The "### " subsections of a section's text, each to the next "### " heading or the end."""
    parts = re.split(r"(?m)^(?=### )", body)
    return parts[1:]


def replace_sections(existing: str, new: str, note: str) -> str:
    """`existing` with each "## " section of `new` put in place of the section of the same heading
    (appended when there is none), `note` on the line below its heading; the rest unchanged. The
    replaced section's "### " subsections (written by hand: what was tried, with its own date) are
    kept after the new tables."""
    head, old_sections = _split_sections(existing)
    _, new_sections = _split_sections(new)
    old_bodies = dict(old_sections)
    replaced = dict(new_sections)
    for heading, body in new_sections:
        first, rest = body.split("\n", 1)
        kept = "".join(sub.rstrip("\n") + "\n\n" for sub in _subsections(old_bodies.get(heading, "")))
        replaced[heading] = f"{first}\n\n{note}\n{rest}" + (f"\n{kept}" if kept else "")
    out = [replaced.pop(heading, body) for heading, body in old_sections]
    out += [replaced[heading] for heading, _ in new_sections if heading in replaced]
    return head + "".join(body.rstrip("\n") + "\n\n" for body in out).rstrip("\n") + "\n"


def _pipeline_stages(quick: bool) -> List[str]:
    sections: List[str] = []
    with tempfile.TemporaryDirectory() as work:
        print("demo (cold, then cached) ...", flush=True)
        if quick:
            from pipeline import sample_data
            data = os.path.join(work, "data")
            sample_data.generate(data, seed=0, train_identities=8, train_images=3,
                                      test_identities=4, test_images=4, progress=False)
            times = pipeline_bench.demo_runs(work, data, ["--epochs", "1", "--batch-size", "8",
                                                          "--image-size", "32",
                                                          "--min-recall", "0", "--gate",
                                                          # 2 identities a group: gate them anyway
                                                          "min_group_identities=1",
                                                          "--beam-args"])
        else:
            times = pipeline_bench.demo_runs(work)
        sections += ["## The main command", "", demo_table(times, not quick), ""]

        print("training throughput ...", flush=True)
        root = os.path.join(work, "root")
        transformed = pipeline_bench._latest(os.path.join(root, "Transform",
                                                          "transformed_examples", "*"))
        graph = pipeline_bench._latest(os.path.join(root, "Transform", "transform_graph", "*"))
        from pipeline import configs
        config = dict(configs.trainer_settings(configs.preset("demo")), batch_size=8 if quick else 64)
        rows = train_bench.run(transformed, graph, config, steps=3 if quick else 40,
                               repeats=1 if quick else 3)
        sections += ["## Training throughput", "", train_bench.markdown_table(rows, config), "",
                     f"Target: {TARGETS['train']}.", ""]

        if not quick:
            print("evaluator embedding (Beam) ...", flush=True)
            sections += ["## Evaluator embedding", "",
                         embed_bench.markdown_table(embed_bench.run(quick, root=root)), ""]

        print("serving and storage ...", flush=True)
        sections += ["## Serving", "",
                     serving_table(pipeline_bench.serving_latency(
                         os.path.join(work, "serving"), times["data_dir"],
                         calls=20 if quick else 200)), "",
                     "## Storage", "", storage_table(pipeline_bench.storage(root)), "",
                     f"Target: {TARGETS['storage']}.", ""]
    return sections


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results.md"))
    parser.add_argument("--only", nargs="+", choices=STAGES, default=list(STAGES),
                        help="run these stages only (pipeline: the demo and what measures its outputs)")
    args = parser.parse_args(argv)
    run(args.quick, args.out, tuple(args.only))
    return 0


if __name__ == "__main__":
    sys.exit(main())
