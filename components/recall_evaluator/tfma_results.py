"""The evaluation in TFMA's own format, so TFX's tools read it: `tfma.load_eval_result(uri)`,
`tfma.load_validation_result(uri)` and the Fairness Indicators viewer.

Why written from the project's computation rather than computed through TFX's Evaluator with a custom
metric: Recall@K ranks every query against the whole eval gallery and the 1:1 view scores every pair of
eval images. Both are functions of the whole split, not sums of per-example terms, so a TFMA metric
combiner would have to gather every embedding in one accumulator and rerun the same exact, blocked
computation (and the identity bootstrap) inside it. Keeping that computation in one place (core/) and
writing TFMA's protos from its results gives TFMA's readers the same numbers that decide the gate.

Files in the evaluation artifact (TFMA's own names, so its loaders find them):
  eval_config.json                      an EvalRun: the two model specs, slicing by `group`
  metrics-00000-of-00001.tfrecord       one MetricsForSlice per slice
  validations-00000-of-00001.tfrecord   one ValidationResult: validation_ok == the blessing
Slices: "overall" is TFMA's empty slice key (shown as "Overall"); group g is the slice (group, g).
Models: the candidate is "candidate", the baseline "baseline"; candidate - baseline is written as the
candidate's `is_diff` metrics, TFMA's convention for a model comparison, so `load_eval_result(uri)`
shows the candidate and `load_eval_result(uri, model_name="baseline")` the baseline.
Metric names are metrics.json's keys with `@` written `_at_` (`recall_at_1`, `recall_at_1_within`,
`fnmr`, `tar_at_far=1e-3`; see `tfma_name`). Intervals go in each value's ConfidenceInterval
(lower and upper bound), which TFMA's viewers show as a bounded value. The 1:1 rates at the gate's
threshold are also written under Fairness Indicators' names
(`fairness_indicators_metrics/false_negative_rate@<threshold>`, `.../false_positive_rate@...`):
FNMR is the false negative rate on genuine pairs, FMR the false positive rate on impostor pairs.
Unbounded figures (a skewed error ratio of +inf, an interval ending at +inf) are written as the
infinite doubles they are; NaN (undefined) figures are left out.

Validation: one failure per failed verdict, on the verdict's slice. `metric_key` names the metric the
verdict judged as written above (`recall_at_1` or `recall_at_1_within` for min_recall, the same with
`is_diff` for max_drop, `fnmr` for max_fnmr, `fmr_differential` and `skewed_error_ratio` on the
overall slice for the ratio rules, `n_identities` for min_group_identities); `metric_value` is the
number the verdict compared with its threshold (the value, or the interval end its test judged), so
it always lies on the failing side. The threshold is a minimum rule's `value_threshold.lower_bound`
(min_recall; max_drop, whose threshold is the smallest allowed change -max_drop) and a maximum
rule's `value_threshold.upper_bound` (max_fnmr, max_fmr_ratio, max_fnmr_ratio).
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from core.features import GROUP, OVERALL

CANDIDATE = "candidate"
BASELINE = "baseline"
FAIRNESS_PREFIX = "fairness_indicators_metrics"
METRICS_FILE = "metrics-00000-of-00001.tfrecord"
VALIDATIONS_FILE = "validations-00000-of-00001.tfrecord"
EVAL_CONFIG_FILE = "eval_config.json"
# TensorBoard's Fairness Indicators plugin finds an evaluation through a summary, under this tag and
# plugin name, whose value is the evaluation's directory.
FAIRNESS_PLUGIN = "fairness_indicators"
FAIRNESS_LOG_DIR = "fairness_indicators"

# name -> (value, (lower, upper) or None)
SliceMetrics = Dict[str, Tuple[float, Optional[Sequence[float]]]]


def fairness_names(threshold: float) -> Tuple[str, str]:
    """The Fairness Indicators names of FNMR and FMR at the gate's threshold."""
    return (f"{FAIRNESS_PREFIX}/false_negative_rate@{threshold:.4f}",
            f"{FAIRNESS_PREFIX}/false_positive_rate@{threshold:.4f}")


def _number(value: Any) -> bool:
    """A number TFMA can hold: finite or infinite, never NaN."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _interval(entry: Mapping[str, Any], name: str) -> Optional[Sequence[float]]:
    interval = entry.get(f"{name}_ci")
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and all(map(_number, interval)):
        return [float(interval[0]), float(interval[1])]
    return None


def tfma_name(name: str) -> str:
    """A metrics.json key as a TFMA metric name: `@` becomes `_at_` (`recall@1` -> `recall_at_1`,
    `tar@far=1e-3` -> `tar_at_far=1e-3`). TFMA's viewers read `name@x` as the metric `name` at the
    decision threshold `x`, which only the Fairness Indicators rates are."""
    return name.replace("@", "_at_")


def entry_metrics(entry: Optional[Mapping[str, Any]]) -> SliceMetrics:
    """Every number (NaN left out) of one scope's entry, under its TFMA name, with its `<key>_ci`
    interval when there is one."""
    result: SliceMetrics = {}
    for name, value in (entry or {}).items():
        if name.endswith("_ci") or not _number(value):
            continue
        result[tfma_name(name)] = (float(value), _interval(entry, name))
    return result


def model_slices(metrics: Mapping[str, Any], model: str) -> Dict[str, SliceMetrics]:
    """Per scope, the recall and 1:1 numbers of one model (`candidate` or `baseline`)."""
    recall = metrics.get(model) or {}
    verification = (metrics.get("verification") if model == CANDIDATE
                    else metrics.get("baseline_verification")) or {}
    per_scope = verification.get("scopes", verification)
    scopes = sorted(set(recall) | {s for s, v in per_scope.items() if isinstance(v, Mapping)})
    threshold = verification.get("threshold")
    slices = {}
    for scope in scopes:
        values = entry_metrics(recall.get(scope))
        rates = entry_metrics(per_scope.get(scope))
        values.update(rates)
        if _number(threshold):
            fnr, fpr = fairness_names(threshold)
            if "fnmr" in rates:
                values[fnr] = rates["fnmr"]
            if "fmr" in rates:
                values[fpr] = rates["fmr"]
        slices[scope] = values
    if OVERALL in slices:   # the global numbers (threshold, FMR differential, skewed error ratio)
        slices[OVERALL].update(entry_metrics(verification))
    return slices


def slice_key(scope: str):
    from tensorflow_model_analysis.proto import metrics_for_slice_pb2

    key = metrics_for_slice_pb2.SliceKey()
    if scope != OVERALL:
        key.single_slice_keys.add(column=GROUP, bytes_value=scope.encode("utf-8"))
    return key


def _metrics_for_slices(per_model: Mapping[str, Mapping[str, SliceMetrics]],
                        deltas: Mapping[str, SliceMetrics]) -> List[Any]:
    from tensorflow_model_analysis.proto import metrics_for_slice_pb2

    scopes = sorted({s for slices in per_model.values() for s in slices} | set(deltas),
                    key=lambda s: (s != OVERALL, s))
    records = []
    for scope in scopes:
        record = metrics_for_slice_pb2.MetricsForSlice(slice_key=slice_key(scope))
        entries = [(model, False, per_model[model].get(scope, {})) for model in per_model]
        entries.append((CANDIDATE, True, deltas.get(scope, {})))
        for model, is_diff, values in entries:
            for name, (value, interval) in sorted(values.items()):
                item = record.metric_keys_and_values.add()
                item.key.name, item.key.model_name, item.key.is_diff = name, model, is_diff
                item.value.double_value.value = value
                if interval is not None:
                    item.confidence_interval.lower_bound.double_value.value = interval[0]
                    item.confidence_interval.upper_bound.double_value.value = interval[1]
        records.append(record)
    return records


def _validation_result(metrics: Mapping[str, Any]):
    """validation_ok == the blessing; one failure per failed rule, on the slice it is about."""
    from tensorflow_model_analysis.proto import validation_result_pb2

    result = validation_result_pb2.ValidationResult(validation_ok=bool(metrics.get("blessed")))
    by_scope: Dict[str, Any] = {}
    failed = [v for v in metrics.get("verdicts") or [] if not v.get("passed")]
    for verdict in failed:
        scope = verdict.get("scope") or OVERALL
        if scope not in by_scope:
            by_scope[scope] = result.metric_validations_per_slice.add(slice_key=slice_key(scope))
        failure = by_scope[scope].failures.add(message=str(verdict.get("message", "")))
        failure.metric_key.name = tfma_name(str(verdict.get("statistic") or verdict.get("rule", "")))
        failure.metric_key.model_name = CANDIDATE
        failure.metric_key.is_diff = bool(verdict.get("difference"))
        judged = verdict.get("judged", verdict.get("value"))
        if _number(judged):
            failure.metric_value.double_value.value = float(judged)
        threshold, bound = verdict.get("threshold"), verdict.get("bound")
        if _number(threshold) and bound in ("lower", "upper"):
            limits = failure.metric_threshold.value_threshold
            (limits.lower_bound if bound == "lower" else limits.upper_bound).value = float(threshold)
    if not result.validation_ok and not failed:
        # Not blessed with no failed rule listed (e.g. nothing could be evaluated): say so.
        entry = result.metric_validations_per_slice.add(slice_key=slice_key(OVERALL))
        entry.failures.add(message="; ".join(metrics.get("failed_rules") or [])
                           or "not blessed: no rule passed")
    return result


def _eval_run(candidate_uri: str, baseline_uri: Optional[str], data_uri: str) -> str:
    from google.protobuf import json_format
    from tensorflow_model_analysis import version as tfma_version
    from tensorflow_model_analysis.proto import config_pb2

    config = config_pb2.EvalConfig()
    config.model_specs.add(name=CANDIDATE, signature_name="serving_default")
    locations = {CANDIDATE: candidate_uri}
    if baseline_uri:
        config.model_specs.add(name=BASELINE, signature_name="serving_default", is_baseline=True)
        locations[BASELINE] = baseline_uri
    config.slicing_specs.add()                       # overall
    config.slicing_specs.add(feature_keys=[GROUP])   # one slice per group
    run = config_pb2.EvalRun(eval_config=config, version=tfma_version.VERSION,
                             data_location=data_uri, file_format="tfrecords",
                             model_locations=locations)
    return json_format.MessageToJson(run)


def _write_records(path: str, records: Iterable[Any]) -> None:
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record.SerializeToString())


def write(metrics: Mapping[str, Any], output_dir: str, candidate_uri: str = "",
          baseline_uri: Optional[str] = None, data_uri: str = "") -> Dict[str, str]:
    """Writes the three TFMA files for `metrics` (the evaluator's metrics.json dict) into
    `output_dir`; returns their paths."""
    per_model = {CANDIDATE: model_slices(metrics, CANDIDATE)}
    if metrics.get(BASELINE):
        per_model[BASELINE] = model_slices(metrics, BASELINE)
    deltas = {scope: entry_metrics(entry) for scope, entry in (metrics.get("deltas") or {}).items()}
    paths = {"eval_config": os.path.join(output_dir, EVAL_CONFIG_FILE),
             "metrics": os.path.join(output_dir, METRICS_FILE),
             "validations": os.path.join(output_dir, VALIDATIONS_FILE)}
    tf.io.gfile.makedirs(output_dir)
    with tf.io.gfile.GFile(paths["eval_config"], "w") as f:
        f.write(_eval_run(candidate_uri, baseline_uri if BASELINE in per_model else None, data_uri))
    _write_records(paths["metrics"], _metrics_for_slices(per_model, deltas))
    _write_records(paths["validations"], [_validation_result(metrics)])
    return paths


def write_fairness_summary(output_dir: str, step: int = 0) -> str:
    """A TensorBoard event file under `output_dir/fairness_indicators` that points the Fairness
    Indicators plugin at the TFMA results in `output_dir` (the summary the plugin's own
    `summary_v2.FairnessIndicators` writes, made here without importing the plugin, which the
    pipeline's containers do not install). Returns the log directory."""
    from tensorboard.compat.proto import summary_pb2

    log_dir = os.path.join(output_dir, FAIRNESS_LOG_DIR)
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=FAIRNESS_PLUGIN))
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        tf.summary.write(tag=FAIRNESS_PLUGIN, tensor=tf.constant(output_dir), step=step,
                         metadata=metadata)
    writer.close()
    return log_dir
