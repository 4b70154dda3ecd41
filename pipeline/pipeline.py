"""`create_pipeline`: the one factory both runners (local and Kubeflow) build the pipeline with."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec
from tfx.orchestration import pipeline as tfx_pipeline

from components.face_example_gen.component import FaceExampleGen
from components.guarded_pusher import executor as guarded_pusher
from components.recall_evaluator.component import RecallEvaluator
from components.tflite_exporter.component import TFLiteExporter
from models import backbones
from models.trainer import check_training_settings
from pipeline.beam_options import with_default_runner, with_worker_code
from pipeline.code_version import code_fingerprint
from pipeline.configs import SETUP_FILE, STAGES, PipelineConfig, VertexTraining

PREPROCESSING_FN = "models.preprocessing.preprocessing_fn"
RUN_FN = "models.trainer.run_fn"
# The module each component runs, whose import closure is its `code_version` (pipeline/code_version.py).
CODE_MODULES = {
    "FaceExampleGen": FaceExampleGen.__module__,
    "Transform": PREPROCESSING_FN.rpartition(".")[0],
    "Trainer": RUN_FN.rpartition(".")[0],
    "RecallEvaluator": RecallEvaluator.__module__,
    "Pusher": guarded_pusher.__name__,
    "TFLiteExporter": TFLiteExporter.__module__,
}


def vertex_training_settings(vertex: VertexTraining) -> Dict[str, Any]:
    """The custom_config keys of TFX's Vertex Trainer extension: a custom job in `vertex.project` /
    `vertex.region` with a chief and workers (`VertexTraining.worker_pool_specs`)."""
    extension = tfx.extensions.google_cloud_ai_platform
    job_spec: Dict[str, Any] = {"worker_pool_specs": vertex.worker_pool_specs()}
    if vertex.service_account:
        job_spec["service_account"] = vertex.service_account
    return {extension.ENABLE_VERTEX_KEY: True, extension.VERTEX_REGION_KEY: vertex.region,
            extension.TRAINING_ARGS_KEY: {"project": vertex.project, "job_spec": job_spec}}


def crop_setting(config: PipelineConfig) -> Dict[str, str]:
    """The Transform's crop recipe setting: `config.crop`, else the one the Trainer's backbone needs;
    empty for the default box crop (so existing Transform runs keep their cache)."""
    recipe = config.crop or backbones.crop_recipe(config.training.get("backbone", ""))
    return {} if recipe == "box" else {"crop": recipe}


def _upto(config: PipelineConfig, stage: str) -> bool:
    return STAGES.index(config.last_stage) >= STAGES.index(stage)


def create_components(config: PipelineConfig):
    if config.last_stage not in STAGES:
        raise ValueError(f"last_stage must be one of {STAGES}, got {config.last_stage!r}")
    # Unknown or inconsistent Trainer settings stop the build, not the Trainer after ingest and
    # Transform have run.
    check_training_settings(config.training)
    ingest = config.ingest
    example_gen = FaceExampleGen(
        input_base=ingest.data_root,
        image_root=ingest.image_root,
        list_files=ingest.list_files,
        identity_split=ingest.identity_split,
        max_bad_fraction=ingest.max_bad_fraction,
        max_image_pixels=ingest.max_image_pixels,
        max_image_bytes=ingest.max_image_bytes,
        box_tolerance=ingest.box_tolerance,
        list_format=ingest.list_format,
        fingerprint_images=ingest.fingerprint_images,
        offset_labels=ingest.offset_labels,
        code_version=code_fingerprint(CODE_MODULES["FaceExampleGen"]))
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=config.schema_path)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    components = [example_gen, statistics_gen, schema_gen, example_validator]
    if not _upto(config, "transform"):
        return components
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={"image_size": config.image_size, **crop_setting(config),
                       "code_version": code_fingerprint(CODE_MODULES["Transform"])},
        # Raw statistics come from StatisticsGen; statistics over 37k floats per image are not
        # worth their time here.
        disable_statistics=True)
    components.append(transform)
    if not _upto(config, "train"):
        return components
    if config.evaluate_model:
        return _evaluate_imported(config, components, example_gen, transform)
    trainer_inputs = {}
    latest_blessed = None
    if _upto(config, "evaluate") or config.warm_start == "latest_blessed":
        latest_blessed = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id("latest_blessed_model_resolver")
        components.append(latest_blessed)
    if config.warm_start == "latest_blessed":
        trainer_inputs["base_model"] = latest_blessed.outputs["model"]
    elif config.warm_start:
        base_model = tfx.dsl.Importer(source_uri=config.warm_start,
                                      artifact_type=tfx.types.standard_artifacts.Model,
                                      reimport=False).with_id("warm_start_model")
        components.append(base_model)
        trainer_inputs["base_model"] = base_model.outputs["model"]
    trainer_config = {**config.training, "code_version": code_fingerprint(CODE_MODULES["Trainer"])}
    trainer_class = tfx.components.Trainer
    if config.vertex_training is not None:
        trainer_class = tfx.extensions.google_cloud_ai_platform.Trainer
        trainer_config.update(vertex_training_settings(config.vertex_training))
    trainer = trainer_class(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        custom_config=trainer_config,
        **trainer_inputs)
    components.append(trainer)
    if not _upto(config, "evaluate"):
        return components
    evaluator = RecallEvaluator(
        examples=example_gen.outputs["examples"], model=trainer.outputs["model"],
        baseline_model=latest_blessed.outputs["model"],
        transformed_examples=transform.outputs["transformed_examples"], gate=config.gate,
        code_version=code_fingerprint(CODE_MODULES["RecallEvaluator"]))
    components.append(evaluator)
    if not _upto(config, "push"):
        return components
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=config.serving_model_dir)),
        custom_executor_spec=executor_spec.ExecutorClassSpec(guarded_pusher.Executor),
        custom_config={"code_version": code_fingerprint(CODE_MODULES["Pusher"])})
    components.append(pusher)
    if config.tflite_levels:
        components.append(TFLiteExporter(
            pushed_model=pusher.outputs["pushed_model"],
            transformed_examples=transform.outputs["transformed_examples"],
            levels=json.dumps(sorted(set(config.tflite_levels))),
            code_version=code_fingerprint(CODE_MODULES["TFLiteExporter"])))
    return components


def _evaluate_imported(config: PipelineConfig, components, example_gen, transform):
    """ingest -> Transform -> RecallEvaluator of the model at `config.evaluate_model` (a TFX
    Importer: a Model artifact whose Format-Serving/ holds the SavedModel), against the latest
    blessed model; the Pusher only when the last stage is "push"."""
    if not _upto(config, "evaluate"):
        return components
    imported = tfx.dsl.Importer(source_uri=config.evaluate_model,
                                artifact_type=tfx.types.standard_artifacts.Model,
                                reimport=False).with_id("evaluated_model")
    latest_blessed = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    evaluator = RecallEvaluator(
        examples=example_gen.outputs["examples"], model=imported.outputs["result"],
        baseline_model=latest_blessed.outputs["model"],
        transformed_examples=transform.outputs["transformed_examples"], gate=config.gate,
        code_version=code_fingerprint(CODE_MODULES["RecallEvaluator"]))
    components += [imported, latest_blessed, evaluator]
    if _upto(config, "push"):
        components.append(tfx.components.Pusher(
            model=imported.outputs["result"], model_blessing=evaluator.outputs["blessing"],
            push_destination=tfx.proto.PushDestination(
                filesystem=tfx.proto.PushDestination.Filesystem(
                    base_directory=config.serving_model_dir)),
            custom_executor_spec=executor_spec.ExecutorClassSpec(guarded_pusher.Executor),
            custom_config={"code_version": code_fingerprint(CODE_MODULES["Pusher"])}))
    return components


def _with_resources(components, resources: Dict[str, Any]):
    """Each named node gets its container resources (Kubeflow); an unknown name is an error."""
    by_id = {component.id: component for component in components}
    unknown = sorted(set(resources) - set(by_id))
    if unknown:
        raise ValueError(f"resources for unknown pipeline steps {unknown}; steps: {sorted(by_id)}")
    for node, spec in resources.items():
        by_id[node].with_platform_config(spec)
    return components


def create_pipeline(config: PipelineConfig,
                    metadata_connection_config: Optional[object] = None) -> tfx_pipeline.Pipeline:
    if metadata_connection_config is None and config.metadata_path:
        metadata_connection_config = tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path)
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=_with_resources(create_components(config), config.resources),
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args(config))


def beam_pipeline_args(config: PipelineConfig) -> List[str]:
    """The Beam args every Beam component gets: `config.beam_pipeline_args` with the default
    runner, and, for workers that are not local processes, the way to the project's code
    (`config.beam_worker_image`, else the checkout's setup.py; pipeline/beam_options.py)."""
    return with_worker_code(with_default_runner(config.beam_pipeline_args),
                            image=config.beam_worker_image, setup_file=SETUP_FILE)
