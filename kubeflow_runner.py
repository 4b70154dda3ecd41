"""Compiles the same pipeline for Kubeflow Pipelines (KFP v2 / Vertex AI Pipelines).

    python kubeflow_runner.py --image gcr.io/my-project/ffem-tfx:1.0 \
        --pipeline-root gs://my-bucket/ffem/root --data-root gs://my-bucket/faces \
        --serving-dir gs://my-bucket/ffem/serving --trainer-gpus 1 --output ffem_pipeline.json \
        --beam-args --runner=DataflowRunner --project=my-project --region=europe-west4 \
                    --temp_location=gs://my-bucket/tmp --experiments=use_runner_v2

Writes the pipeline spec (JSON); with --submit it also starts a run, on a KFP endpoint (--endpoint)
or on Vertex AI Pipelines (--vertex-project, --region), and prints the run's link. Settings use the
local runner's syntax (pipeline/overrides.py) over the production preset. The image, resources,
multi-node training, caching and Dataflow workers: docs/kubeflow.md; the spec's helpers:
pipeline/kubeflow.py.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional

from pipeline import configs, kubeflow, overrides

DEFAULT_OUTPUT = "ffem_pipeline.json"
CONTAINER_REPO_ROOT = "/pipeline"     # where the Dockerfile puts the repository


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="container image built from Dockerfile")
    parser.add_argument("--pipeline-root", help="gs://... pipeline root (required, or in --config)")
    parser.add_argument("--data-root", help="gs://... holding the face lists (required, or in --config)")
    parser.add_argument("--image-root", default=None, help="default: <data-root>/images")
    parser.add_argument("--serving-dir", help="gs://... push destination (required, or in --config)")
    parser.add_argument("--pipeline-name", help=f"default: {configs.PIPELINE_NAME}")
    resources = parser.add_argument_group(
        "resources (each step's container; the Trainer's per node with --trainer-workers)")
    resources.add_argument("--trainer-gpus", type=int, default=0, help="GPUs for the Trainer")
    resources.add_argument("--gpu-type", default="NVIDIA_TESLA_T4")
    resources.add_argument("--trainer-cpus", type=float, default=8.0)
    resources.add_argument("--trainer-memory-gb", type=float, default=32.0)
    resources.add_argument("--evaluator-gpus", type=int, default=0,
                           help="GPUs for the RecallEvaluator (it embeds the eval split)")
    resources.add_argument("--evaluator-cpus", type=float, default=4.0)
    resources.add_argument("--evaluator-memory-gb", type=float, default=16.0)
    resources.add_argument("--resources", nargs="+", default=[], metavar="STEP=cpu=N,memory=GB,gpus=N",
                           help="any other step's container, e.g. Transform=cpu=8,memory=32 "
                                "TFLiteExporter=cpu=4,memory=16")
    vertex = parser.add_argument_group("Vertex AI (multi-node training, submission)")
    vertex.add_argument("--trainer-workers", type=int, default=1, help="> 1: the Trainer as a Vertex "
                        "AI custom job on N nodes (--trainer-gpus each; --vertex-project, --region)")
    vertex.add_argument("--trainer-machine-type", default="n1-standard-8")
    vertex.add_argument("--vertex-project", default=None, help="Google Cloud project")
    vertex.add_argument("--region", default=None, help="Vertex AI region, e.g. europe-west4")
    vertex.add_argument("--service-account", default=None,
                        help="service account the Vertex jobs run as")
    submit = parser.add_argument_group("submission (default: compile only)")
    submit.add_argument("--submit", action="store_true", help="after compiling, start a run: on "
                        "--endpoint (a KFP API), else on Vertex AI Pipelines")
    submit.add_argument("--endpoint", default=None, help="KFP API endpoint, e.g. http://host:8888")
    submit.add_argument("--run-name", default=None)
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
    base = configs.preset("production", metadata_path=None, beam_pipeline_args=[])
    config = overrides.apply(base, layers,
                             f"--config {args.config}" if args.config else "command line")
    # Read inside the container: the schema as the image holds it.
    config.schema_path = os.path.join(CONTAINER_REPO_ROOT, "schema", "schema.pbtxt")
    # Beam workers that are not local processes (Dataflow) run in the pipeline's image too.
    config.beam_worker_image = args.image
    config.resources = kubeflow.step_resources(args)
    if args.trainer_workers > 1:
        if not (args.vertex_project and args.region):
            raise ValueError("--trainer-workers > 1 runs the Trainer as a Vertex AI custom job: "
                             "give --vertex-project and --region")
        config.vertex_training = configs.VertexTraining(
            project=args.vertex_project, region=args.region, image=args.image,
            workers=args.trainer_workers, machine_type=args.trainer_machine_type,
            accelerator_type=args.gpu_type if args.trainer_gpus else None,
            accelerator_count=args.trainer_gpus, service_account=args.service_account)
        del config.resources["Trainer"]      # the custom job's machines, not the step's pod
    return config


def run(argv: Optional[List[str]] = None) -> str:
    args = parse_args(argv)
    try:
        config = build_config(args)
        if args.submit and not (args.endpoint or (args.vertex_project and args.region)):
            raise ValueError("--submit needs --endpoint (KFP) or --vertex-project and --region "
                             "(Vertex AI Pipelines)")
        from pipeline.pipeline import create_pipeline

        replicas = (args.trainer_gpus or 1) * args.trainer_workers
        # Every setting is checked here, once.
        pipeline = create_pipeline(config, replicas=replicas if replicas > 1 or args.trainer_gpus
                                   else None)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    beam_args = pipeline.beam_pipeline_args
    spec_path = kubeflow.compile_spec(pipeline, args.image, args.output, cache_ingest=args.ingest_cache)
    print(f"Pipeline spec written to {spec_path}")
    print(f"Beam args of every step (with how workers get the code): {' '.join(beam_args)}")
    if args.submit:
        link = kubeflow.submit(spec_path, args.endpoint, args.vertex_project, args.region,
                               args.run_name, args.service_account)
        print(f"Run submitted: {link}")
    return spec_path


if __name__ == "__main__":
    run()
    sys.exit(0)
