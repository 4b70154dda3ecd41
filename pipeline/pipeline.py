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
from pipeline.beam_options import with_default_runner, with_worker_code, without_tfx_package_args
from pipeline.code_version import code_fingerprint
from pipeline.configs import SETUP_FILE, STAGES, PipelineConfig, VertexTraining, trainer_settings

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
    recipe = config.crop or backbones.crop_recipe(config.model.backbone)
    return {} if recipe == "box" else {"crop": recipe}


def check_config(config: PipelineConfig, replicas: Optional[int] = None) -> None:
    """What the settings tree cannot check by itself, before anything runs (ValueError naming the
    settings): the Trainer's settings against the model code (backbone names, mixed precision, a
    batch that splits over `replicas`), and a crop recipe that does not suit a backbone trained
    from a pretrained network (it would learn on crops it was not made for). Imported models
    (`evaluate_model`) train nothing: their crop is theirs."""
    if config.evaluate_model:
        return
    check_training_settings(trainer_settings(config), replicas)
    needed = backbones.crop_recipe(config.model.backbone)
    if config.crop and needed != "box" and config.crop != needed:
        raise ValueError(f"crop {config.crop!r} does not suit model.backbone "
                         f"{config.model.backbone!r}, which needs the {needed!r} crop: drop the "
                         f"crop setting (the backbone's own is used) or choose another backbone")


def _upto(config: PipelineConfig, stage: str) -> bool:
    return STAGES.index(config.last_stage) >= STAGES.index(stage)


def create_components(config: PipelineConfig, replicas: Optional[int] = None):
    """The pipeline's components up to `config.last_stage`, each built once, in order. The settings
    are checked here, the one time (`check_config`; `replicas`: the Trainer's, when known)."""
    # Unknown or inconsistent settings stop the build, not the Trainer after ingest and Transform.
    check_config(config, replicas)
    example_gen = _example_gen(config)
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
    # The last blessed model: the evaluator's baseline, and a warm start's source.
    latest_blessed = None
    if _upto(config, "evaluate") or config.warm_start == "latest_blessed":
        latest_blessed = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id("latest_blessed_model_resolver")
        components.append(latest_blessed)
    model = _model(config, transform, latest_blessed, components)
    if not _upto(config, "evaluate"):
        return components
    evaluator = RecallEvaluator(
        examples=example_gen.outputs["examples"], model=model,
        baseline_model=latest_blessed.outputs["model"],
        transformed_examples=transform.outputs["transformed_examples"], gate=config.gate,
        code_version=code_fingerprint(CODE_MODULES["RecallEvaluator"]))
    components.append(evaluator)
    if not _upto(config, "push"):
        return components
    pusher = tfx.components.Pusher(
        model=model, model_blessing=evaluator.outputs["blessing"],
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


def _example_gen(config: PipelineConfig) -> FaceExampleGen:
    ingest = config.ingest
    return FaceExampleGen(
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


def _model(config: PipelineConfig, transform, latest_blessed, components: list):
    """The channel of the model the rest of the pipeline evaluates and pushes, its components
    appended to `components`: the model at `config.evaluate_model` (a TFX Importer: a Model
    artifact whose Format-Serving/ holds the SavedModel; no Trainer runs), or the Trainer's, warm
    started from the last blessed model or an imported one when `config.warm_start` says so."""
    if config.evaluate_model:
        imported = tfx.dsl.Importer(source_uri=config.evaluate_model,
                                    artifact_type=tfx.types.standard_artifacts.Model,
                                    reimport=False).with_id("evaluated_model")
        components.append(imported)
        return imported.outputs["result"]
    trainer_inputs = {}
    if config.warm_start == "latest_blessed":
        trainer_inputs["base_model"] = latest_blessed.outputs["model"]
    elif config.warm_start:
        base_model = tfx.dsl.Importer(source_uri=config.warm_start,
                                      artifact_type=tfx.types.standard_artifacts.Model,
                                      reimport=False).with_id("warm_start_model")
        components.append(base_model)
        trainer_inputs["base_model"] = base_model.outputs["model"]
    trainer_config = {**trainer_settings(config),
                      "code_version": code_fingerprint(CODE_MODULES["Trainer"])}
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
    return trainer.outputs["model"]


def _with_resources(components, resources: Dict[str, Any]):
    """Each named node gets its container resources (Kubeflow); an unknown name is an error."""
    by_id = {component.id: component for component in components}
    unknown = sorted(set(resources) - set(by_id))
    if unknown:
        raise ValueError(f"resources for unknown pipeline steps {unknown}; steps: {sorted(by_id)}")
    for node, spec in resources.items():
        by_id[node].with_platform_config(spec)
    return components


def create_pipeline(config: PipelineConfig, metadata_connection_config: Optional[object] = None,
                    replicas: Optional[int] = None) -> tfx_pipeline.Pipeline:
    """The pipeline of `config`; ValueError naming the setting when one is unknown or does not
    fit (checked once, here: `create_components`)."""
    if metadata_connection_config is None and config.metadata_path:
        metadata_connection_config = tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path)
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=_with_resources(create_components(config, replicas), config.resources),
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args(config))


def beam_pipeline_args(config: PipelineConfig) -> List[str]:
    """The Beam args every Beam component gets: `config.beam_pipeline_args` with the default
    runner, and, for workers that are not local processes, the way to the project's code
    (`config.beam_worker_image`, else the checkout's setup.py); for local workers, what spares
    every Beam step TFX's packaging of itself (pipeline/beam_options.py)."""
    args = with_worker_code(with_default_runner(config.beam_pipeline_args),
                            image=config.beam_worker_image, setup_file=SETUP_FILE)
    return [*args, *without_tfx_package_args(args)]
