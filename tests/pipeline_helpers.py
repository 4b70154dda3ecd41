"""Reading what a LocalDagRunner run left in its pipeline root and SQLite metadata store."""
import glob
import os
from typing import Dict, List

import tensorflow as tf
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2


def open_store(metadata_path: str) -> metadata_store.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    return metadata_store.MetadataStore(config)


def node_executions(store, node_id: str) -> List[metadata_store_pb2.Execution]:
    """Executions of one pipeline node, oldest first."""
    result = []
    for context in store.get_contexts_by_type("node"):
        if context.name.endswith("." + node_id):
            result.extend(store.get_executions_by_context(context.id))
    return sorted(result, key=lambda e: e.id)


def state_name(execution) -> str:
    return metadata_store_pb2.Execution.State.Name(execution.last_known_state)


def output_artifacts(store, execution_id: int, key: str = None) -> List[metadata_store_pb2.Artifact]:
    events = store.get_events_by_execution_ids([execution_id])
    ids = [e.artifact_id for e in events
           if e.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT,
                         metadata_store_pb2.Event.PENDING_OUTPUT)
           and (key is None or any(s.key == key for s in e.path.steps))]
    return store.get_artifacts_by_id(ids) if ids else []


def read_examples(split_uri: str) -> List[tf.train.Example]:
    files = sorted(glob.glob(os.path.join(split_uri, "*.gz")))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return [tf.train.Example.FromString(record.numpy()) for record in dataset]


def feature_value(example: tf.train.Example, name: str):
    feature = example.features.feature[name]
    kind = feature.WhichOneof("kind")
    values = getattr(feature, kind).value
    assert len(values) == 1, (name, values)
    return values[0]


def examples_by_path(split_uri: str) -> Dict[str, tf.train.Example]:
    return {feature_value(e, "path").decode(): e for e in read_examples(split_uri)}
