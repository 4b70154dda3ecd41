"""Pipeline runs as the metadata store records them, and their text for people: `tools.review`'s
list / show / compare and the local runner's closing summary (`outcome_text`)."""
from __future__ import annotations

import datetime
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from components.recall_evaluator import gate as gate_lib
from core import json_safe, operating_point
from core.features import OVERALL
from core.interval_quality import APPROXIMATE_MARK, mark, verdict_mark
from pipeline import configs
from pipeline.metadata import custom_property as _custom
from pipeline.metadata import node_of as _node_of
from pipeline.metadata import open_store
from pipeline.metadata import output_artifacts as _outputs
from pipeline.metadata import state_name as _state

NODE_TRAINER = "Trainer"
NODE_EVALUATOR = "RecallEvaluator"
NODE_PUSHER = "Pusher"
NODE_TFLITE = "TFLiteExporter"


def list_runs(store) -> List[Dict[str, Any]]:
    """One summary per pipeline run, oldest first."""
    runs = []
    for context in sorted(store.get_contexts_by_type("pipeline_run"),
                          key=lambda c: c.create_time_since_epoch):
        run = {"run_id": context.name, "context_id": context.id,
               "started": datetime.datetime.fromtimestamp(
                   context.create_time_since_epoch / 1000).isoformat(timespec="seconds"),
               "model_id": None, "model_uri": None, "trainer": None, "recall_at_1": None,
               "blessed": None, "report": None, "pushed": None, "pushed_to": None,
               "evaluation_uri": None, "evaluation_id": None, "tflite_uri": None,
               "failed_nodes": []}
        for execution in store.get_executions_by_context(context.id):
            _record_execution(store, execution, run)
        runs.append(run)
    return runs


def _record_execution(store, execution, run: Dict[str, Any]) -> None:
    """What one execution of the run tells its summary (only the nodes listed above count)."""
    node = _node_of(store, execution)
    state = _state(execution)
    if state == "FAILED":
        run["failed_nodes"].append(node)
    if node == NODE_TRAINER:
        run["trainer"] = state
        models = _outputs(store, execution.id, "model")
        if models:
            run["model_id"], run["model_uri"] = models[0].id, models[0].uri
    elif node == NODE_EVALUATOR:
        for evaluation in _outputs(store, execution.id, "evaluation"):
            run["recall_at_1"] = json.loads(_custom(evaluation, "recall_at_1", "null"))
            run["blessed"] = bool(_custom(evaluation, "blessed", 0))
            run["report"] = _custom(evaluation, "report")
            run["evaluation_uri"], run["evaluation_id"] = evaluation.uri, evaluation.id
    elif node == NODE_PUSHER:
        for push in _outputs(store, execution.id, "pushed_model"):
            run["pushed"] = bool(_custom(push, "pushed", 0))
            run["pushed_to"] = _custom(push, "pushed_destination")
    elif node == NODE_TFLITE:
        for tflite in _outputs(store, execution.id, "tflite_model"):
            if _custom(tflite, "exported", 0):
                run["tflite_uri"] = tflite.uri


def find_run(runs: List[Dict[str, Any]], key: str) -> Dict[str, Any]:
    if key.lstrip("-").isdigit() and int(key) < 0:
        return runs[int(key)]
    matches = [r for r in runs if r["run_id"] == key] or [r for r in runs
                                                         if r["run_id"].startswith(key)]
    if len(matches) != 1:
        raise KeyError(f"run {key!r} matches {len(matches)} runs; use `list` to see run ids")
    return matches[0]


def _yes_no(value) -> str:
    return "-" if value is None else ("yes" if value else "no")


def format_list(runs: List[Dict[str, Any]]) -> str:
    groups = sorted({g for r in runs for g in (r["recall_at_1"] or {}) if g != OVERALL})
    header = ["run", "started", "model", OVERALL, *groups, "blessed", "pushed"]
    lines = [header]
    for run in runs:
        recall = run["recall_at_1"] or {}
        cells = [run["run_id"], run["started"], str(run["model_id"] or "-")]
        cells += [f"{recall[g]:.3f}" if recall.get(g) is not None else "-"
                  for g in [OVERALL, *groups]]
        status = _yes_no(run["blessed"])
        if run["failed_nodes"]:
            status = f"failed ({', '.join(n for n in run['failed_nodes'] if n)})"
        cells += [status, _yes_no(run["pushed"])]
        lines.append(cells)
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths))
                     for row in lines)


def format_compare(a: Dict[str, Any], b: Dict[str, Any]) -> str:
    """Per-group Recall@1 of two runs with their 95 % intervals. The change gets the paired
    interval when run B was evaluated against run A's model as its baseline (the same resampled
    identities for both); otherwise two separate intervals are all there is."""
    ra, rb = a["recall_at_1"] or {}, b["recall_at_1"] or {}
    ma, mb = _metrics_or_none(a), _metrics_or_none(b)
    paired = bool(mb and a["model_id"] is not None
                  and (mb.get("baseline_model") or {}).get("id") == a["model_id"])
    scopes = [OVERALL] + sorted((set(ra) | set(rb)) - {OVERALL})
    lines = [f"{'Recall@1':<12}{a['run_id'][:24]:>26}{b['run_id'][:24]:>26}{'change':>28}"]
    for scope in scopes:
        va, vb = ra.get(scope), rb.get(scope)
        change = f"{vb - va:+.3f}" if va is not None and vb is not None else "-"
        if paired and va is not None and vb is not None:
            change += _interval(((mb.get("deltas") or {}).get(scope) or {}).get("recall@1_ci"), True)
        lines.append(f"{scope:<12}{_num(va) + _interval(_ci(ma, scope)):>26}"
                     f"{_num(vb) + _interval(_ci(mb, scope)):>26}{change:>28}")
    for label, key in (("model", "model_id"), ("blessed", "blessed"), ("pushed", "pushed")):
        lines.append(f"{label:<12}{_text(a[key]):>26}{_text(b[key]):>26}")
    lines.append("intervals: 95 % bootstrap over identities; change: "
                 + ("paired (run B's baseline is run A's model)" if paired
                    else "no paired interval (run B was not evaluated against run A's model)"))
    return "\n".join(lines)


def _metrics_or_none(run: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    try:
        return read_metrics(run)
    except (OSError, ValueError):
        return None


def _ci(metrics: Optional[Dict[str, Any]], scope: str, key: str = "recall@1"):
    return (((metrics or {}).get("candidate") or {}).get(scope) or {}).get(f"{key}_ci")


def _interval(interval, signed: bool = False) -> str:
    if not interval:
        return ""
    spec = "+.3f" if signed else ".3f"
    return f" [{interval[0]:{spec}}, {interval[1]:{spec}}]"


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _text(value) -> str:
    if isinstance(value, bool):
        return _yes_no(value)
    return "-" if value is None else str(value)


def _read_text(path: str) -> Optional[str]:
    """The file's text, None when it does not exist; a gs:// (or other remote) path through
    TensorFlow's file system (imported only then: local reviews stay quick)."""
    if "://" not in path:
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return f.read()
    import tensorflow as tf
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return f.read()


def read_metrics(run: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The run's metrics.json (every number the evaluator computed), or None without one."""
    if not run["evaluation_uri"]:
        return None
    text = _read_text(os.path.join(run["evaluation_uri"], "metrics.json"))
    return None if text is None else json_safe.loads(text)


def pixel_recall_at_1(metrics: Optional[Dict[str, Any]]) -> Dict[str, float]:
    """Recall@1 of the raw-pixel nearest neighbour per scope ({} when it was not computed)."""
    baseline = (metrics or {}).get("pixel_baseline") or {}
    return {scope: entry["recall@1"] for scope, entry in baseline.items()
            if entry.get("recall@1") is not None}


def format_recall(recall: Dict[str, float]) -> str:
    return ", ".join(f"{scope} {value:.3f}" for scope, value in recall.items()
                     if value is not None)


def format_recall_intervals(recall: Dict[str, float], metrics: Dict[str, Any]) -> str:
    """"scope value [lo, hi]" per scope: Recall@1 against the whole gallery with its interval."""
    marked = mark(metrics.get("approximate_intervals") or {}, "recall@1")
    return ", ".join(f"{scope} {value:.3f}{_interval(_ci(metrics, scope))}{marked}"
                     for scope, value in recall.items() if value is not None)


def format_verification(metrics: Dict[str, Any]) -> List[str]:
    """The 1:1 view at the global threshold: FNMR and FMR per scope with intervals, then the FMR
    differential and the skewed error ratio ("inf" for an unbounded end, "no interval" for a
    figure without one)."""
    verification = metrics.get("verification") or {}
    approximate = metrics.get("approximate_intervals") or {}
    if verification.get("threshold") is None:
        return []
    lines = [f"1:1        threshold {verification['threshold']:.4f} "
             f"(target FMR {verification['target_fmr']:g})"]
    for scope, entry in verification.items():
        if isinstance(entry, dict) and "fnmr" in entry:
            lines.append(f"  {scope:<10} FNMR {_figure(entry['fnmr'], entry.get('fnmr_ci'))}"
                         f"{mark(approximate, 'fnmr')}  "
                         f"FMR {_figure(entry['fmr'], entry.get('fmr_ci'), 5)}{mark(approximate, 'fmr')}")
    ratios = [f"{label} {_figure(verification[key], verification.get(f'{key}_ci'), 2)}"
              f"{mark(approximate, key)}"
              for key, label in (("fmr_differential", "FMR differential"),
                                 ("skewed_error_ratio", "skewed error ratio"))
              if key in verification]
    if ratios:
        lines.append(f"  {', '.join(ratios)}")
    return lines + format_approximate(metrics)


def format_approximate(metrics: Dict[str, Any]) -> List[str]:
    """One line per interval marked approximate (metrics.json's `approximate_intervals`)."""
    return [f"  {APPROXIMATE_MARK} {figure}: {why}"
            for figure, why in (metrics.get("approximate_intervals") or {}).items()]


def _figure(value, interval, digits: int = 4) -> str:
    """"value [lo, hi]"; "-" without a value; "value (no interval)" without an interval."""
    if value is None:
        return "-"
    shown = gate_lib.number_text(value, digits)
    return f"{shown} {gate_lib.interval_text(interval, digits)}" if interval else f"{shown} (no interval)"


def format_advisories(metrics: Dict[str, Any]) -> List[str]:
    """One line per advisory (gate.advisories: a 1:1 figure beyond its level while its rule is
    off); they never change the verdict."""
    return [f"not gated  {advisory['message']}" for advisory in metrics.get("advisories") or []]


def read_operating_point(run: Dict[str, Any]) -> Optional[Tuple[str, Dict[str, Any]]]:
    """("shipped", the pushed model's operating point) when the run pushed one, else
    ("evaluated", the evaluation's), else None."""
    places = [("shipped", run.get("pushed_to") and os.path.join(run["pushed_to"],
                                                                operating_point.ASSET)),
              ("evaluated", run.get("evaluation_uri") and os.path.join(run["evaluation_uri"],
                                                                       operating_point.FILE))]
    for where, path in places:
        text = _read_text(path) if path else None
        if text is not None:
            return where, operating_point.loads(text, source=path)
    return None


def format_show(run: Dict[str, Any]) -> str:
    lines = [f"run        {run['run_id']} (started {run['started']})",
             f"model      {run['model_id']} {run['model_uri'] or ''} (Trainer {run['trainer']})",
             f"blessed    {_yes_no(run['blessed'])}",
             f"pushed     {_yes_no(run['pushed'])} {run['pushed_to'] or ''}",
             f"report     {run['report'] or '-'}"]
    metrics = read_metrics(run)
    if metrics:
        lines.append(f"recall@1   {format_recall_intervals(run['recall_at_1'] or {}, metrics)}")
        lines.append("           (whole gallery, 95 % interval over identities)")
        pixels = pixel_recall_at_1(metrics)
        if pixels:
            lines.append(f"raw pixels {format_recall(pixels)}")
        lines += format_verification(metrics)
        lines += format_advisories(metrics)
        approximate = metrics.get("approximate_intervals") or {}
        for verdict in metrics["verdicts"]:
            lines.append(f"  {'PASS' if verdict['passed'] else 'FAIL'}  {verdict['message']}"
                         f"{verdict_mark(approximate, verdict)}")
    shipped = read_operating_point(run)
    if shipped:
        where, point = shipped
        lines.append(f"{where:<10} " + "\n".join(operating_point.summary_lines(point)))
        if run.get("evaluation_id") and point["evaluation"].get("uri") == run["evaluation_uri"]:
            lines.append(f"  evaluation artifact: {run['evaluation_id']} (ML Metadata)")
    if run["failed_nodes"]:
        lines.append(f"failed     {', '.join(n for n in run['failed_nodes'] if n)}")
    return "\n".join(lines)


def outcome_text(config: configs.PipelineConfig) -> str:
    """The local runner's closing lines: the newest run's Recall@1, verdict, report and pushed
    model, and how to review runs ("" before any run)."""
    runs = list_runs(open_store(config.metadata_path))
    if not runs:
        return ""
    run = runs[-1]
    lines = [f"\nRun {run['run_id']} finished."]
    if run["recall_at_1"]:
        lines.append(f"Recall@1 on unseen identities: {format_recall(run['recall_at_1'])}")
        pixels = pixel_recall_at_1(read_metrics(run))
        if pixels:
            lines.append(f"Raw-pixel nearest neighbour:    {format_recall(pixels)}")
        lines.append(f"Blessed: {'yes' if run['blessed'] else 'no'}")
        lines.append(f"Report: {run['report']}")
    if run["pushed"]:
        lines.append(f"Pushed model: {run['pushed_to']}")
        if run["tflite_uri"]:
            lines.append(f"TFLite models: {run['tflite_uri']}")
    elif run["pushed"] is not None:
        lines.append(f"Nothing pushed (the model was not blessed); serving dir: "
                     f"{config.serving_model_dir}")
    lines.append(f"Review runs: python -m tools.review --metadata {config.metadata_path} list")
    return "\n".join(lines)
