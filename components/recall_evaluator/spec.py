"""The RecallEvaluator's parameters, inputs and outputs (component.py says what they are)."""
from tfx import types
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

import system as kfp_types


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
