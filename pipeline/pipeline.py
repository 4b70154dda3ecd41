"""`create_pipeline`: the one factory both runners (local and Kubeflow) build the pipeline with."""
from __future__ import annotations

from typing import Optional

from tfx import v1 as tfx
from tfx.orchestration import pipeline as tfx_pipeline

from components.face_example_gen.component import FaceExampleGen
from pipeline.configs import STAGES, PipelineConfig


def create_components(config: PipelineConfig):
    if config.last_stage not in STAGES:
        raise ValueError(f"last_stage must be one of {STAGES}, got {config.last_stage!r}")
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
        fingerprint_images=ingest.fingerprint_images)
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=config.schema_path)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    return [example_gen, statistics_gen, schema_gen, example_validator]


def create_pipeline(config: PipelineConfig,
                    metadata_connection_config: Optional[object] = None) -> tfx_pipeline.Pipeline:
    if metadata_connection_config is None and config.metadata_path:
        metadata_connection_config = tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path)
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=create_components(config),
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_pipeline_args))
