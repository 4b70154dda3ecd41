"""The one Beam transform that turns face lists into tf.Examples (used by FaceExampleGen and the CLI).

    list file(s) --ReadListFiles (streaming parse)--> (bucket, [entry, ...]) batches
                 --GroupByKey (the shuffle: spreads buckets over workers; every occurrence of
                   a key lands in the same bucket, so duplicates are found there)-->
                 --CheckBucket (per key: path, fields, image read through Beam FileSystems,
                   decode, box)--> examples | quarantine lines {"key", "reason", "detail"}

The shuffle moves batches of records keyed by a hash bucket of the record key, not one element
per record: Beam's per-element cost (coding, the runner's grouping, each fused step) is paid per
batch, so with several workers the check itself is nearly all the work.

Every input record leaves as exactly one Example or one quarantine line; `summary` counts both so
callers can check `valid + quarantined == input`.
"""
from __future__ import annotations

import collections
import json
import os
import re
import zlib
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes, FileSystem
from apache_beam.io.filesystems import FileSystems

from core import features, json_stream, records
from core.records import IngestOptions, Rejected

QUARANTINE = "quarantine"
STATS = "stats"
MAX_REASONS_SHOWN = 8      # the error message names this many reasons, the most frequent first
# Keys hash into this many shuffle buckets: the unit of parallelism of the check step (enough
# for hundreds of workers; a bucket of a 100 M-record list is about 100k records).
SHUFFLE_BUCKETS = 1024
# Records per shuffled batch: the reader holds at most SHUFFLE_BUCKETS x (BATCH_SIZE - 1) records.
BATCH_SIZE = 64


class IngestError(RuntimeError):
    """Raised when a split's quarantined fraction is over the limit, or a split has no records."""


def match_files(pattern: str) -> List[str]:
    """The regular files matching a Beam file pattern (`*` stays within a directory, `**` does
    not). A local pattern whose wildcards are all in its last component is matched by listing
    that one directory: Beam's local listing walks the whole tree under it and stats every file,
    which takes minutes when the directory also holds millions of images."""
    folder, name = os.path.split(pattern)
    local = records.is_local_path(pattern)
    if not local or not name or "**" in pattern or re.search(r"[*?\[]", folder):
        return [m.path for result in FileSystems.match([pattern]) for m in result.metadata_list
                if not local or os.path.isfile(m.path)]
    wanted = re.compile(FileSystem.translate_pattern(name))
    try:
        with os.scandir(folder or ".") as entries:
            return sorted(os.path.join(folder, entry.name) for entry in entries
                          if wanted.fullmatch(entry.name) and entry.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return []


def match_list_files(patterns: Union[str, Sequence[str]]) -> List[str]:
    """Every list file matching the pattern(s), sorted (the order label offsets follow). A named
    local path that is not a regular file (a directory, a named pipe) is an error, not a list."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    paths = set()
    for pattern in patterns:
        matched = match_files(pattern)
        if not matched:
            if records.is_local_path(pattern) and os.path.exists(pattern):
                raise IngestError(f"face list {pattern!r} is not a regular file")
            raise IngestError(f"no face list file matches {pattern!r}")
        paths.update(matched)
    return sorted(paths)


def label_offsets(max_labels: Dict[str, int], sources: List[str]) -> Dict[str, List[int]]:
    """Merged lists: each list's labels are shifted past the previous lists' (in source order),
    so identities of different data sets never collide. Returns {source: [offset, last label]}."""
    ranges, offset = {}, 0
    for source in sources:
        top = max_labels.get(source)
        ranges[source] = [offset, offset + top if top is not None else offset - 1]
        offset += (top + 1) if top is not None else 0
    return ranges


def bucket_of(key: Any) -> Optional[int]:
    """The shuffle bucket of a record key: the same in every process (crc32, not the salted
    `hash`), so every occurrence of a key meets the others in one bucket. None for a key that is
    not a UTF-8-encodable string (Beam could not even encode it)."""
    if not isinstance(key, str):
        return None
    try:
        return zlib.crc32(key.encode("utf-8")) % SHUFFLE_BUCKETS
    except UnicodeEncodeError:
        return None


class _ReadListFile(beam.DoFn):
    """Streams the records of one list file as (bucket, [(key, path, index, value), ...])
    batches. Syntax errors go straight to quarantine."""

    def __init__(self, list_format: Optional[str]):
        self._list_format = list_format

    def process(self, path: str):
        fmt = json_stream.detect_format(path, self._list_format)
        pending = collections.defaultdict(list)
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            for item in json_stream.read_entries(stream, fmt, name=path):
                if isinstance(item, json_stream.FileError):
                    yield beam.pvalue.TaggedOutput(
                        QUARANTINE, records.quarantine_line(None, item.reason, item.detail))
                elif item.error is not None:
                    yield beam.pvalue.TaggedOutput(
                        QUARANTINE, records.quarantine_line(item.key, item.reason, item.error))
                elif (bucket := bucket_of(item.key)) is None:
                    # Checked before the shuffle: Beam cannot even encode a non-UTF-8 key.
                    try:
                        records.check_key(item.key)
                    except Rejected as rejection:
                        yield beam.pvalue.TaggedOutput(QUARANTINE, records.quarantine_line(
                            item.key, rejection.reason,
                            f"{path} record {item.index}: {rejection.detail}"))
                else:
                    batch = pending[bucket]
                    batch.append((item.key, path, item.index, item.value))
                    if len(batch) == BATCH_SIZE:
                        yield bucket, pending.pop(bucket)
        yield from pending.items()


def read_image_bytes(path: str, max_bytes: int) -> bytes:
    """At most max_bytes + 1 bytes of the image, through Beam FileSystems (local, gs://, ...): the
    `read` of records.check_record, which applies the limit."""
    try:
        with FileSystems.open(path, mime_type="application/octet-stream",
                              compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            data = stream.read(max_bytes + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise Rejected("missing_file", f"no image file at {path}")
    except Exception as e:  # remote filesystems wrap not-found in their own error types
        text = str(e)
        if "not found" in text.lower() or "No such file" in text or "404" in text:
            raise Rejected("missing_file", f"no image file at {path}")
        raise Rejected("read_error", f"{path} cannot be read: {type(e).__name__}: {text[:300]}")
    return data


def check_record(image_root: str, key: str, value: Any, options: IngestOptions,
                 local_root: bool, label_offset: int = 0,
                 real_root: Optional[str] = None) -> Tuple[bytes, records.FaceRecord]:
    """records.check_record (the one check chain), reading through Beam FileSystems. Returns
    (serialized Example, record) or raises Rejected."""
    checked = records.check_record(image_root, key, value, options, local=local_root,
                                   real_root=real_root, label_offset=label_offset,
                                   read=read_image_bytes)
    return records.build_example(checked.record, checked.data, checked.info), checked.record


def _source_max_labels(batch):
    """(list path, largest usable label) per list in one shuffled batch, for the label offsets."""
    _, entries = batch
    top = {}
    for _, path, _, value in entries:
        label = value.get(features.LABEL) if isinstance(value, dict) else None
        if isinstance(label, int) and not isinstance(label, bool) and label >= 0:
            top[path] = max(label, top.get(path, label))
    yield from top.items()


class _CheckBucket(beam.DoFn):
    """Validates every key of one shuffle bucket: emits one Example per valid record (or, with
    `batched`, lists of up to BATCH_SIZE of them), quarantine lines (one per occurrence of a
    duplicated key, one per rejected record) and, to STATS, the bucket's _SplitStats accumulator."""

    def __init__(self, image_root: str, options: IngestOptions, batched: bool = False):
        self._image_root = image_root
        self._options = options
        self._batched = batched
        self._local = records.is_local_path(image_root)
        self._real_root = None

    def setup(self):
        if self._local:
            self._real_root = os.path.realpath(self._image_root)

    def process(self, element: Tuple[int, Iterable[List[Tuple[str, str, int, Any]]]],
                ranges: Dict[str, List[int]]):
        _, batches = element
        occurrences = collections.defaultdict(list)
        for batch in batches:
            for key, path, index, value in batch:
                occurrences[key].append((path, index, value))
        stats = _SplitStats().create_accumulator()
        examples = []
        for key in sorted(occurrences):
            checked, rejected = self._check_key(key, occurrences[key], ranges)
            for line in rejected:
                yield beam.pvalue.TaggedOutput(QUARANTINE, line)
            if checked is not None:
                example, record = checked
                _count_record(stats, record.label, record.group)
                if not self._batched:
                    yield example
                    continue
                examples.append(example)
                if len(examples) == BATCH_SIZE:
                    yield examples
                    examples = []
        if examples:
            yield examples
        if stats["valid"]:
            yield beam.pvalue.TaggedOutput(STATS, stats)

    def _check_key(self, key: str, occurrences: List[Tuple[str, int, Any]],
                   ranges: Dict[str, List[int]]):
        """((serialized Example, record) or None, quarantine lines) for every occurrence of a key."""
        if len(occurrences) > 1:
            occurrences = sorted(occurrences, key=lambda o: (o[0], o[1]))
            where = ", ".join(f"{path} record {index}" for path, index, _ in occurrences[:5])
            line = records.quarantine_line(
                key, "duplicate_key",
                f"key appears {len(occurrences)} times ({where}); none is used, since the "
                f"right one cannot be known")
            return None, [dict(line) for _ in occurrences]
        list_path, index, value = occurrences[0]
        try:
            offset = ranges[list_path][0] if ranges else 0
            return check_record(self._image_root, key, value, self._options, self._local, offset,
                                self._real_root), []
        except Rejected as rejection:
            return None, [records.quarantine_line(
                key, rejection.reason, f"{list_path} record {index}: {rejection.detail}")]


def _count_record(acc: Dict[str, Any], label: int, group: str) -> None:
    """Adds one valid record to a _SplitStats accumulator."""
    acc["valid"] += 1
    acc["label_min"] = label if acc["label_min"] is None else min(acc["label_min"], label)
    acc["label_max"] = label if acc["label_max"] is None else max(acc["label_max"], label)
    acc["groups"][group] = acc["groups"].get(group, 0) + 1


class _SplitStats(beam.CombineFn):
    """Label range and per-group counts of the valid records; its inputs are the per-bucket
    accumulators _CheckBucket fills with _count_record."""

    def create_accumulator(self):
        return {"valid": 0, "label_min": None, "label_max": None, "groups": {}}

    def add_input(self, acc, bucket_stats):
        return self.merge_accumulators([acc, bucket_stats])

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for acc in accumulators:
            merged["valid"] += acc["valid"]
            for bound, pick in (("label_min", min), ("label_max", max)):
                if acc[bound] is not None:
                    merged[bound] = acc[bound] if merged[bound] is None else pick(merged[bound],
                                                                                   acc[bound])
            for group, count in acc["groups"].items():
                merged["groups"][group] = merged["groups"].get(group, 0) + count
        return merged

    def extract_output(self, acc):
        return acc


def _summarize(input_count: int, stats: Dict[str, Any], reason_counts: Dict[str, int],
               sources: List[str], ranges: Dict[str, List[int]]) -> Dict[str, Any]:
    quarantined = sum(reason_counts.values())
    return {
        "sources": sources,
        "label_ranges": ranges or None,
        "input": input_count,
        "valid": stats["valid"],
        "quarantined": quarantined,
        "reasons": dict(sorted(reason_counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "label_min": stats["label_min"],
        "label_max": stats["label_max"],
        "groups": dict(sorted(stats["groups"].items())),
    }


class IngestFaceRecords(beam.PTransform):
    """pipeline | IngestFaceRecords(list_patterns, image_root) -> {"examples", "quarantine", "summary"}.

    `examples`: serialized tf.train.Examples (bytes); with `example_batches`, lists of up to
    BATCH_SIZE of them (for write_examples: Beam's per-element cost is then paid per list, not per
    Example). `quarantine`: dicts {"key", "reason", "detail"}.
    `summary`: one dict with input/valid/quarantined counts, per-reason counts, label range, groups
    and, with `offset_labels`, the label range each list was given.

    `offset_labels`: merge several lists (e.g. Trillion Pairs + VGGFace2) whose labels each start
    at 0: every list's labels are shifted past the previous lists' (sorted by path).
    """

    def __init__(self, list_patterns: Union[str, Sequence[str]], image_root: str,
                 options: IngestOptions = IngestOptions(), list_format: Optional[str] = None,
                 offset_labels: bool = False, example_batches: bool = False):
        super().__init__()
        self._sources = match_list_files(list_patterns)
        self._image_root = image_root
        self._options = options
        self._list_format = list_format
        self._offset_labels = offset_labels
        self._example_batches = example_batches

    def expand(self, pipeline):
        parsed = (pipeline
                  | "ListFiles" >> beam.Create(self._sources)
                  | "ReadListFiles" >> beam.ParDo(_ReadListFile(self._list_format)).with_outputs(
                      QUARANTINE, main="entries"))
        sources = self._sources
        if self._offset_labels:
            ranges = (parsed.entries
                      | "SourceLabels" >> beam.FlatMap(_source_max_labels)
                      | "MaxLabelPerSource" >> beam.CombinePerKey(max)
                      | "MaxLabels" >> beam.combiners.ToDict()
                      | "LabelRanges" >> beam.Map(label_offsets, sources))
        else:
            ranges = pipeline | "NoLabelOffsets" >> beam.Create([{}])
        checked = (parsed.entries
                   | "GroupByKey" >> beam.GroupByKey()
                   | "CheckBuckets" >> beam.ParDo(
                       _CheckBucket(self._image_root, self._options, self._example_batches),
                       ranges=beam.pvalue.AsSingleton(ranges)).with_outputs(
                           QUARANTINE, STATS, main="examples"))
        quarantine = ((parsed[QUARANTINE], checked[QUARANTINE])
                      | "AllQuarantined" >> beam.Flatten())

        input_count = ((parsed.entries | "CountEntries" >> beam.Map(lambda batch: len(batch[1])),
                        parsed[QUARANTINE] | "CountUnreadable" >> beam.Map(lambda _: 1))
                       | "InputCounts" >> beam.Flatten()
                       | "SumInput" >> beam.CombineGlobally(sum))
        stats = checked[STATS] | "SplitStats" >> beam.CombineGlobally(_SplitStats())
        reason_counts = (quarantine
                         | "Reasons" >> beam.Map(lambda line: line["reason"])
                         | "CountReasons" >> beam.combiners.Count.PerElement()
                         | "ReasonDict" >> beam.combiners.ToDict())
        summary = input_count | "Summary" >> beam.Map(
            _summarize, stats=beam.pvalue.AsSingleton(stats),
            reason_counts=beam.pvalue.AsSingleton(reason_counts), sources=sources,
            ranges=beam.pvalue.AsSingleton(ranges))
        return {"examples": checked.examples, "quarantine": quarantine, "summary": summary}


def write_quarantine_and_summary(outputs: Dict[str, beam.PCollection], quarantine_path: str,
                                 summary_path: str, label: str = "") -> None:
    """Writes the quarantine as JSON Lines and the summary as one JSON file (single shards)."""
    _ = (outputs["quarantine"]
         | f"QuarantineJson{label}" >> beam.Map(lambda line: json.dumps(line, sort_keys=True))
         | f"WriteQuarantine{label}" >> beam.io.WriteToText(
             quarantine_path, num_shards=1, shard_name_template=""))
    _ = (outputs["summary"]
         | f"SummaryJson{label}" >> beam.Map(lambda s: json.dumps(s, indent=1, sort_keys=True))
         | f"WriteSummary{label}" >> beam.io.WriteToText(
             summary_path, num_shards=1, shard_name_template=""))


def read_summary(summary_path: str) -> Dict[str, Any]:
    with FileSystems.open(summary_path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return json.loads(f.read().decode("utf-8"))


def check_summary(split: str, summary: Dict[str, Any], max_bad_fraction: float,
                  quarantine_path: str) -> None:
    """Raises IngestError when the counts do not reconcile, the split is empty, or too much is bad."""
    if summary["valid"] + summary["quarantined"] != summary["input"]:
        raise IngestError(f"split {split!r}: counts do not reconcile: {summary['valid']} valid + "
                          f"{summary['quarantined']} quarantined != {summary['input']} input")
    if summary["input"] == 0:
        raise IngestError(f"split {split!r}: the face list {summary['sources']} holds no records")
    bad_fraction = summary["quarantined"] / summary["input"]
    if bad_fraction > max_bad_fraction or summary["valid"] == 0:
        reasons = by_count(summary["reasons"])
        top = ", ".join(f"{reason}: {count}" for reason, count in reasons[:MAX_REASONS_SHOWN])
        if len(reasons) > MAX_REASONS_SHOWN:
            rest = reasons[MAX_REASONS_SHOWN:]
            top += (f", and {len(rest)} more reasons with {sum(c for _, c in rest)} records")
        raise IngestError(
            f"split {split!r}: {summary['quarantined']} of {summary['input']} records "
            f"({bad_fraction:.1%}) were quarantined, over the limit of {max_bad_fraction:.1%}. "
            f"Reasons, most frequent first: {top}. Every rejected record and its reason is in "
            f"{quarantine_path}")


def by_count(reasons: Dict[str, int]) -> List[Tuple[str, int]]:
    """Reason counts, most frequent first (ties by name): the summary's JSON has sorted keys."""
    return sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))


def format_summary(split: str, summary: Dict[str, Any]) -> str:
    reasons = ", ".join(f"{r}={c}" for r, c in by_count(summary["reasons"])) or "none"
    labels = ("no labels" if summary["label_min"] is None
              else f"labels {summary['label_min']}..{summary['label_max']}")
    return (f"[{split}] input={summary['input']} valid={summary['valid']} "
            f"quarantined={summary['quarantined']} ({reasons}); {labels}; "
            f"groups {summary['groups']}")
