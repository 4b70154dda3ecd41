"""RecallEvaluator: per-group Recall@K of a model on unseen identities, and the release gate.

Inputs: raw `examples` (the eval split is embedded with each model's own `serving_default`, so a
baseline trained with another Transform is still evaluated correctly), the candidate `model`, an
optional `baseline_model` (the latest blessed model), optional `transformed_examples` for the
raw-pixel anchor. Outputs: `evaluation` (metrics.json, report.html, PNG charts) and `blessing`
(custom properties blessed 1/0, current_model_id, baseline_model_id; BLESSED / NOT_BLESSED file).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import tensorflow as tf
from absl import logging
from tfx import types
from tfx.components.evaluator import executor as tfx_evaluator_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

import system as kfp_types
from components.artifacts import crop_side, split_files
from components.recall_evaluator import beam_embed, gallery, model_card, report, shipping, tfma_results
from components.recall_evaluator import gate as gate_lib
from core import features, interval_quality, intervals, json_safe, rate_intervals
from core import verification as verification_lib
from core.features import OVERALL
from core.recall import QueryRanks, recall_at_k

CURVE_KS = (1, 2, 5, 10, 20)
SERVING_SIGNATURE = "serving_default"
PIXEL_BUDGET_FLOATS = 250_000_000    # 1 GB of float32 for the raw-pixel anchor, else downsample


class RecallEvaluatorSpec(types.ComponentSpec):
    PARAMETERS = {
        "gate_config": ExecutionParameter(type=str),     # JSON of gate.GateConfig
        "split": ExecutionParameter(type=str),
        "batch_size": ExecutionParameter(type=int),
        # Hash of the evaluator code (pipeline/code_version.py): changed code is a cache miss.
        "code_version": ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "model": ChannelParameter(type=standard_artifacts.Model),
        "baseline_model": ChannelParameter(type=standard_artifacts.Model, optional=True),
        "transformed_examples": ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }
    OUTPUTS = {
        "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
        # For the Kubeflow Pipelines UI: the report as a page, Recall@1 per group as metrics.
        "report": ChannelParameter(type=kfp_types.HTML),
        "recall_metrics": ChannelParameter(type=kfp_types.Metrics),
        "model_card": ChannelParameter(type=kfp_types.HTML),     # model_card.html, for the UI
    }


def serving_model_dir(model: types.Artifact) -> str:
    return os.path.join(model.uri, "Format-Serving")


def embed_split(model_dirs: Dict[str, str], files: List[str], batch_size: int, make_pipeline,
                work_dir: str) -> Dict[str, Dict[str, np.ndarray]]:
    """Each named model's embeddings of the serialized raw Examples in `files` (its serving
    signature), from one Beam pipeline of `make_pipeline` (beam_embed.embed_split: the order
    contract, and where the work happens)."""
    return beam_embed.embed_split(model_dirs, files, batch_size, make_pipeline, work_dir,
                                  signature=SERVING_SIGNATURE)


def pixel_split(files: List[str], batch_size: int) -> Dict[str, Any]:
    """The transformed crops as flat pixel vectors (downsampled only if over the memory budget):
    the stored uint8 crops decoded as the models see them (preprocessing.decode_crops, [0, 1])."""
    from models import preprocessing

    size = crop_side(files)
    spec = {features.IMAGE: tf.io.FixedLenFeature([], tf.string),
            features.LABEL: tf.io.FixedLenFeature([], tf.int64),
            features.GROUP: tf.io.FixedLenFeature([], tf.string)}
    count = sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))
    factor = 1
    while count * (size // factor) ** 2 * 3 > PIXEL_BUDGET_FLOATS and size // factor > 8:
        factor *= 2
    pixels, labels, groups = [], [], []
    for serialized in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch_size):
        parsed = tf.io.parse_example(serialized, spec)
        images = preprocessing.decode_crops(parsed[features.IMAGE], size)
        if factor > 1:
            images = tf.nn.avg_pool2d(images, factor, factor, "VALID")
        pixels.append(tf.reshape(images, [tf.shape(images)[0], -1]).numpy())
        labels.append(parsed[features.LABEL].numpy())
        groups.append(parsed[features.GROUP].numpy())
    side = size // factor
    return {"embeddings": np.concatenate(pixels), "labels": np.concatenate(labels),
            "groups": np.array([g.decode("utf-8") for g in np.concatenate(groups)]),
            "resolution": f"{side}x{side}x3" + (f" (average-pooled from {size}x{size})"
                                                 if factor > 1 else "")}


def _split_curve(result: Dict[str, Dict], ks, suffix: str = "") -> Dict[str, Dict[str, float]]:
    return {scope: {str(k): entry[f"recall@{k}{suffix}"] for k in ks} for scope, entry in result.items()}


def _pick(result: Dict[str, Dict], ks) -> Dict[str, Dict]:
    keep = {"n_queries", "n_skipped", "n_identities", "n_queries_within", "n_identities_within"}
    keep |= {f"recall@{k}{suffix}" for k in ks for suffix in ("", "_within")}
    return {scope: {k: v for k, v in entry.items() if k in keep}
            for scope, entry in result.items()}


def _statistic_sums(ranks: QueryRanks, verification: verification_lib.VerificationResult,
                    units: np.ndarray, n_units: int, ks
                    ) -> Tuple[intervals.UnitSums, intervals.UnitSums, List[Tuple[str, str]]]:
    """Numerators and denominators (core.intervals.UnitSums of M columns) of every statistic that
    gets an interval, and each column's (scope, key): recall@k and recall@k_within (hits /
    answerable queries, per unit), fnmr and fmr (core/verification.py's sums, pairs of two
    identities weighted by the product of their weights)."""
    numerators, denominators, columns = [], [], []
    for scope, members in ranks.scopes():
        within = ranks.mixed if scope == OVERALL else ranks.within   # as QueryRanks.summary
        for suffix, ranked in (("", ranks.mixed), ("_within", within)):
            found = ranked[members]
            answerable = found >= 0
            owners = units[members][answerable]
            queries = np.bincount(owners, minlength=n_units).astype(np.float64)
            for k in ks:
                numerators.append(intervals.UnitSums(np.bincount(
                    owners, weights=(found[answerable] < k).astype(np.float64), minlength=n_units)))
                denominators.append(intervals.UnitSums(queries))
                columns.append((scope, f"recall@{k}{suffix}"))
        for key in ("fnmr", "fmr"):
            top, bottom = verification.unit_sums[scope][key]
            numerators.append(top)
            denominators.append(bottom)
            columns.append((scope, key))
    return (intervals.UnitSums.columns(numerators), intervals.UnitSums.columns(denominators),
            columns)


def _measure(embedded: Dict[str, np.ndarray], config: gate_lib.GateConfig, curve_ks, weights,
             units) -> Dict[str, Any]:
    """One model on the eval split: recall (whole gallery and within group), 1:1 verification and
    the bootstrap replicates of every statistic, from one ranking/scoring pass."""
    ranks, verification = verification_lib.ranks_and_verification(embedded["embeddings"], embedded["labels"],
                                                 embedded["groups"], ks=curve_ks,
                                                 target_fmr=config.target_fmr)
    numerators, denominators, columns = _statistic_sums(ranks, verification, units,
                                                        weights.shape[1], config.ks)
    return {"full": ranks.summary(curve_ks), "verification": verification,
            "replicates": intervals.ratio_replicates(weights, numerators, denominators),
            "clusters": rate_intervals.unit_clusters(denominators), "columns": columns}


def _with_intervals(measured: Dict[str, Any], config: gate_lib.GateConfig) -> Tuple[Dict, Dict]:
    """metrics.json's recall entries and verification summary of one model, with `<key>_ci`;
    `measured["entries"]`: the entry holding each column's rate and trials (for `_deltas`)."""
    recall = _pick(measured["full"], config.ks)
    summary = {key: value for key, value in measured["verification"].summary.items()}
    # Percentile intervals widened for few errors (misses): core.rate_intervals, core.small_counts.
    columns = measured["columns"]
    entries = {(scope, key): (summary if key in rate_intervals.TRIALS else recall)[scope]
               for scope, key in columns}
    widened, effects = rate_intervals.widened_intervals(columns, entries, measured["replicates"],
                                                        measured["clusters"], config.confidence)
    for (scope, key), ci in zip(columns, widened):
        entries[scope, key][f"{key}_ci"] = ci
    measured["entries"] = entries
    # The ratios over the gated groups, each with its interval from the same replicates.
    gated = [scope for scope in recall if scope != OVERALL and config.gated(scope)]
    summary["ratio_groups"] = gated
    summary["fmr_differential"] = verification_lib.fmr_differential([summary[g]["fmr"] for g in gated],
                                                   config.target_fmr)
    summary["skewed_error_ratio"] = verification_lib.skewed_error_ratio([summary[g]["fnmr"] for g in gated])
    index = {column: i for i, column in enumerate(measured["columns"])}
    reps = measured["replicates"]
    fmr = np.stack([reps[:, index[(g, "fmr")]] for g in gated], axis=1) if gated else None
    fnmr = np.stack([reps[:, index[(g, "fnmr")]] for g in gated], axis=1) if gated else None
    summary["fmr_differential_ci"] = summary["skewed_error_ratio_ci"] = None
    if gated:
        # A maximum (over a minimum) of group rates: core.rate_intervals (bias-corrected).
        summary["fmr_differential_ci"] = rate_intervals.fmr_differential_interval(
            _max_defined(fmr) / config.target_fmr, summary["fmr_differential"], config.confidence)
        summary["skewed_error_ratio_ci"] = rate_intervals.skewed_error_ratio_interval(
            _skewed_error_ratios(fnmr), summary["skewed_error_ratio"], columns, entries, reps,
            measured["clusters"], effects, gated, config.confidence)
    return recall, summary


def _max_defined(replicates: np.ndarray) -> np.ndarray:
    """Per resample, the largest defined (not NaN) value of [resamples, groups]; NaN if none."""
    defined = ~np.isnan(replicates)
    return np.where(defined.any(axis=1),
                    np.max(np.where(defined, replicates, -np.inf), axis=1), np.nan)


def _skewed_error_ratios(fnmr: np.ndarray) -> np.ndarray:
    """Per resample, verification.skewed_error_ratio of the groups' FNMRs [resamples, groups]:
    max / min over the defined ones, 1.0 when both are 0, +inf when only the minimum is (kept in
    the percentiles: the interval may end at +inf), NaN when no group is defined."""
    defined = ~np.isnan(fnmr)
    high = _max_defined(fnmr)
    low = np.where(defined.any(axis=1), np.min(np.where(defined, fnmr, np.inf), axis=1), np.nan)
    ratios = intervals.ratio(high, low)
    ratios[(low == 0) & (high == 0)] = 1.0
    return ratios


def _deltas(candidate: Dict[str, Any], baseline: Optional[Dict[str, Any]],
            config: gate_lib.GateConfig) -> Dict[str, Dict[str, Any]]:
    """candidate - baseline per scope for recall@k, recall@k_within, fnmr and fmr (at each model's
    own operating threshold), each with the interval of the paired bootstrap (the same resampled
    identities, and for 1:1 the same product weights, for both models); None without a baseline."""
    index = {column: i for i, column in enumerate(candidate["columns"])}
    result = {}
    for scope, entry in candidate["full"].items():
        result[scope] = {}
        keys = [f"recall@{k}{suffix}" for k in config.ks for suffix in ("", "_within")]
        for key in keys + ["fnmr", "fmr"]:
            if key in ("fnmr", "fmr"):
                mine = candidate["verification"].summary[scope][key]
                theirs = (baseline["verification"].summary[scope][key]
                          if baseline is not None else None)
            else:
                mine = entry.get(key)
                theirs = baseline["full"][scope].get(key) if baseline is not None else None
            both = mine is not None and theirs is not None
            result[scope][key] = mine - theirs if both else None
            result[scope][f"{key}_ci"] = intervals.percentile_interval(
                candidate["replicates"][:, index[(scope, key)]]
                - baseline["replicates"][:, index[(scope, key)]], config.confidence) if both else None
            if both:     # few misses: core.rate_intervals.paired_interval
                result[scope][f"{key}_ci"] = rate_intervals.paired_interval(
                    (scope, key), mine, theirs, candidate, baseline, index,
                    result[scope][f"{key}_ci"], config.confidence)
    return result


def _same_images(candidate: Dict[str, np.ndarray], other: Dict[str, np.ndarray], name: str):
    for key in ("labels", "groups"):
        if not np.array_equal(np.asarray(candidate[key]), np.asarray(other[key])):
            raise ValueError(f"{name} must be the candidate's eval images in the same order: its "
                             f"{key} differ")


def evaluate(candidate: Dict[str, np.ndarray], config: gate_lib.GateConfig,
             baseline: Optional[Dict[str, np.ndarray]] = None,
             pixels: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """All numbers, intervals, thresholds, deltas and verdicts of one evaluation (no I/O).

    Each model is ranked and scored once (core/verification.py's single blocked pass plus the
    within-group passes); every interval comes from resampling identities over sums per identity
    and per pair of identities (core/intervals.py; the 1:1 pairs of two identities weighted by the
    product of their draws, core/verification.py), with the same resamples for the candidate and
    the baseline."""
    curve_ks = sorted(set(CURVE_KS) | set(config.ks))
    if baseline is not None:
        _same_images(candidate, baseline, "the baseline's embedded split")
    units, unit_groups = intervals.identity_units(candidate["labels"], candidate["groups"])
    weights = intervals.resample_weights(unit_groups, config.bootstrap_resamples, config.bootstrap_seed)
    measured = _measure(candidate, config, curve_ks, weights, units)
    measured_baseline = (_measure(baseline, config, curve_ks, weights, units)
                         if baseline is not None else None)
    candidate_recall, candidate_verification = _with_intervals(measured, config)
    metrics = {
        "gate_config": config.to_dict(),
        "candidate": candidate_recall,
        "baseline": None,
        "pixel_baseline": None,
        "curves": {"candidate": _split_curve(measured["full"], curve_ks),
                   "candidate_within": _split_curve(measured["full"], curve_ks, "_within")},
        "thresholds": {scope: config.bar(scope) for scope in measured["full"]},
        "ungated": [scope for scope in measured["full"] if not config.gated(scope)],
        "verification": candidate_verification,
        "baseline_verification": None,
        "confidence": config.confidence,
    }
    if measured_baseline is not None:
        metrics["baseline"], metrics["baseline_verification"] = _with_intervals(measured_baseline,
                                                                                config)
        metrics["curves"]["baseline"] = _split_curve(measured_baseline["full"], curve_ks)
        metrics["curves"]["baseline_within"] = _split_curve(measured_baseline["full"], curve_ks,
                                                            "_within")
    if pixels is not None:
        metrics["pixel_baseline"] = _pick(recall_at_k(pixels["embeddings"], pixels["labels"],
                                                      pixels["groups"], ks=config.ks), config.ks)
        metrics["pixel_baseline_resolution"] = pixels["resolution"]
    metrics["deltas"] = _deltas(measured, measured_baseline, config)
    metrics["verdicts"] = gate_lib.evaluate_gate(
        metrics["candidate"], config, metrics["deltas"] if baseline is not None else None,
        metrics["verification"])
    metrics["failed_rules"] = [v["message"] for v in metrics["verdicts"] if not v["passed"]]
    metrics["blessed"] = not metrics["failed_rules"]
    metrics["advisories"] = gate_lib.advisories(metrics["verification"], config)   # never a verdict
    metrics["approximate_intervals"] = interval_quality.approximate_intervals()    # results.md
    return metrics


def ui_metrics(metrics: Dict[str, Any]) -> Dict[str, float]:
    """The numbers a pipeline UI shows as the run's metrics: per scope Recall@1 with its interval,
    FNMR and FMR at the gate's threshold, and the verdict."""
    result: Dict[str, float] = {"blessed": float(bool(metrics["blessed"]))}
    for scope, entry in metrics["candidate"].items():
        if entry.get("recall@1") is not None:
            result[f"recall@1/{scope}"] = float(entry["recall@1"])
        interval = entry.get("recall@1_ci")
        if interval and None not in interval:
            result[f"recall@1_lower/{scope}"] = float(interval[0])
            result[f"recall@1_upper/{scope}"] = float(interval[1])
    for scope, entry in (metrics.get("verification") or {}).items():
        if isinstance(entry, dict):
            for rate in ("fnmr", "fmr"):
                if entry.get(rate) is not None:
                    result[f"{rate}/{scope}"] = float(entry[rate])
    return result


def write_ui_artifacts(metrics: Dict[str, Any], report_path: str, output_dict) -> None:
    """The report page (a copy of report.html as the HTML artifact's file) and the metrics."""
    for page in output_dict.get("report") or []:
        with tf.io.gfile.GFile(report_path) as f:
            html = f.read()
        tf.io.gfile.makedirs(os.path.dirname(page.uri))
        with tf.io.gfile.GFile(page.uri, "w") as f:
            f.write(html)
    for artifact in output_dict.get("recall_metrics") or []:
        for name, value in ui_metrics(metrics).items():
            artifact.set_float_custom_property(name, value)


class Executor(tfx_evaluator_executor.Executor):
    """The RecallEvaluator's executor: embeds the eval split, evaluates, writes the blessing.

    It subclasses TFX's Evaluator executor (and overrides all it does) for one reason: on Kubeflow
    Pipelines v2 / Vertex AI, artifacts are named by resource names, and TFX's container entrypoint
    turns a blessing's integer `current_model_id` / `baseline_model_id` into the Model's resource
    name only for subclasses of that executor (`kubeflow_v2_run_executor`). The compiled
    latest-blessed resolver matches the Model by that name, so without it no baseline would ever
    resolve there. Under LocalDagRunner the ids stay MLMD's integers.
    """

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        config = gate_lib.GateConfig.from_dict(json.loads(exec_properties["gate_config"]))
        split = exec_properties["split"]
        batch_size = int(exec_properties["batch_size"])
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        model = artifact_utils.get_single_instance(input_dict["model"])
        baselines = input_dict.get("baseline_model") or []
        baseline_model = baselines[0] if baselines else None
        if baseline_model is not None and baseline_model.id == model.id:
            baseline_model = None    # re-evaluating the blessed model itself: nothing to compare
        files = split_files(examples, split)

        # One Beam pipeline on the pipeline's runner embeds the split for both models; the
        # records go through a scratch folder of the evaluation artifact (workers can write there).
        model_dirs = {"candidate": serving_model_dir(model)}
        if baseline_model is not None:
            model_dirs["baseline"] = serving_model_dir(baseline_model)
        embedded = embed_split(model_dirs, files, batch_size, self._make_beam_pipeline,
                               artifact_utils.get_single_instance(output_dict["evaluation"]).uri)
        candidate, baseline = embedded["candidate"], embedded.get("baseline")
        transformed = input_dict.get("transformed_examples") or []
        pixels = (pixel_split(split_files(transformed[0], split), batch_size)
                  if transformed else None)

        metrics = evaluate(candidate, config, baseline, pixels)
        metrics["split"] = split
        metrics["model"] = {"uri": model.uri, "id": model.id}
        metrics["baseline_model"] = ({"uri": baseline_model.uri, "id": baseline_model.id}
                                     if baseline_model is not None else None)
        # issue 22: the error gallery, from these embeddings (keys into metrics.json, crops by
        # the candidate's Transform into the report).
        gallery_html = gallery.write_gallery(metrics, candidate, config.report_examples,
                                             serving_model_dir(model), files)

        evaluation = artifact_utils.get_single_instance(output_dict["evaluation"])
        tf.io.gfile.makedirs(evaluation.uri)
        with tf.io.gfile.GFile(os.path.join(evaluation.uri, "metrics.json"), "w") as f:
            json_safe.dump(metrics, f, indent=1, sort_keys=True)
        paths = report.write_report(metrics, evaluation.uri, gallery_html)
        # The same numbers in TFMA's format (tfma.load_eval_result / load_validation_result) and a
        # summary that points TensorBoard's Fairness Indicators at them.
        tfma_results.write(metrics, evaluation.uri, candidate_uri=model.uri,
                           baseline_uri=baseline_model.uri if baseline_model is not None else None,
                           data_uri=examples.uri)
        tfma_results.write_fairness_summary(evaluation.uri)
        write_ui_artifacts(metrics, paths["report"], output_dict)
        recall_at_1 = {scope: entry["recall@1"] for scope, entry in metrics["candidate"].items()}
        evaluation.set_string_custom_property("recall_at_1", json.dumps(recall_at_1,
                                                                        sort_keys=True))
        evaluation.set_int_custom_property("blessed", int(metrics["blessed"]))
        evaluation.set_string_custom_property("report", paths["report"])

        blessing = artifact_utils.get_single_instance(output_dict["blessing"])
        # issue 22: the operating point and the model card travel with the blessing to the Pusher.
        point = shipping.write_operating_point(metrics, candidate["paths"], examples, split,
                                               evaluation, blessing, model)
        model_card.write_model_card(metrics, point,
                                    model_card.model_config_of(serving_model_dir(model)),
                                    candidate["groups"], examples.uri, [evaluation.uri, blessing.uri],
                                    output_dict.get("model_card") or [])
        blessing.set_int_custom_property("blessed", int(metrics["blessed"]))
        blessing.set_string_custom_property("current_model", model.uri)
        blessing.set_int_custom_property("current_model_id", model.id)
        if baseline_model is not None:
            blessing.set_string_custom_property("baseline_model", baseline_model.uri)
            blessing.set_int_custom_property("baseline_model_id", baseline_model.id)
        tf.io.gfile.makedirs(blessing.uri)
        marker = "BLESSED" if metrics["blessed"] else "NOT_BLESSED"
        with tf.io.gfile.GFile(os.path.join(blessing.uri, marker), "w") as f:
            f.write("")

        summary = ", ".join(f"{s}={v:.3f}" for s, v in recall_at_1.items() if v is not None)
        if metrics["blessed"]:
            logging.info("RecallEvaluator: model %d BLESSED (Recall@1 %s); report %s", model.id,
                         summary, paths["report"])
        else:
            logging.warning("RecallEvaluator: model %d NOT blessed. Failed rules: %s. Report %s",
                            model.id, "; ".join(metrics["failed_rules"]), paths["report"])


class RecallEvaluator(base_component.BaseComponent):
    SPEC_CLASS = RecallEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, examples: types.BaseChannel, model: types.BaseChannel,
                 baseline_model: Optional[types.BaseChannel] = None,
                 transformed_examples: Optional[types.BaseChannel] = None,
                 gate: Union[gate_lib.GateConfig, Dict[str, Any], None] = None,
                 split: str = "eval", batch_size: int = 256, code_version: Optional[str] = None):
        if not isinstance(gate, gate_lib.GateConfig):
            gate = gate_lib.GateConfig.from_dict(dict(gate or {}))
        spec = RecallEvaluatorSpec(
            examples=examples, model=model, baseline_model=baseline_model,
            transformed_examples=transformed_examples,
            gate_config=json.dumps(gate.to_dict(), sort_keys=True), split=split,
            batch_size=batch_size, code_version=code_version,
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            report=types.Channel(type=kfp_types.HTML),
            recall_metrics=types.Channel(type=kfp_types.Metrics),
            model_card=types.Channel(type=kfp_types.HTML))
        super().__init__(spec=spec)
