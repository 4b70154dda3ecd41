"""Embedding the eval split as a Beam pipeline, and gathering the embeddings on the driver.

The RecallEvaluator embeds each model's eval split with tfx-bsl's RunInference, as TFX's
BulkInferrer does: the raw serialized tf.Examples go to the SavedModel's `serving_default`
(a Predict signature: serialized Examples in, `embedding` out), on whatever runner the pipeline's
Beam args name (FnApiRunner in one process or several, Dataflow workers). Each model branch
writes (order key, label, group, embedding) records to a scratch directory that the driver reads
back; the metrics are then computed on the gathered N x D array in one process.

Order contract: the gathered arrays are sorted by the record's `path` feature, ties (the same path
twice, or no path) broken by the SHA-256 of the serialized record. The order therefore depends on
the records only, never on the runner, the worker count, the file order or Beam's element order;
records that tie on both are byte-identical, so their order cannot change any array. Every model
of one call sees the same records in the same order (the baseline comparison relies on it).

Bad input: a record without an int64 `label` or a bytes `group` is refused with an error naming
its path (or, without one, its digest) and the missing feature.
"""
from __future__ import annotations

import hashlib
import os
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

import apache_beam as beam
import numpy as np
import tensorflow as tf
from tfx_bsl.public.beam import RunInference
from tfx_bsl.public.proto import model_spec_pb2

from core import features

SIGNATURE = "serving_default"
OUTPUT = "embedding"
# Features of the gathered records beside path, label and group.
_DIGEST, _EMBEDDING = "sha256", "embedding"
# Order key, label, group: what travels beside each record through RunInference.
Key = Tuple[bytes, bytes, int, bytes]
# Typed, so that RunInference knows its input is keyed (and returns (key, PredictionLog) pairs).
KeyedRecord = Tuple[Key, bytes]


def _bytes_value(example: tf.train.Example, name: str):
    feature = example.features.feature.get(name)
    if feature is None or not feature.bytes_list.value:
        return None
    return feature.bytes_list.value[0]


def keyed_record(record: bytes) -> KeyedRecord:
    """(path, digest, label, group) and the record, for RunInference's keyed input."""
    example = tf.train.Example.FromString(record)
    digest = hashlib.sha256(record).digest()
    path = _bytes_value(example, features.PATH) or b""
    name = (f"eval record {path.decode('utf-8', 'replace')!r}" if path
            else f"eval record without a {features.PATH!r} (sha256 {digest.hex()[:16]})")
    label = example.features.feature.get(features.LABEL)
    if label is None or len(label.int64_list.value) != 1:
        raise ValueError(f"{name}: needs one int64 {features.LABEL!r} value, the identity")
    group = _bytes_value(example, features.GROUP)
    if group is None:
        raise ValueError(f"{name}: needs a bytes {features.GROUP!r} value (may be empty)")
    return (path, digest, int(label.int64_list.value[0]), group), record


def embedding_record(keyed_log, output: str = OUTPUT) -> bytes:
    """One gathered record: the key's fields and the model's `output` for the record (float32)."""
    key, log = keyed_log
    outputs = log.predict_log.response.outputs
    if output not in outputs:
        raise ValueError(f"the serving signature returned no {output!r} output "
                         f"(it returned: {', '.join(sorted(outputs)) or 'nothing'})")
    vector = tf.make_ndarray(outputs[output]).astype(np.float32).reshape(-1)
    path, digest, label, group = key
    example = tf.train.Example()
    feature = example.features.feature
    feature[features.PATH].bytes_list.value.append(path)
    feature[_DIGEST].bytes_list.value.append(digest)
    feature[features.LABEL].int64_list.value.append(label)
    feature[features.GROUP].bytes_list.value.append(group)
    feature[_EMBEDDING].float_list.value.extend(vector.tolist())
    return example.SerializeToString()


def inference_spec(model_dir: str, batch_size: int,
                   signature: str = SIGNATURE) -> model_spec_pb2.InferenceSpecType:
    """tfx-bsl's spec for in-process inference with one SavedModel signature (as BulkInferrer)."""
    spec = model_spec_pb2.InferenceSpecType(saved_model_spec=model_spec_pb2.SavedModelSpec(
        model_path=model_dir, signature_name=[signature]))
    spec.batch_parameters.max_batch_size = int(batch_size)
    return spec


def build(pipeline: beam.Pipeline, model_dirs: Mapping[str, str], files: Sequence[str],
          work_dir: str, batch_size: int, signature: str = SIGNATURE, output: str = OUTPUT) -> None:
    """Adds the embedding to `pipeline`: read the records once, key them, spread them over the
    workers (Reshuffle: gzip files are read whole, one reader each), then one RunInference branch
    per model writing `<work_dir>/<name>/part-*.gz`."""
    keyed = (pipeline
             | "Files" >> beam.Create(list(files))
             | "Read" >> beam.io.ReadAllFromTFRecord(
                 compression_type=beam.io.filesystem.CompressionTypes.GZIP)
             | "Key" >> beam.Map(keyed_record).with_output_types(KeyedRecord)
             | "Spread" >> beam.Reshuffle().with_output_types(KeyedRecord))
    for name, model_dir in model_dirs.items():
        _ = (keyed
             | f"Embed[{name}]" >> RunInference(inference_spec(model_dir, batch_size, signature))
             | f"Encode[{name}]" >> beam.Map(embedding_record, output)
             | f"Write[{name}]" >> beam.io.WriteToTFRecord(
                 os.path.join(work_dir, name, "part"), file_name_suffix=".gz"))


def gather(directory: str, read_batch: int = 4096) -> Dict[str, np.ndarray]:
    """The records one branch wrote, in the module's order: {"embeddings" [N, D] float32,
    "labels" [N] int64, "groups" [N] str, "paths" [N] str}."""
    files = sorted(tf.io.gfile.glob(os.path.join(directory, "part*")))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    first = next(iter(dataset), None)
    if first is None:
        raise ValueError(f"the eval split has no records (nothing embedded into {directory})")
    dim = len(tf.train.Example.FromString(first.numpy()).features.feature[_EMBEDDING].float_list.value)
    spec = {features.PATH: tf.io.FixedLenFeature([], tf.string),
            _DIGEST: tf.io.FixedLenFeature([], tf.string),
            features.LABEL: tf.io.FixedLenFeature([], tf.int64),
            features.GROUP: tf.io.FixedLenFeature([], tf.string),
            _EMBEDDING: tf.io.FixedLenFeature([dim], tf.float32)}
    columns: Dict[str, List[np.ndarray]] = {name: [] for name in spec}
    for batch in dataset.batch(read_batch):
        parsed = tf.io.parse_example(batch, spec)
        for name in spec:
            columns[name].append(parsed[name].numpy())
    merged = {name: np.concatenate(parts) for name, parts in columns.items()}
    paths, digests = merged[features.PATH], merged[_DIGEST]
    order = np.asarray(sorted(range(len(paths)), key=lambda i: (paths[i], digests[i])), dtype=np.int64)
    return {"embeddings": merged[_EMBEDDING][order], "labels": merged[features.LABEL][order],
            "groups": np.array([g.decode("utf-8") for g in merged[features.GROUP][order]]),
            "paths": np.array([p.decode("utf-8") for p in paths[order]])}


def embed_split(model_dirs: Mapping[str, str], files: Sequence[str], batch_size: int,
                make_pipeline: Callable[[], beam.Pipeline], work_dir: str,
                signature: str = SIGNATURE, output: str = OUTPUT) -> Dict[str, Dict[str, np.ndarray]]:
    """Embeds the records of `files` (gzip TFRecords of raw tf.Examples) with each named model's
    `signature`, in one Beam pipeline from `make_pipeline` (the executor's `_make_beam_pipeline`;
    tests pass a runner and its options), and returns {name: gather(...)} for every model.

    `work_dir` must be writable by the workers and readable by the driver (on Dataflow: a gs://
    path); the records written there are removed once gathered."""
    if not model_dirs:
        raise ValueError("embed_split needs at least one model")
    if not files:
        raise ValueError("embed_split needs at least one eval file")
    scratch = os.path.join(work_dir, "embeddings")
    if tf.io.gfile.exists(scratch):
        tf.io.gfile.rmtree(scratch)      # a retried execution's partial output
    with make_pipeline() as pipeline:
        build(pipeline, model_dirs, files, scratch, batch_size, signature, output)
    gathered = {name: gather(os.path.join(scratch, name)) for name in model_dirs}
    tf.io.gfile.rmtree(scratch)
    return gathered
