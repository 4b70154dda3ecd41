"""The Beam ingest transform on a small directory of good and bad records."""
import json
import os

import apache_beam as beam
import pytest
import tensorflow as tf
from PIL import Image

from components.face_example_gen import beam_ingest, example_sink
from core import records
from tests import image_factory as images
from tests.test_ingest_records import fifo_watchdog

BOX = {"x1": 2, "y1": 3, "x2": 30, "y2": 40}


def run_ingest(tmp_path, list_path, image_root, **kwargs):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    with beam.Pipeline() as pipeline:
        outputs = pipeline | beam_ingest.IngestFaceRecords(str(list_path), str(image_root), **kwargs)
        _ = (outputs["examples"]
             | beam.io.WriteToTFRecord(str(out / "examples"), num_shards=1,
                                       shard_name_template=""))
        beam_ingest.write_quarantine_and_summary(outputs, str(out / "q.jsonl"), str(out / "s.json"))
    examples = [tf.train.Example.FromString(r.numpy())
                for r in tf.data.TFRecordDataset(str(out / "examples"))]
    with open(out / "q.jsonl") as f:
        quarantine = [json.loads(line) for line in f]
    summary = beam_ingest.read_summary(str(out / "s.json"))
    return examples, quarantine, summary


def feature(example, name):
    value = example.features.feature[name]
    return value.bytes_list.value[0] if value.HasField("bytes_list") else value.int64_list.value[0]


@pytest.fixture
def mixed_dir(tmp_path):
    """Images for good records and one bad record of every image-level reason."""
    root = tmp_path / "images"
    files = {
        "g1/a/0.jpg": images.jpeg(48, 64, seed=1),
        "g1/a/1.png": images.png(40, 50, seed=2),
        "g2/b/0.jpg": images.jpeg(64, 48, seed=3, mode="L"),
        "g2/b/1.png": images.png(32, 45, seed=4, mode="RGBA"),
        "g2/c/dup.jpg": images.jpeg(seed=5),
        "bad/empty.jpg": b"",
        "bad/text.jpg": b"hello",
        "bad/trunc.jpg": images.jpeg(64, 48)[:600],
        "bad/x.gif": images.encode(images.pixels(), "GIF"),
        "bad/cmyk.jpg": images.encode(images.pixels(), "JPEG", mode="CMYK"),
        "bad/bomb.png": images.png_bomb(),
        "bad/small.jpg": images.jpeg(20, 20),
    }
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    (tmp_path / "outside.jpg").write_bytes(images.jpeg())
    os.symlink(tmp_path / "outside.jpg", root / "bad" / "link.jpg")
    os.mkfifo(root / "bad" / "pipe.jpg")      # a named pipe: opening it would wait for a writer
    return root, files


GOOD_RECORDS = {
    "g1/a/0.jpg": {"label": 0, **BOX},
    "g1/a/1.png": {"label": 0, **BOX},
    "g2/b/0.jpg": {"label": 1, **BOX},
    "g2/b/1.png": {"label": 1, **BOX, "extra": "ignored"},
}
BAD_RECORDS = {   # key -> (value, expected reason)
    "bad/empty.jpg": ({"label": 2, **BOX}, "empty_file"),
    "bad/text.jpg": ({"label": 2, **BOX}, "undecodable_image"),
    "bad/trunc.jpg": ({"label": 2, **BOX}, "truncated_image"),
    "bad/x.gif": ({"label": 2, **BOX}, "unsupported_format"),
    "bad/cmyk.jpg": ({"label": 2, **BOX}, "unsupported_color_mode"),
    "bad/bomb.png": ({"label": 2, **BOX}, "image_too_large"),
    "bad/small.jpg": ({"label": 2, **BOX}, "box_outside_image"),
    "bad/link.jpg": ({"label": 2, **BOX}, "path_escape"),
    "../images/g1/a/0.jpg": ({"label": 2, **BOX}, "path_escape"),
    "bad/none.jpg": ({"label": 2, **BOX}, "missing_file"),
    "bad/pipe.jpg": ({"label": 2, **BOX}, "not_a_regular_file"),
    "g1/a/0.jpg ": ({"label": "2", **BOX}, "bad_label"),
    "g1/a/1.png ": ({"label": 2, **BOX, "x1": 50}, "bad_box"),
    "g2/b/0.jpg ": ({"label": 2, "x1": 1}, "missing_field"),
    "g2/b/1.png ": ([1, 2], "malformed_record"),
    "bad\udcff.jpg": ({"label": 2, **BOX}, "bad_path"),
}


def test_mixed_list_every_record_accounted_for(tmp_path, mixed_dir):
    root, files = mixed_dir
    # Written by hand to include a duplicated key, a duplicated field and a lone surrogate.
    parts = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in GOOD_RECORDS.items()]
    parts += [f"{json.dumps(k)}: {json.dumps(v)}" for k, (v, _) in BAD_RECORDS.items()]
    parts += ['"g2/c/dup.jpg": {"label": 3, "x1": 1, "y1": 1, "x2": 9, "y2": 9}',
              '"g2/c/dup.jpg": {"label": 4, "x1": 1, "y1": 1, "x2": 9, "y2": 9}',
              '"g2/c/twice.jpg": {"label": 3, "label": 4, "x1": 1, "y1": 1, "x2": 9, "y2": 9}']
    list_path = tmp_path / "list.json"
    list_path.write_text("{\n" + ",\n".join(parts) + "\n}", encoding="utf-8")

    with fifo_watchdog([root / "bad" / "pipe.jpg"]):     # a regression fails instead of hanging
        examples, quarantine, summary = run_ingest(tmp_path, list_path, root)

    n_input = len(GOOD_RECORDS) + len(BAD_RECORDS) + 3
    assert summary["input"] == n_input
    assert summary["valid"] == len(examples) == len(GOOD_RECORDS)
    assert summary["quarantined"] == len(quarantine) == n_input - len(GOOD_RECORDS)

    # Each good record exactly, from an independent reading of its file.
    by_path = {feature(e, "path").decode(): e for e in examples}
    assert set(by_path) == set(GOOD_RECORDS)
    for key, value in GOOD_RECORDS.items():
        e = by_path[key]
        width, height = Image.open(root / key).size
        assert feature(e, "image_raw") == files[key]
        assert (feature(e, "image_width"), feature(e, "image_height")) == (width, height)
        assert [feature(e, n) for n in ("label", "x1", "y1", "x2", "y2")] == [
            value[n] for n in ("label", "x1", "y1", "x2", "y2")]
        assert feature(e, "group") == key.split("/")[0].encode()

    reasons = {}
    for line in quarantine:
        assert set(line) == {"key", "reason", "detail"}
        assert line["detail"]
        reasons.setdefault(line["key"], []).append(line["reason"])
    for key, (_, reason) in BAD_RECORDS.items():
        printable = key.encode("utf-8", "backslashreplace").decode()   # lone surrogate escaped
        assert reasons[printable] == [reason], key
    assert reasons["g2/c/dup.jpg"] == ["duplicate_key", "duplicate_key"]
    assert reasons["g2/c/twice.jpg"] == ["malformed_record"]
    counted = {}
    for line in quarantine:
        counted[line["reason"]] = counted.get(line["reason"], 0) + 1
    assert summary["reasons"] == counted
    assert summary["label_min"] == 0 and summary["label_max"] == 1
    assert summary["groups"] == {"g1": 2, "g2": 2}
    # The details name the list file and the record's position.
    detail = next(q["detail"] for q in quarantine if q["key"] == "bad/none.jpg")
    assert str(list_path) in detail and "record" in detail


def test_json_lines_and_truncated_list(tmp_path, mixed_dir):
    root, _ = mixed_dir
    lines = [json.dumps({"path": k, **v}) for k, v in GOOD_RECORDS.items()] + ["{oops"]
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    examples, quarantine, summary = run_ingest(tmp_path, jsonl, root)
    assert len(examples) == 4 and [q["reason"] for q in quarantine] == ["invalid_json"]
    assert summary["input"] == 5

    text = json.dumps(GOOD_RECORDS)
    truncated = tmp_path / "cut.json"
    truncated.write_text(text[: text.index('"g2/b/1.png"') + 20])
    examples, quarantine, summary = run_ingest(tmp_path, truncated, root)
    assert {feature(e, "path").decode() for e in examples} == set(list(GOOD_RECORDS)[:3])
    assert [q["reason"] for q in quarantine] == ["invalid_json"]
    assert summary["input"] == 4 and summary["valid"] + summary["quarantined"] == 4


@pytest.mark.parametrize("text,reason", [("[1, 2]", "bad_top_level"), ("garbage", "invalid_json")])
def test_unreadable_list_is_one_quarantined_record(tmp_path, mixed_dir, text, reason):
    root, _ = mixed_dir
    path = tmp_path / "bad.json"
    path.write_text(text)
    examples, quarantine, summary = run_ingest(tmp_path, path, root)
    assert examples == [] and [q["reason"] for q in quarantine] == [reason]
    with pytest.raises(beam_ingest.IngestError, match=reason):
        beam_ingest.check_summary("train", summary, 0.01, "q.jsonl")


def test_empty_list_is_an_error_not_an_empty_split(tmp_path, mixed_dir):
    root, _ = mixed_dir
    path = tmp_path / "empty.json"
    path.write_text("{}")
    examples, quarantine, summary = run_ingest(tmp_path, path, root)
    assert (examples, quarantine, summary["input"]) == ([], [], 0)
    with pytest.raises(beam_ingest.IngestError, match="holds no records"):
        beam_ingest.check_summary("train", summary, 0.01, "q.jsonl")


def test_bad_fraction_limit_names_top_reasons():
    summary = {"input": 200, "valid": 197, "quarantined": 3, "sources": ["x.json"],
               "reasons": {"missing_file": 2, "bad_box": 1}}
    beam_ingest.check_summary("train", summary, 0.015, "q.jsonl")      # 1.5 % allowed
    with pytest.raises(beam_ingest.IngestError) as info:
        beam_ingest.check_summary("train", summary, 0.01, "q.jsonl")
    message = str(info.value)
    assert "missing_file: 2" in message and "bad_box: 1" in message and "q.jsonl" in message
    broken = dict(summary, valid=190)
    with pytest.raises(beam_ingest.IngestError, match="do not reconcile"):
        beam_ingest.check_summary("train", broken, 1.0, "q.jsonl")


def test_limit_message_orders_reasons_by_count_after_the_json_round_trip(tmp_path):
    """The summary file is written with sorted keys: the message must not take its order."""
    reasons = {"bad_box": 1, "bad_label": 2, "bad_path": 1, "duplicate_key": 3, "empty_file": 1,
               "invalid_json": 1, "malformed_record": 1, "missing_field": 1, "missing_file": 50,
               "path_escape": 4}
    summary = {"input": 1000, "valid": 935, "quarantined": 65, "sources": ["x.json"],
               "reasons": reasons, "label_min": 0, "label_max": 9, "groups": {"g": 935}}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary, sort_keys=True))
    with pytest.raises(beam_ingest.IngestError) as info:
        beam_ingest.check_summary("train", beam_ingest.read_summary(str(path)), 0.01, "q.jsonl")
    message = str(info.value)
    shown = [part.split(": ")[0] for part in
             message.split("most frequent first: ")[1].split(". Every")[0].split(", ")[:8]]
    assert shown[:3] == ["missing_file", "path_escape", "duplicate_key"]
    assert shown[3] == "bad_label" and len(shown) == beam_ingest.MAX_REASONS_SHOWN
    assert "and 2 more reasons with 2 records" in message
    assert "missing_file=50, path_escape=4" in beam_ingest.format_summary("train", summary)


def test_no_matching_list_file_is_a_clear_error(tmp_path):
    with pytest.raises(beam_ingest.IngestError, match="no face list file matches"):
        beam_ingest.IngestFaceRecords(str(tmp_path / "nothing*.json"), str(tmp_path))


def test_all_reasons_are_exercised_by_the_tests():
    """Every documented reason code appears in this file's or the record tests' expectations."""
    here = open(__file__).read() + open(os.path.join(os.path.dirname(__file__),
                                                     "test_ingest_records.py")).read()
    missing = [r for r in records.REASONS if f'"{r}"' not in here]
    assert missing == []


def test_records_batched_into_shuffle_buckets_are_each_accounted_for(tmp_path, monkeypatch):
    """Tiny batches and few buckets: a key's occurrences sit in different batches (and lists) of
    one bucket, batches flush in mid-list, and the counts still match a plain reading."""
    monkeypatch.setattr(beam_ingest, "BATCH_SIZE", 3)
    monkeypatch.setattr(beam_ingest, "SHUFFLE_BUCKETS", 4)
    root = tmp_path / "images"
    keys = [f"g{i % 3}/id{i % 7}/{i}.jpg" for i in range(36)]
    for i, key in enumerate(keys):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(images.jpeg(48, 64, seed=i))
    labels = {key: int(key.split("/")[1][2:]) for key in keys}
    # Two lists: a key repeated far apart within the first, and keys shared by both.
    first = {key: {"label": labels[key], **BOX} for key in keys[:24]}
    first_text = ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in first.items())
    first_text += f',\n{json.dumps(keys[0])}: {json.dumps(first[keys[0]])}'
    (tmp_path / "a.json").write_text("{\n" + first_text + "\n}")
    second = {key: {"label": labels[key], **BOX} for key in keys[20:]}
    (tmp_path / "b.json").write_text(json.dumps(second))

    occurrences = {}
    for key in list(first) + [keys[0]] + list(second):
        occurrences[key] = occurrences.get(key, 0) + 1
    unique = sorted(k for k, n in occurrences.items() if n == 1)
    per_bucket = {}
    for key in occurrences:
        per_bucket[beam_ingest.bucket_of(key)] = per_bucket.get(beam_ingest.bucket_of(key), 0) + 1
    assert len(per_bucket) > 1 and max(per_bucket.values()) > 3   # several batches per bucket

    examples, quarantine, summary = run_ingest(tmp_path, tmp_path / "*.json", root)

    assert summary["input"] == sum(occurrences.values()) == 24 + 1 + 16
    assert sorted(feature(e, "path").decode() for e in examples) == unique
    assert summary["valid"] == len(unique)
    duplicates = {}
    for line in quarantine:
        assert line["reason"] == "duplicate_key"
        duplicates[line["key"]] = duplicates.get(line["key"], 0) + 1
    assert duplicates == {k: n for k, n in occurrences.items() if n > 1}
    assert summary["quarantined"] == sum(duplicates.values())
    assert summary["label_min"] == min(labels[k] for k in unique)
    assert summary["label_max"] == max(labels[k] for k in unique)
    groups = {}
    for key in unique:
        groups[key.split("/")[0]] = groups.get(key.split("/")[0], 0) + 1
    assert summary["groups"] == groups


@pytest.fixture
def walked(monkeypatch):
    """The roots os.walk is called on (Beam's local listing walks with it)."""
    roots, real_walk = [], os.walk

    def recording_walk(top, *args, **kwargs):
        roots.append(os.path.abspath(top))
        return real_walk(top, *args, **kwargs)

    monkeypatch.setattr(os, "walk", recording_walk)
    return roots


def test_local_list_patterns_match_like_beam_listing_one_directory(tmp_path, walked):
    for name in ("a.json", "b.jsonl", ".hidden.json", "ab.json", "sub/c.json", "sub/deep/d.json",
                 "images/x/0.jpg", "images/y/1.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    (tmp_path / "dir.json").mkdir()
    os.mkfifo(tmp_path / "pipe.json")
    os.mkfifo(tmp_path / "sub" / "pipe.json")
    regular = {str(p) for p in tmp_path.rglob("*") if p.is_file()}

    def beams(pattern):
        return sorted(m.path for r in beam.io.filesystems.FileSystems.match([pattern])
                      for m in r.metadata_list if m.path in regular)

    one_directory = ["*.json", "?.json", "[ab].json*", "a.json", "nothing*", "sub/*.json",
                     "images/x/*"]
    ours = {pattern: beam_ingest.match_files(str(tmp_path / pattern)) for pattern in one_directory}
    assert walked == [], "a pattern with its wildcards in the last component walked a tree"
    for pattern in one_directory:
        assert ours[pattern] == beams(str(tmp_path / pattern)), pattern
    assert beam_ingest.match_files(str(tmp_path / "*.json")) == sorted(
        str(tmp_path / n) for n in ("a.json", ".hidden.json", "ab.json"))
    # Wildcards in a directory, or `**`, cross directories: Beam's own matching.
    for pattern in ("*/c.json", "sub/**.json", "*/*.json"):
        assert beam_ingest.match_files(str(tmp_path / pattern)) == beams(str(tmp_path / pattern))
    assert beam_ingest.match_files(str(tmp_path / "*/*.json")) == [str(tmp_path / "sub/c.json")]
    assert beam_ingest.match_files(str(tmp_path / "sub/**.json")) == [
        str(tmp_path / "sub/c.json"), str(tmp_path / "sub/deep/d.json")]


@pytest.mark.parametrize("name", ["pipe.json", "dir.json"])
def test_a_named_list_that_is_not_a_regular_file_is_an_error(tmp_path, name):
    if name == "pipe.json":
        os.mkfifo(tmp_path / name)
    else:
        (tmp_path / name).mkdir()
    with fifo_watchdog([tmp_path / "pipe.json"] if name == "pipe.json" else []):
        with pytest.raises(beam_ingest.IngestError, match="not a regular file"):
            beam_ingest.IngestFaceRecords(str(tmp_path / name), str(tmp_path))


@pytest.mark.parametrize("num_shards", [0, 1, 3])
def test_examples_are_staged_beside_the_output_and_published_without_walking_it(
        tmp_path, walked, num_shards):
    data = tmp_path / "data"
    for i in range(30):                                    # the image tree the output sits next to
        (data / "images" / str(i % 5)).mkdir(parents=True, exist_ok=True)
        (data / "images" / str(i % 5) / f"{i}.jpg").write_bytes(b"x")
    output = str(data / "train.tfrecord")
    stale = f"{output}-00007-of-00009"
    with open(stale, "wb") as f:
        f.write(b"an earlier run's shard")
    records = [f"record {i}".encode() for i in range(50)]

    with beam.Pipeline() as pipeline:
        batches = pipeline | beam.Create([records[i:i + 7] for i in range(0, len(records), 7)])
        staging = example_sink.write_examples(batches, output, num_shards)
    published = example_sink.publish_examples(staging, output, num_shards)

    # Beam's sink still lists its shard names, but only in the staging directory.
    assert all(root.startswith(staging) for root in walked), walked
    assert walked or num_shards == 1
    assert not os.path.exists(staging)
    if num_shards == 1:
        assert published == [output] and os.path.exists(stale)   # a single file replaces no shard
    else:
        assert not os.path.exists(stale)
        assert sorted(published) == sorted(beam_ingest.match_files(output + "-*"))
        assert not os.path.exists(output)
        if num_shards:
            assert len(published) == num_shards
    # Every record once, in TFRecord framing TensorFlow's reader checks (lengths and CRCs).
    written = [r.numpy() for r in tf.data.TFRecordDataset(sorted(published))]
    assert sorted(written) == sorted(records)
