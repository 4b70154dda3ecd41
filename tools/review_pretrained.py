"""The real-photo review of a model not trained here: face-api's pretrained FaceRecognitionNet through
the pipeline (ingest, the face_api_aligned Transform, RecallEvaluator) on all 204 London photos.

    python -m tools.review_pretrained [--work runs/london_review] [--max-fmr-ratio 3] [-v]

Runs `local_runner.py --evaluate-model pretrained:face_recognition_net` on tests/data/london_faces
(the one list as both splits: nothing is trained, the Transform's vocabulary is unused) with the
release gate below, then writes <work>/review.md: Recall@1 per group and the 1:1 view (FNMR and FMR
of each group at the one global threshold), the pipeline gate's verdict, and the verdict a
Recall@1-only gate (the same settings without max_fmr_ratio) gives on the same metrics.

The gate: Recall@1 >= 0.98 in every gated group; `max_fmr_ratio` bounds the FMR differential (the
largest group FMR over the target FMR). The London set has 102 people: white 69, black 13,
west_asian 10, east_asian 9, mixed 1; `min_group_identities` 9 gates the four groups with at least
9 people, and `mixed` (one person) is reported but ungated. Nothing is pushed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Optional

from components.recall_evaluator import gate as gate_lib
from core.features import OVERALL
from pipeline import configs

LONDON = os.path.join(configs.REPO_ROOT, "tests", "data", "london_faces")
RECALL_BAR = 0.98
MIN_GROUP_IDENTITIES = 9
UNGATED = ["mixed"]
DEFAULT_MAX_FMR_RATIO = 3.0


def gate_settings(max_fmr_ratio: Optional[float]) -> Dict[str, Any]:
    settings: Dict[str, Any] = {"min_recall": RECALL_BAR, "min_group_identities": MIN_GROUP_IDENTITIES,
                                "ungated_groups": list(UNGATED)}
    if max_fmr_ratio is not None:
        settings["max_fmr_ratio"] = float(max_fmr_ratio)
    return settings


def runner_arguments(work: str, max_fmr_ratio: Optional[float], data_root: str = LONDON,
                     verbose: bool = False) -> List[str]:
    args = ["--evaluate-model", "pretrained:face_recognition_net", "--data-root", data_root,
            "--list-files", "train=image_list.json", "eval=image_list.json",
            "--pipeline-root", os.path.join(work, "root"),
            "--metadata", os.path.join(work, "metadata.sqlite"),
            "--serving-dir", os.path.join(work, "serving"), "--gate"]
    args += [f"{key}={json.dumps(value)}" for key, value in gate_settings(max_fmr_ratio).items()]
    return args + (["-v"] if verbose else [])


def recall_only_verdicts(metrics: Dict[str, Any], settings: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The gate's own verdicts on the run's metrics with max_fmr_ratio removed."""
    config = gate_lib.GateConfig(**{k: v for k, v in settings.items() if k != "max_fmr_ratio"})
    return gate_lib.evaluate_gate(metrics["candidate"], config, None, metrics["verification"])


def _f(value, digits=3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def review_table(metrics: Dict[str, Any], identities: Dict[str, int]) -> str:
    """Markdown: one row per scope, Recall@1 (95 % interval), FNMR and FMR at the threshold."""
    verification = metrics["verification"]
    rows = ["| group | people | Recall@1 [95 % CI] | FNMR | FMR | FMR / target |",
            "|---|---:|---:|---:|---:|---:|"]
    scopes = [OVERALL] + sorted(s for s in metrics["candidate"] if s != OVERALL)
    for scope in scopes:
        recall = metrics["candidate"][scope]
        ci = recall.get("recall@1_ci")
        entry = verification.get(scope) or {}
        fmr = entry.get("fmr")
        ratio = None if fmr is None else fmr / verification["target_fmr"]
        rows.append(f"| {scope} | {identities.get(scope, '-')} | {_f(recall.get('recall@1'))}"
                    f"{f' [{ci[0]:.3f}, {ci[1]:.3f}]' if ci else ''} | {_f(entry.get('fnmr'), 4)} | "
                    f"{_f(fmr, 5)} | {_f(ratio, 1)} |")
    return "\n".join(rows)


def identities_per_group(list_path: str) -> Dict[str, int]:
    with open(list_path) as f:
        records = json.load(f)
    groups: Dict[str, set] = {}
    for key, record in records.items():
        groups.setdefault(key.split("/")[0], set()).add(record["label"])
    counts = {g: len(labels) for g, labels in groups.items()}
    counts[OVERALL] = len({r["label"] for r in records.values()})
    return counts


def write_review(work: str, run: Dict[str, Any], metrics: Dict[str, Any], settings: Dict[str, Any],
                 data_root: str = LONDON) -> str:
    verification = metrics["verification"]
    recall_only = recall_only_verdicts(metrics, settings)
    lines = [
        "# face-api FaceRecognitionNet on the London photos (through the pipeline)", "",
        review_table(metrics, identities_per_group(os.path.join(data_root, "image_list.json"))), "",
        f"1:1 threshold {verification['threshold']:.4f} (cosine score at target FMR "
        f"{verification['target_fmr']:g} over all impostor pairs); FMR differential "
        f"{_f(verification.get('fmr_differential'), 1)} over {verification.get('ratio_groups')}.", "",
        f"Pipeline gate {json.dumps(settings)}: {'BLESSED' if run['blessed'] else 'NOT BLESSED'}",
    ]
    lines += [f"- {'PASS' if v['passed'] else 'FAIL'} {v['message']}" for v in metrics["verdicts"]]
    lines += ["", f"Recall@1-only gate (same settings without max_fmr_ratio): "
              f"{'BLESSED' if all(v['passed'] for v in recall_only) else 'NOT BLESSED'}"]
    lines += [f"- {'PASS' if v['passed'] else 'FAIL'} {v['message']}" for v in recall_only]
    lines += ["", f"Report: {run['report']}"]
    path = os.path.join(work, "review.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=os.path.join(configs.DEFAULT_WORK_DIR, "london_review"))
    parser.add_argument("--max-fmr-ratio", type=float, default=DEFAULT_MAX_FMR_RATIO)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    work = os.path.abspath(args.work)
    from pipeline import runs as pipeline_runs

    # The local runner as a command (a tool never imports a runner): its progress lines stream here.
    command = [sys.executable, os.path.join(configs.REPO_ROOT, "local_runner.py"),
               *runner_arguments(work, args.max_fmr_ratio, verbose=args.verbose)]
    if subprocess.run(command, cwd=configs.REPO_ROOT).returncode != 0:
        print("the pipeline run failed", file=sys.stderr)
        return 1
    run = pipeline_runs.list_runs(pipeline_runs.open_store(os.path.join(work, "metadata.sqlite")))[-1]
    metrics = pipeline_runs.read_metrics(run)
    if metrics is None:
        print("the run wrote no evaluation", file=sys.stderr)
        return 1
    path = write_review(work, run, metrics, gate_settings(args.max_fmr_ratio))
    with open(path) as f:
        print(f.read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
