"""Compiles the same pipeline for Kubeflow Pipelines (KFP v2 / Vertex AI Pipelines).

    python kubeflow_runner.py --image gcr.io/my-project/ffem-tfx:1.0 \
        --pipeline-root gs://my-bucket/ffem/root --data-root gs://my-bucket/faces \
        --serving-dir gs://my-bucket/ffem/serving --trainer-gpus 1 --output ffem_pipeline.json \
        --beam-args --runner=DataflowRunner --project=my-project --region=europe-west4 \
                    --temp_location=gs://my-bucket/tmp --experiments=use_runner_v2

Writes the pipeline spec (JSON) to submit with the KFP client or Vertex AI; nothing is run here. The
image is built from the repository's Dockerfile (tensorflow/tfx:1.16.0 + this package).

Caching: KFP decides cache hits before a container runs, from the list files' fingerprint only, so
it cannot see replaced images. FaceExampleGen therefore always runs on Kubeflow (its output feeds
every later step); pass --ingest-cache when images are never changed in place (new images arrive
under new paths with new lists), to let KFP cache the whole pipeline.

Settings use the local runner's syntax (pipeline/overrides.py): `--config FILE.json` of
PipelineConfig overrides, `--training KEY=JSON ...`, `--gate KEY=JSON ...`; a flag wins over the
file. --image, --pipeline-root, --data-root and --serving-dir may come from the file too
("pipeline_root", "serving_model_dir", "ingest": {"data_root": ...}), the image only as a flag.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional

from pipeline import configs, overrides

DEFAULT_OUTPUT = "ffem_pipeline.json"
CONTAINER_REPO_ROOT = "/pipeline"     # where the Dockerfile puts the repository
INGEST_TASK = "FaceExampleGen"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="container image built from Dockerfile")
    parser.add_argument("--pipeline-root", default=None,
                        help="gs://... pipeline root (required, here or in --config)")
    parser.add_argument("--data-root", default=None,
                        help="gs://... holding the face lists (required, here or in --config)")
    parser.add_argument("--image-root", default=None, help="default: <data-root>/images")
    parser.add_argument("--serving-dir", default=None,
                        help="gs://... push destination (required, here or in --config)")
    parser.add_argument("--pipeline-name", default=None,
                        help=f"default: {configs.PIPELINE_NAME}")
    parser.add_argument("--trainer-gpus", type=int, default=0, help="GPUs for the Trainer")
    parser.add_argument("--gpu-type", default="NVIDIA_TESLA_T4")
    parser.add_argument("--trainer-cpus", type=float, default=8.0)
    parser.add_argument("--trainer-memory-gb", type=float, default=32.0)
    parser.add_argument("--ingest-cache", action="store_true",
                        help="let KFP cache FaceExampleGen (only for never-modified images)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="pipeline spec JSON to write")
    parser.add_argument("--beam-args", nargs=argparse.REMAINDER, default=None,
                        help="Beam args for the distributed runner (Dataflow, Flink, ...); "
                             "must come last")
    overrides.add_arguments(parser)
    return parser.parse_args(argv)


def flag_overrides(args: argparse.Namespace) -> Dict[str, Any]:
    """This command's flags as an overrides dict (pipeline/overrides.py): only flags given."""
    ingest = {key: getattr(args, key) for key in ("data_root", "image_root")
              if getattr(args, key)}
    top = {key: getattr(args, flag) for flag, key in (
        ("pipeline_name", "pipeline_name"), ("pipeline_root", "pipeline_root"),
        ("serving_dir", "serving_model_dir")) if getattr(args, flag)}
    if args.beam_args is not None:
        top["beam_pipeline_args"] = list(args.beam_args)
    return overrides.merge({"ingest": ingest, **top}, overrides.from_arguments(args))


# Settings without a usable default on Kubeflow: flag, overrides key.
_REQUIRED = (("--pipeline-root", "pipeline_root"), ("--serving-dir", "serving_model_dir"),
             ("--data-root", "ingest.data_root"))


def build_config(args: argparse.Namespace) -> configs.PipelineConfig:
    """The production preset without Beam args or metadata path, then --config FILE, then the
    flags: each layer wins over the one before."""
    file_layer = overrides.load_file(args.config) if args.config else {}
    flags = flag_overrides(args)
    overrides.check_keys(flags, "command line")
    layers = overrides.merge(file_layer, flags)
    for flag, key in _REQUIRED:
        section, _, name = key.rpartition(".")
        if name not in (layers.get(section, {}) if section else layers):
            raise ValueError(f"{flag} is required (or {key!r} in --config)")
    base = configs.PipelineConfig(metadata_path=None, beam_pipeline_args=[])
    config = overrides.apply(base, layers,
                             f"--config {args.config}" if args.config else "command line")
    # Read inside the container: the schema as the image holds it.
    config.schema_path = os.path.join(CONTAINER_REPO_ROOT, "schema", "schema.pbtxt")
    config.trainer_resources = trainer_resources(args)
    return config


def trainer_resources(args: argparse.Namespace):
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec
    resources = spec(cpu_limit=args.trainer_cpus, memory_limit=args.trainer_memory_gb)
    if args.trainer_gpus:
        resources.accelerator.CopyFrom(spec.AcceleratorConfig(type=args.gpu_type,
                                                              count=args.trainer_gpus))
    return resources


def disable_task_cache(spec_path: str, task: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    tasks = spec.get("pipelineSpec", spec)["root"]["dag"]["tasks"]
    matching = [name for name in tasks if name == task or name.startswith(task)]
    if not matching:
        raise KeyError(f"no task {task!r} in {spec_path}")
    for name in matching:
        tasks[name].setdefault("cachingOptions", {})["enableCache"] = False
    with open(spec_path, "w") as f:
        json.dump(spec, f, indent=2, sort_keys=True)


def run(argv: Optional[List[str]] = None) -> str:
    args = parse_args(argv)
    try:
        config = build_config(args)
        overrides.check_training(config.training, replicas=args.trainer_gpus or None)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    from tfx import v1 as tfx

    from pipeline.pipeline import create_pipeline

    output_dir, output_file = os.path.split(os.path.abspath(args.output))
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=args.image),
        output_dir=output_dir, output_filename=output_file)
    runner.run(create_pipeline(config), write_out=True)
    if not args.ingest_cache:
        disable_task_cache(os.path.join(output_dir, output_file), INGEST_TASK)
    print(f"Pipeline spec written to {os.path.join(output_dir, output_file)}")
    return os.path.join(output_dir, output_file)


if __name__ == "__main__":
    run()
    sys.exit(0)
