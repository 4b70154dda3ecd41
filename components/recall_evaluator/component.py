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
from typing import Any, Dict, List, Optional, Union

import numpy as np
import tensorflow as tf
from absl import logging
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.artifacts import crop_side, split_files
from components.recall_evaluator import gate as gate_lib
from components.recall_evaluator import report
from core.recall import recall_at_k

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
    }


def serving_model_dir(model: types.Artifact) -> str:
    return os.path.join(model.uri, "Format-Serving")


def embed_split(model_dir: str, files: List[str], batch_size: int) -> Dict[str, np.ndarray]:
    """Embeds serialized raw Examples with the model's serving signature."""
    embed = tf.saved_model.load(model_dir).signatures[SERVING_SIGNATURE]
    spec = {"label": tf.io.FixedLenFeature([1], tf.int64),
            "group": tf.io.FixedLenFeature([1], tf.string)}
    embeddings, labels, groups = [], [], []
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch_size)
    for serialized in dataset:
        embeddings.append(embed(examples=serialized)["embedding"].numpy())
        parsed = tf.io.parse_example(serialized, spec)
        labels.append(parsed["label"].numpy()[:, 0])
        groups.append(parsed["group"].numpy()[:, 0])
    return {"embeddings": np.concatenate(embeddings), "labels": np.concatenate(labels),
            "groups": np.array([g.decode("utf-8") for g in np.concatenate(groups)])}


def pixel_split(files: List[str], batch_size: int) -> Dict[str, Any]:
    """The transformed crops as flat pixel vectors (downsampled only if over the memory budget)."""
    size = crop_side(files)
    spec = {"image": tf.io.FixedLenFeature([size, size, 3], tf.float32),
            "label": tf.io.FixedLenFeature([], tf.int64),
            "group": tf.io.FixedLenFeature([], tf.string)}
    count = sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))
    factor = 1
    while count * (size // factor) ** 2 * 3 > PIXEL_BUDGET_FLOATS and size // factor > 8:
        factor *= 2
    pixels, labels, groups = [], [], []
    for serialized in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch_size):
        parsed = tf.io.parse_example(serialized, spec)
        images = parsed["image"]
        if factor > 1:
            images = tf.nn.avg_pool2d(images, factor, factor, "VALID")
        pixels.append(tf.reshape(images, [tf.shape(images)[0], -1]).numpy())
        labels.append(parsed["label"].numpy())
        groups.append(parsed["group"].numpy())
    side = size // factor
    return {"embeddings": np.concatenate(pixels), "labels": np.concatenate(labels),
            "groups": np.array([g.decode("utf-8") for g in np.concatenate(groups)]),
            "resolution": f"{side}x{side}x3" + (f" (average-pooled from {size}x{size})"
                                                 if factor > 1 else "")}


def _split_curve(result: Dict[str, Dict], ks) -> Dict[str, Dict[str, float]]:
    return {scope: {str(k): entry[f"recall@{k}"] for k in ks} for scope, entry in result.items()}


def _pick(result: Dict[str, Dict], ks) -> Dict[str, Dict]:
    keep = {"n_queries", "n_skipped"} | {f"recall@{k}" for k in ks}
    return {scope: {k: v for k, v in entry.items() if k in keep}
            for scope, entry in result.items()}


def evaluate(candidate: Dict[str, np.ndarray], config: gate_lib.GateConfig,
             baseline: Optional[Dict[str, np.ndarray]] = None,
             pixels: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """All numbers, thresholds, deltas and verdicts of one evaluation (no I/O)."""
    curve_ks = sorted(set(CURVE_KS) | set(config.ks))

    def recall(embedded):
        return recall_at_k(embedded["embeddings"], embedded["labels"], embedded["groups"],
                           ks=curve_ks)

    candidate_full = recall(candidate)
    baseline_full = recall(baseline) if baseline is not None else None
    metrics = {
        "gate_config": config.to_dict(),
        "candidate": _pick(candidate_full, config.ks),
        "baseline": _pick(baseline_full, config.ks) if baseline_full else None,
        "pixel_baseline": None,
        "curves": {"candidate": _split_curve(candidate_full, curve_ks)},
        "thresholds": {scope: config.bar(scope) for scope in candidate_full},
    }
    if baseline_full:
        metrics["curves"]["baseline"] = _split_curve(baseline_full, curve_ks)
    if pixels is not None:
        metrics["pixel_baseline"] = _pick(recall(pixels), config.ks)
        metrics["pixel_baseline_resolution"] = pixels["resolution"]
    metrics["deltas"] = gate_lib.deltas(metrics["candidate"], metrics["baseline"], config.ks)
    metrics["verdicts"] = gate_lib.evaluate_gate(metrics["candidate"], config,
                                                 metrics["baseline"])
    metrics["failed_rules"] = [v["message"] for v in metrics["verdicts"] if not v["passed"]]
    metrics["blessed"] = not metrics["failed_rules"]
    return metrics


class Executor(base_executor.BaseExecutor):

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

        candidate = embed_split(serving_model_dir(model), files, batch_size)
        baseline = (embed_split(serving_model_dir(baseline_model), files, batch_size)
                    if baseline_model is not None else None)
        transformed = input_dict.get("transformed_examples") or []
        pixels = (pixel_split(split_files(transformed[0], split), batch_size)
                  if transformed else None)

        metrics = evaluate(candidate, config, baseline, pixels)
        metrics["split"] = split
        metrics["model"] = {"uri": model.uri, "id": model.id}
        metrics["baseline_model"] = ({"uri": baseline_model.uri, "id": baseline_model.id}
                                     if baseline_model is not None else None)

        evaluation = artifact_utils.get_single_instance(output_dict["evaluation"])
        tf.io.gfile.makedirs(evaluation.uri)
        with tf.io.gfile.GFile(os.path.join(evaluation.uri, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1, sort_keys=True)
        paths = report.write_report(metrics, evaluation.uri)
        recall_at_1 = {scope: entry["recall@1"] for scope, entry in metrics["candidate"].items()}
        evaluation.set_string_custom_property("recall_at_1", json.dumps(recall_at_1,
                                                                        sort_keys=True))
        evaluation.set_int_custom_property("blessed", int(metrics["blessed"]))
        evaluation.set_string_custom_property("report", paths["report"])

        blessing = artifact_utils.get_single_instance(output_dict["blessing"])
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
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

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
            blessing=types.Channel(type=standard_artifacts.ModelBlessing))
        super().__init__(spec=spec)
