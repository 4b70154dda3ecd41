"""Runs the project's executors the way Kubeflow Pipelines v2 / Vertex AI Pipelines runs them.

What comes from the compiled pipeline spec (never retyped here): each component's container arguments
(executor class path, Beam arguments, the pre-cache-check driver when there is one), its parameter
constants, its input and output artifact types, and the resolver's artifact queries. What stands in for
Vertex: `VertexStore`, a list of artifacts named like Vertex ML Metadata resources
(`projects/.../metadataStores/default/artifacts/<n>`), with their metadata as the executors' output
files report it, and a reader of the resolver's filter expressions. The executors run in-process
through TFX's own container entrypoint (`kubeflow_v2_run_executor`), from an executor-input JSON shaped
like Vertex's: artifacts carry resource names, URIs and metadata, never metadata-store ids.
"""
from __future__ import annotations

import itertools
import json
import os
import re
from typing import Any, Dict, List, Optional

RESOURCE_PREFIX = "projects/123456789/locations/us-central1/metadataStores/default/artifacts/"
_PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.artifacts\['(\w+)'\]\.metadata\['(\w+)'\]\}\}")


def compile_spec(tmp_path, *extra_args: str) -> Dict[str, Any]:
    """The pipeline spec `kubeflow_runner.py` writes (its `pipelineSpec` part)."""
    import kubeflow_runner

    output = os.path.join(str(tmp_path), "spec.json")
    kubeflow_runner.run(["--image", "gcr.io/acme/ffem-tfx:1", "--pipeline-root", "gs://acme/root",
                         "--data-root", "gs://acme/faces", "--serving-dir", "gs://acme/serving",
                         "--output", output, *extra_args])
    with open(output) as f:
        return json.load(f)["pipelineSpec"]


def schema_title(artifact_type: Dict[str, Any]) -> str:
    if "schemaTitle" in artifact_type:
        return artifact_type["schemaTitle"]
    import yaml

    return yaml.safe_load(artifact_type["instanceSchema"])["title"]


class VertexStore:
    """Artifacts as Vertex ML Metadata holds them: resource name, schema title, URI, metadata, LIVE,
    in creation order."""

    def __init__(self):
        self.artifacts: List[Dict[str, Any]] = []
        self._numbers = itertools.count(1001)

    def new_name(self) -> str:
        return RESOURCE_PREFIX + str(next(self._numbers))

    def add(self, runtime_artifact: Dict[str, Any]) -> Dict[str, Any]:
        artifact = dict(runtime_artifact)
        artifact.setdefault("metadata", {})
        artifact["state"] = "LIVE"
        self.artifacts.append(artifact)
        return artifact

    def query(self, filter_text: str, inputs: Optional[Dict[str, Dict]] = None) -> Optional[Dict]:
        """The newest artifact matching a resolver filter (`a="b" AND state=LIVE AND
        metadata.k.number_value=1 AND name="{{$.inputs.artifacts['input'].metadata['k']}}"`)."""
        def substitute(match):
            value = (inputs or {})[match.group(1)].get("metadata", {}).get(match.group(2))
            return "" if value is None else str(value)

        terms = [t.strip() for t in _PLACEHOLDER.sub(substitute, filter_text).split(" AND ")]
        for artifact in reversed(self.artifacts):
            if all(_term_matches(term, artifact) for term in terms):
                return artifact
        return None


def _term_matches(term: str, artifact: Dict[str, Any]) -> bool:
    key, _, value = term.partition("=")
    value = value.strip().strip('"')
    if key == "schema_title":
        return schema_title(artifact["type"]) == value
    if key == "state":
        return artifact["state"] == value
    if key == "name":
        return artifact["name"] == value
    match = re.fullmatch(r"metadata\.(\w+)\.(number_value|string_value)", key)
    if match:
        found = artifact["metadata"].get(match.group(1))
        if match.group(2) == "number_value":
            return isinstance(found, (int, float)) and float(found) == float(value)
        return found == value
    raise ValueError(f"filter term not understood: {term!r}")


def resolver_filter(spec: Dict[str, Any], output_key: str) -> str:
    """The compiled artifact query of the resolver step that outputs `output_key`."""
    for executor in spec["deploymentSpec"]["executors"].values():
        queries = executor.get("resolver", {}).get("outputArtifactQueries", {})
        if output_key in queries:
            return queries[output_key]["filter"]
    raise KeyError(f"no resolver query for {output_key!r}")


def run_component(spec: Dict[str, Any], component: str, store: VertexStore, work_dir: str,
                  inputs: Dict[str, Dict[str, Any]], output_uris: Dict[str, str],
                  parameters: Optional[Dict[str, Dict]] = None) -> Dict[str, Dict[str, Any]]:
    """Runs one component's container command in-process; returns its output artifacts as Vertex
    records them (from the executor-output file), after adding them to `store`.

    `inputs`: input key -> a stored artifact (from `store`); `output_uris`: output key -> URI (default
    under `work_dir`). `parameters`: overrides of compiled
    parameter constants, in the spec's Value form (e.g. {"gate_config": {"stringValue": ...}}).

    The component's temporary files go under `work_dir`, as a container's go to its own /tmp:
    what TFX leaves there (the 50 MB package it builds for a Beam step that names no dependency
    flag) is removed with the test's directory."""
    import tempfile

    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor

    definition = spec["components"][component]
    container = spec["deploymentSpec"]["executors"][definition["executorLabel"]]["container"]
    task = spec["root"]["dag"]["tasks"][component]
    input_types = definition.get("inputDefinitions", {}).get("artifacts", {})
    values = {name: value["runtimeValue"]["constantValue"]
              for name, value in task.get("inputs", {}).get("parameters", {}).items()}
    values.update(parameters or {})
    output_file = os.path.join(work_dir, component, "executor_output.json")
    outputs = {}
    for key, output in definition["outputDefinitions"]["artifacts"].items():
        outputs[key] = {"artifacts": [{"name": store.new_name(), "type": output["artifactType"],
                                       "uri": output_uris.get(key) or os.path.join(
                                           work_dir, component, key)}]}
    executor_input = {
        "inputs": {
            "artifacts": {key: {"artifacts": [{
                "name": artifact["name"], "uri": artifact["uri"],
                "metadata": artifact.get("metadata", {}),
                "type": input_types[key]["artifactType"]}]} for key, artifact in inputs.items()},
            "parameters": values,
        },
        "outputs": {"artifacts": outputs, "outputFile": output_file},
    }
    invocation = json.dumps(executor_input)
    pre_cache = container.get("lifecycle", {}).get("preCacheCheck")
    if pre_cache:   # e.g. TFX's file-based ExampleGen driver: span, version, fingerprint
        _run_module(pre_cache["command"], [a.replace("{{$}}", invocation) for a in pre_cache["args"]])
    argv = [a.replace("{{$}}", invocation) for a in container["args"]]
    assert container["command"][-1] == kubeflow_v2_run_executor.__name__, container["command"]
    container_tmp = os.path.join(work_dir, component, "tmp")
    os.makedirs(container_tmp, exist_ok=True)
    saved_tempdir, tempfile.tempdir = tempfile.tempdir, container_tmp
    try:
        kubeflow_v2_run_executor.main(kubeflow_v2_run_executor._parse_flags(argv))
    finally:
        tempfile.tempdir = saved_tempdir
    with open(output_file) as f:
        written = json.load(f)
    result = {}
    for key, listed in written.get("artifacts", {}).items():
        [artifact] = listed["artifacts"]
        [declared] = outputs[key]["artifacts"]
        artifact.setdefault("type", declared["type"])
        artifact.setdefault("uri", declared["uri"])
        result[key] = store.add(artifact)
    return result


def _run_module(command: List[str], args: List[str]) -> None:
    import importlib

    assert command[:2] == ["python", "-m"], command
    module = importlib.import_module(command[2])
    module.main(module._parse_flags(args))
