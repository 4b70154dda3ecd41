"""Submitting a compiled pipeline spec: to a Kubeflow Pipelines endpoint, or to Vertex AI Pipelines.

The spec is what `kubeflow_runner.py` writes (a PipelineJob JSON: `pipelineSpec` + `runtimeConfig`).
Both functions return the run's link. Nothing here builds or changes the spec.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, Optional


def _read_job(spec_path: str) -> Dict[str, Any]:
    with open(spec_path) as f:
        job = json.load(f)
    if "pipelineSpec" not in job:
        raise ValueError(f"{spec_path} is not a compiled pipeline job (no 'pipelineSpec')")
    return job


def submit_to_kfp(spec_path: str, endpoint: str, run_name: Optional[str] = None,
                  experiment: Optional[str] = None, service_account: Optional[str] = None) -> str:
    """Creates a run on the KFP v2 endpoint (`kfp.Client(host=endpoint)`); returns its link.

    The KFP client takes a pipeline package (the PipelineSpec as YAML, of which JSON is a subset),
    so the job's `pipelineSpec` is written to a temporary `.yaml` file; the pipeline root comes from
    the job's `runtimeConfig.gcsOutputDirectory`."""
    import kfp

    job = _read_job(spec_path)
    name = job["pipelineSpec"]["pipelineInfo"]["name"]
    with tempfile.TemporaryDirectory() as scratch:
        package = os.path.join(scratch, f"{name}.yaml")
        with open(package, "w") as f:
            json.dump(job["pipelineSpec"], f)
        client = kfp.Client(host=endpoint)
        result = client.create_run_from_pipeline_package(
            package, arguments={}, run_name=run_name or name, experiment_name=experiment or name,
            pipeline_root=job.get("runtimeConfig", {}).get("gcsOutputDirectory"),
            service_account=service_account)
    return f"{endpoint.rstrip('/')}/#/runs/details/{result.run_id}"


def _check_bucket(pipeline_root: Optional[str], project: str, credentials=None):
    """Refuses a gs:// pipeline root whose bucket does not exist (or these credentials cannot
    see), naming it: the Vertex SDK only logs its own check's failure and submits a run that
    fails at its first step."""
    if not pipeline_root or not pipeline_root.startswith("gs://"):
        return
    from google.cloud import storage

    name = pipeline_root[len("gs://"):].split("/")[0]
    client = storage.Client(project=project, credentials=credentials)
    if client.lookup_bucket(name) is None:
        raise ValueError(f"the pipeline root {pipeline_root}: bucket gs://{name} does not exist or "
                         f"is not visible to these credentials; create it or name another "
                         f"--pipeline-root")


def submit_to_vertex(spec_path: str, project: str, region: str,
                     service_account: Optional[str] = None, credentials=None,
                     api_endpoint: Optional[str] = None) -> str:
    """Submits the job to Vertex AI Pipelines in `project` / `region`; returns the console link.

    `credentials` default to the environment's (Application Default Credentials); `api_endpoint`
    is for tests and private endpoints (REST transport)."""
    from google.cloud import aiplatform

    job_spec = _read_job(spec_path)
    pipeline_root = job_spec.get("runtimeConfig", {}).get("gcsOutputDirectory")
    _check_bucket(pipeline_root, project, credentials)
    init: Dict[str, Any] = {"project": project, "location": region}
    if credentials is not None:
        init["credentials"] = credentials
    if api_endpoint:
        init.update(api_endpoint=api_endpoint, api_transport="rest")
    aiplatform.init(**init)
    job = aiplatform.PipelineJob(
        display_name=job_spec["pipelineSpec"]["pipelineInfo"]["name"], template_path=spec_path,
        pipeline_root=pipeline_root,
        enable_caching=None)    # None: each task's own cachingOptions from the spec
    job.submit(service_account=service_account)
    return job._dashboard_uri()
