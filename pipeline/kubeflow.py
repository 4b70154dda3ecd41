"""Helpers of the Kubeflow runner's spec: each step's container resources, and the ingest task
that KFP must not serve from its cache (it decides hits from the list files only, so it cannot see
images replaced in place; docs/kubeflow.md)."""
from __future__ import annotations

import argparse
import json
import os
from typing import Any, Dict, Optional

from core.settings.base import refuse_unknown

INGEST_TASK = "FaceExampleGen"


def resource_spec(cpus: float, memory_gb: float, gpus: int = 0, gpu_type: str = "NVIDIA_TESLA_T4"):
    """A KFP container ResourceSpec (what `with_platform_config` takes)."""
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec
    resources = spec(cpu_limit=cpus, memory_limit=memory_gb)
    if gpus:
        resources.accelerator.CopyFrom(spec.AcceleratorConfig(type=gpu_type, count=gpus))
    return resources


def parse_resources(text: str, gpu_type: str):
    """"STEP=cpu=8,memory=32,gpus=1" -> (STEP, ResourceSpec); an error names what is wrong."""
    step, sep, values = text.partition("=")
    fields = dict(item.partition("=")[::2] for item in values.split(",") if item)
    known = {"cpu", "memory", "gpus"}
    if not sep or not step or not fields or not all(fields.values()):
        raise ValueError(f"--resources {text!r}: expected STEP=cpu=N,memory=GB,gpus=N (any of "
                         f"{sorted(known)})")
    refuse_unknown(fields, known, f"--resources {text!r}")     # names the closest known key
    try:
        return step, resource_spec(float(fields.get("cpu", 0)), float(fields.get("memory", 0)),
                                   int(fields.get("gpus", 0)), gpu_type)
    except ValueError:
        raise ValueError(f"--resources {text!r}: numbers expected") from None


def step_resources(args: argparse.Namespace) -> Dict[str, Any]:
    resources = {
        "Trainer": resource_spec(args.trainer_cpus, args.trainer_memory_gb, args.trainer_gpus,
                                 args.gpu_type),
        "RecallEvaluator": resource_spec(args.evaluator_cpus, args.evaluator_memory_gb,
                                         args.evaluator_gpus, args.gpu_type),
    }
    resources.update(parse_resources(text, args.gpu_type) for text in args.resources)
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


def compile_spec(pipeline, image: str, output: str, cache_ingest: bool = False) -> str:
    """The pipeline's KFP v2 spec written to `output` (KubeflowV2DagRunner, every step on `image`);
    the ingest task uncached unless `cache_ingest`. Returns the spec's path."""
    from tfx import v1 as tfx

    output_dir, output_file = os.path.split(os.path.abspath(output))
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=output_dir, output_filename=output_file)
    runner.run(pipeline, write_out=True)
    spec_path = os.path.join(output_dir, output_file)
    if not cache_ingest:
        disable_task_cache(spec_path, INGEST_TASK)
    return spec_path


def submit(spec_path: str, endpoint: Optional[str], project: Optional[str], region: Optional[str],
           run_name: Optional[str] = None, service_account: Optional[str] = None) -> str:
    """Starts a run of the spec on a KFP endpoint, else on Vertex AI Pipelines; the run's link."""
    from pipeline import submit as submission

    if endpoint:
        return submission.submit_to_kfp(spec_path, endpoint, run_name=run_name,
                                        service_account=service_account)
    return submission.submit_to_vertex(spec_path, project, region, service_account=service_account)
