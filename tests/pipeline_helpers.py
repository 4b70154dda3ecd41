"""Reading what a LocalDagRunner run left in its pipeline root and SQLite metadata store."""
import glob
import os
from typing import Dict, List

import tensorflow as tf

from pipeline import metadata
from pipeline.metadata import node_executions, state_name  # noqa: F401 (re-exported)


def open_store(metadata_path: str):
    return metadata.open_store(metadata_path, mode="create")


def output_artifacts(store, execution_id: int, key: str = None):
    """Every output the execution recorded, pending ones included (the fault tests look at those)."""
    return metadata.output_artifacts(store, execution_id, key, include_pending=True)


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
