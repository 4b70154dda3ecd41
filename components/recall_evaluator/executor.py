"""The RecallEvaluator's executor: embeds the eval split with each model, evaluates
(core.evaluation plus the gate's verdicts), and writes the evaluation, the blessing, the report,
the TFMA results, the operating point and the model card."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow as tf
from absl import logging
from tfx import types
from tfx.components.evaluator import executor as tfx_evaluator_executor
from tfx.types import artifact_utils

from components.artifacts import crop_side, split_files
from components.recall_evaluator import beam_embed, gallery, model_card, report, shipping, tfma_results
from components.recall_evaluator import gate as gate_lib
from core import evaluation, features, interval_quality, json_safe

SERVING_SIGNATURE = "serving_default"
PIXEL_BUDGET_FLOATS = 250_000_000    # 1 GB of float32 for the raw-pixel anchor, else downsample


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


def evaluate(candidate: Dict[str, np.ndarray], config: gate_lib.GateConfig,
             baseline: Optional[Dict[str, np.ndarray]] = None,
             pixels: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """All numbers, intervals, thresholds, deltas (core.evaluation.measure) and the gate's verdicts
    and advisories of one evaluation (no I/O)."""
    metrics = evaluation.measure(candidate, config, baseline, pixels)
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

    def _execution_id(self) -> Optional[str]:
        """The id of this execution as TFX's launcher gives it to the executor's context (the ML
        Metadata execution id locally, the task's id under the KFP v2 entrypoint); None without
        one. TFX 1.16-1.21 keep it in the context without a public accessor."""
        value = getattr(self._context, "_unique_id", None) if self._context else None
        return str(value) if value else None

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
                                               evaluation, blessing, model, self._execution_id())
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
