"""Keeps a local metadata store consistent across killed runs.

A LocalDagRunner process that is killed (SIGKILL, OOM, power loss) leaves its current execution
in state RUNNING and that execution's output artifacts PENDING, forever. A local run therefore
holds an exclusive lock on its metadata store; whoever holds the lock knows that no other run is
alive, so every execution still RUNNING or NEW belongs to a dead process: it is marked CANCELED and
its pending outputs ABANDONED. Nothing pending is ever consumed downstream (TFX only resolves LIVE
artifacts), and the rerun recomputes the interrupted step (the Trainer resumes from its backup).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Iterator, List

from absl import logging

from pipeline import metadata

_Execution = metadata.Execution
_Artifact = metadata.Artifact


class MetadataLockedError(RuntimeError):
    pass


@contextlib.contextmanager
def exclusive_run(metadata_path: str) -> Iterator[None]:
    """Holds `<metadata>.lock` for the duration of a run; refuses a second concurrent run."""
    lock_path = metadata_path + ".lock"
    os.makedirs(os.path.dirname(os.path.abspath(lock_path)), exist_ok=True)
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MetadataLockedError(
                f"another pipeline run is using {metadata_path} (lock {lock_path} is held)")
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def abandon_interrupted_executions(metadata_path: str) -> List[int]:
    """Marks executions left running by a dead process CANCELED, their pending outputs ABANDONED.

    Call only while holding `exclusive_run`. Returns the ids of the executions it marked.
    """
    if not os.path.exists(metadata_path):
        return []
    store = metadata.open_store(metadata_path, mode="write")
    interrupted = [e for e in store.get_executions()
                   if e.last_known_state in (_Execution.RUNNING, _Execution.NEW)]
    if not interrupted:
        return []
    events = store.get_events_by_execution_ids([e.id for e in interrupted])
    output_ids = {e.artifact_id for e in events if e.type in (metadata.Event.OUTPUT,
                                                              metadata.Event.PENDING_OUTPUT)}
    pending = [a for a in store.get_artifacts_by_id(list(output_ids))
               if a.state in (_Artifact.PENDING, _Artifact.UNKNOWN)]
    for artifact in pending:
        artifact.state = _Artifact.ABANDONED
    for execution in interrupted:
        execution.last_known_state = _Execution.CANCELED
        execution.custom_properties["interrupted"].string_value = (
            "left running by a process that died; canceled by the next run")
    if pending:
        store.put_artifacts(pending)
    store.put_executions(interrupted)
    logging.warning("Marked %d execution(s) of a killed run as CANCELED and %d pending output(s) "
                    "ABANDONED: %s", len(interrupted), len(pending), [e.id for e in interrupted])
    return [e.id for e in interrupted]
