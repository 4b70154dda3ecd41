"""Runs the TFX Trainer executor (GenericExecutor -> models.trainer.run_fn) on given artifacts."""
import json
import os

from tfx.components.trainer.executor import GenericExecutor
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

TINY_TRAINING = {"loss": "AngularMargin", "backbone": "small_cnn", "embedding_size": 16,
                 "batch_size": 8, "epochs": 2, "scale": 30.0, "learning_rate": 2e-3,
                 "checkpoint_every_steps": 2}


def split_settings(trainer_settings):
    """Flat Trainer settings (a custom_config) -> the settings tree's model and training sections."""
    from core.settings.model import ModelConfig

    model_keys = ModelConfig.field_types()
    return ({k: v for k, v in trainer_settings.items() if k in model_keys},
            {k: v for k, v in trainer_settings.items() if k not in model_keys})


def _artifact(kind, uri, split_names=None):
    artifact = kind()
    artifact.uri = uri
    if split_names:
        artifact.split_names = json.dumps(split_names)
    return artifact


def run_trainer(transformed_sample, output_dir, custom_config, base_model_uri=None):
    """Returns the Model artifact's URI (serving model in <uri>/Format-Serving)."""
    inputs = {
        "examples": [_artifact(standard_artifacts.Examples,
                               transformed_sample["transformed_examples"], ["train", "eval"])],
        "transform_graph": [_artifact(standard_artifacts.TransformGraph,
                                      transformed_sample["transform_graph"])],
    }
    if base_model_uri:
        inputs["base_model"] = [_artifact(standard_artifacts.Model, base_model_uri)]
    model_uri = os.path.join(output_dir, "model")
    outputs = {"model": [_artifact(standard_artifacts.Model, model_uri)],
               "model_run": [_artifact(standard_artifacts.ModelRun,
                                       os.path.join(output_dir, "model_run", "1"))]}
    from tfx.proto import trainer_pb2

    exec_properties = {
        "run_fn": "models.trainer.run_fn",
        "custom_config": json.dumps(custom_config),
        "train_args": proto_utils.proto_to_json(trainer_pb2.TrainArgs()),
        "eval_args": proto_utils.proto_to_json(trainer_pb2.EvalArgs()),
    }
    GenericExecutor().Do(inputs, outputs, exec_properties)
    return model_uri
