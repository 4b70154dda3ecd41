"""Reading (and, for recovery, repairing) a pipeline's ML Metadata store: the one place that knows
how MLMD connections, node contexts, events and custom properties are spelled.

Used by the recovery of killed runs, the review command, the local runner's progress lines and the
tests. A LocalDagRunner run records each component execution in a context of type "node" named
"<pipeline>.<node id>", and each run in a context of type "pipeline_run".
"""
from __future__ import annotations

import os
from typing import Any, List, Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

Artifact = metadata_store_pb2.Artifact
Event = metadata_store_pb2.Event
Execution = metadata_store_pb2.Execution

_MODES = {
    "read": metadata_store_pb2.SqliteMetadataSourceConfig.READONLY,
    "write": metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE,
    "create": metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE,
}
_OUTPUT_EVENTS = (Event.OUTPUT, Event.DECLARED_OUTPUT, Event.PENDING_OUTPUT)


def open_store(metadata_path: str, mode: str = "read") -> metadata_store.MetadataStore:
    """A store on the SQLite file; `mode` is "read", "write" or "create" (the only one that may
    create the file). A missing file is an error naming it, except in "create" mode."""
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}")
    if mode != "create" and not os.path.exists(metadata_path):
        raise FileNotFoundError(f"no metadata store at {metadata_path}")
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = _MODES[mode]
    return metadata_store.MetadataStore(config)


def node_of(store, execution) -> Optional[str]:
    """The pipeline node id an execution belongs to (None when it has no node context)."""
    for context in store.get_contexts_by_execution(execution.id):
        if context.type == "node":
            return context.name.split(".", 1)[-1]
    return None


def node_executions(store, node_id: str) -> List[Execution]:
    """Executions of one pipeline node, oldest first."""
    result = []
    for context in store.get_contexts_by_type("node"):
        if context.name.endswith("." + node_id):
            result.extend(store.get_executions_by_context(context.id))
    return sorted(result, key=lambda e: e.id)


def state_name(execution) -> str:
    return Execution.State.Name(execution.last_known_state)


def output_artifacts(store, execution_id: int, key: Optional[str] = None,
                     include_pending: bool = False) -> List[Artifact]:
    """The execution's output artifacts (under output `key` when given). Only published outputs
    unless `include_pending`: a killed execution's pending outputs are never a result."""
    kinds = _OUTPUT_EVENTS if include_pending else (Event.OUTPUT,)
    events = store.get_events_by_execution_ids([execution_id])
    ids = [e.artifact_id for e in events
           if e.type in kinds and (key is None or any(s.key == key for s in e.path.steps))]
    return store.get_artifacts_by_id(ids) if ids else []


def custom_property(artifact, name: str, default: Any = None) -> Any:
    """An artifact's (or execution's) custom property as a plain value, `default` when absent."""
    if name not in artifact.custom_properties:
        return default
    value = artifact.custom_properties[name]
    return getattr(value, value.WhichOneof("value"))
