"""Writing the Examples of the converter CLI (generate_tfrecord/): lists of serialized Examples
through Beam's TFRecord framing, staged next to the output and then published under their names."""
import uuid
from typing import List, Optional

import apache_beam as beam
from apache_beam.io import filebasedsink, tfrecordio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from components.face_example_gen.beam_ingest import match_files
from core import records

SHARD_PATTERN = "-?????-of-?????"     # Beam's default shard names: -SSSSS-of-NNNNN


class _TFRecordBatchSink(filebasedsink.FileBasedSink):
    """Beam's TFRecord sink (the same framing and file names) for elements that are lists of
    records: one element per list, so Beam's per-element cost is paid per list."""

    def __init__(self, file_path_prefix: str, num_shards: int, shard_name_template: Optional[str]):
        super().__init__(file_path_prefix, coder=beam.coders.BytesCoder(), num_shards=num_shards,
                         shard_name_template=shard_name_template,
                         mime_type="application/octet-stream",
                         compression_type=CompressionTypes.UNCOMPRESSED)

    def write_record(self, file_handle, records_batch: List[bytes]):
        for record in records_batch:
            tfrecordio._TFRecordUtil.write_record(file_handle, record)


def write_examples(example_batches: beam.PCollection, output: str, num_shards: int) -> str:
    """Writes lists of serialized Examples (IngestFaceRecords' `examples` with example_batches)
    through a staging directory next to `output` (finish with
    publish_examples): `output` itself when num_shards is 1, else `output`-SSSSS-of-NNNNN (0: a
    file per worker bundle). Beam's sink matches its shard names in the directory it writes to,
    by a recursive walk on local disks: staged, that directory holds only these files, not the
    image tree the output may sit next to. Returns the staging directory."""
    staging = f"{output}.staging-{uuid.uuid4().hex[:12]}"
    _ = example_batches | "WriteExamples" >> beam.io.Write(_TFRecordBatchSink(
        _staged_prefix(staging), num_shards,
        shard_name_template="" if num_shards == 1 else None))
    return staging


def _staged_prefix(staging: str) -> str:
    return FileSystems.join(staging, "examples")


def publish_examples(staging: str, output: str, num_shards: int) -> List[str]:
    """Moves the staged Examples to their names and removes the staging directory; sharded, it
    first deletes the shards an earlier run left at `output` (as Beam's sink would). Returns the
    published paths."""
    prefix = _staged_prefix(staging)
    staged = match_files(prefix if num_shards == 1 else prefix + SHARD_PATTERN)
    if num_shards == 1:
        targets = [output] * len(staged)
    else:
        stale = match_files(output + SHARD_PATTERN)
        if stale:
            FileSystems.delete(stale)
        targets = [output + path[len(prefix):] for path in staged]
    if staged:
        FileSystems.rename(staged, targets)
    # A local directory goes as a whole; on object stores, whatever is left under the prefix.
    leftovers = ([staging] if records.is_local_path(staging)
                 else match_files(FileSystems.join(staging, "**")))
    if leftovers:
        FileSystems.delete(leftovers)
    return targets
