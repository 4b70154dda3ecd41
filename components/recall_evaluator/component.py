"""RecallEvaluator: per-group Recall@K of a model on unseen identities, and the release gate.

Inputs: raw `examples` (the eval split is embedded with each model's own `serving_default`, so a
baseline trained with another Transform is still evaluated correctly), the candidate `model`, an
optional `baseline_model` (the latest blessed model), optional `transformed_examples` for the
raw-pixel anchor. Outputs: `evaluation` (metrics.json, report.html, PNG charts) and `blessing`
(custom properties blessed 1/0, current_model_id, baseline_model_id; BLESSED / NOT_BLESSED file).
"""
from __future__ import annotations

import json
from typing import Any, Dict, Optional, Union

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts

import system as kfp_types
from components.recall_evaluator import gate as gate_lib
from components.recall_evaluator.executor import Executor
from components.recall_evaluator.spec import RecallEvaluatorSpec


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
