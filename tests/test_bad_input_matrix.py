"""The bad-input matrix, through the generate_tfrecord CLI and through the pipeline's FaceExampleGen.

One mixed list holds 40 good records and one record of every bad kind: every good record becomes
an Example, every bad one a quarantine line with its reason, and valid + quarantined == input, in
both paths alike. Lists that are unreadable as a whole are checked one by one.
"""
import importlib.util
import json
import os

import pytest
import tensorflow as tf
from tfx import v1 as tfx

from pipeline import configs
from pipeline.pipeline import create_pipeline
from tests import image_factory as images
from tests.conftest import REPO_ROOT
from tests.pipeline_helpers import (
    examples_by_path,
    feature_value,
    node_executions,
    open_store,
    output_artifacts,
)
from tests.test_ingest_records import fifo_watchdog

pytestmark = pytest.mark.pipeline
BOX = {"x1": 4, "y1": 4, "x2": 40, "y2": 40}


def load_cli():
    spec = importlib.util.spec_from_file_location(
        "generate_tfrecord_main", os.path.join(REPO_ROOT, "generate_tfrecord", "main.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CLI = load_cli()

# key -> (value, file bytes or None, expected reason; None = accepted)
MATRIX = {
    "bad/missing_field.jpg": ({"label": 1, "x1": 1, "y1": 1, "x2": 9}, "jpeg", "missing_field"),
    "bad/extra_fields.jpg": ({"label": 1, **BOX, "score": 0.9, "note": "x"}, "jpeg", None),
    "bad/landmarks.jpg": ({"label": 1, **BOX, "landmarks": [[12, 15], [30, 15.5], [21, 24], [14, 32],
                                                            [28, 32]]}, "jpeg", None),
    "bad/landmarks_short.jpg": ({"label": 1, **BOX, "landmarks": [1, 2]}, "jpeg", "bad_landmarks"),
    "bad/landmarks_outside.jpg": ({"label": 1, **BOX, "landmarks": [[12, 15]] * 4 + [[500, 32]]},
                                  "jpeg", "bad_landmarks"),
    "bad/label_string.jpg": ({"label": "1", **BOX}, "jpeg", "bad_label"),
    "bad/label_float.jpg": ({"label": 1.5, **BOX}, "jpeg", "bad_label"),
    "bad/label_negative.jpg": ({"label": -3, **BOX}, "jpeg", "bad_label"),
    "bad/label_bool.jpg": ({"label": True, **BOX}, "jpeg", "bad_label"),
    "bad/box_inverted.jpg": ({"label": 1, **BOX, "x1": 40, "x2": 4}, "jpeg", "bad_box"),
    "bad/box_zero.jpg": ({"label": 1, **BOX, "y2": 4}, "jpeg", "bad_box"),
    "bad/box_strings.jpg": ({"label": 1, **BOX, "x1": "4"}, "jpeg", "bad_box"),
    "bad/box_outside.jpg": ({"label": 1, **BOX, "x2": 90}, "jpeg", "box_outside_image"),
    "bad/missing.jpg": ({"label": 1, **BOX}, None, "missing_file"),
    "bad/pipe.jpg": ({"label": 1, **BOX}, "fifo", "not_a_regular_file"),
    "bad/empty.jpg": ({"label": 1, **BOX}, b"", "empty_file"),
    "bad/truncated.jpg": ({"label": 1, **BOX}, "truncated", "truncated_image"),
    "bad/text.jpg": ({"label": 1, **BOX}, b"just some text\n", "undecodable_image"),
    "bad/image.gif": ({"label": 1, **BOX}, "GIF", "unsupported_format"),
    "bad/image.bmp": ({"label": 1, **BOX}, "BMP", "unsupported_format"),
    "bad/image.webp": ({"label": 1, **BOX}, "WEBP", "unsupported_format"),
    "bad/gray.jpg": ({"label": 1, **BOX}, "gray", None),
    "bad/rgba.png": ({"label": 1, **BOX}, "rgba", None),
    "bad/cmyk.jpg": ({"label": 1, **BOX}, "cmyk", "unsupported_color_mode"),
    "bad/bomb.png": ({"label": 1, **BOX}, "bomb", "image_too_large"),
    "../escape.jpg": ({"label": 1, **BOX}, None, "path_escape"),
    "/etc/hostname": ({"label": 1, **BOX}, None, "path_escape"),
    "bad/link_out.jpg": ({"label": 1, **BOX}, "symlink", "path_escape"),
    "bad/\udcffname.jpg": ({"label": 1, **BOX}, None, "bad_path"),
    "bad/" + "n" * 300 + ".jpg": ({"label": 1, **BOX}, None, "bad_path"),
}
DUPLICATE = "bad/duplicate.jpg"


def no_pipe_opened(base):
    """A run that opens the named pipe fails (instead of waiting for a writer forever)."""
    return fifo_watchdog([base / "images" / key for key, (_, kind, _) in MATRIX.items()
                          if kind == "fifo"])


def file_bytes(kind):
    return {"jpeg": images.jpeg(48, 48, seed=1), "truncated": images.jpeg(48, 48)[:700],
            "GIF": images.encode(images.pixels(48, 48), "GIF"),
            "BMP": images.encode(images.pixels(48, 48), "BMP"),
            "WEBP": images.encode(images.pixels(48, 48), "WEBP"),
            "gray": images.jpeg(48, 48, mode="L"), "rgba": images.png(48, 48, mode="RGBA"),
            "cmyk": images.encode(images.pixels(48, 48), "JPEG", mode="CMYK"),
            "bomb": images.png_bomb()}.get(kind, kind)


@pytest.fixture(scope="module")
def matrix_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("matrix")
    root = base / "images"
    good = {}
    for i in range(40):
        key = f"g{i % 4}/id{i // 4}/{i}.jpg"
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(images.jpeg(48, 48, seed=100 + i))
        good[key] = {"label": i // 4, **BOX}
    (base / "outside.jpg").write_bytes(images.jpeg(48, 48))
    (root / "bad").mkdir()
    for key, (_, kind, _) in MATRIX.items():
        if kind == "symlink":
            os.symlink(base / "outside.jpg", root / key)
        elif kind == "fifo":
            os.mkfifo(root / key)
        elif kind is not None and not key.startswith(("..", "/")) and "\udcff" not in key \
                and len(key) < 200:
            (root / key).write_bytes(file_bytes(kind))
    (root / DUPLICATE).write_bytes(images.jpeg(48, 48))
    parts = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in good.items()]
    parts += [f"{json.dumps(k)}: {json.dumps(v)}" for k, (v, _, _) in MATRIX.items()]
    parts += [f'"{DUPLICATE}": {json.dumps({"label": 2, **BOX})}'] * 2
    (base / "mixed.json").write_text("{\n" + ",\n".join(parts) + "\n}", encoding="utf-8")
    return base, good


def expected_quarantine():
    expected = {k.encode("utf-8", "backslashreplace").decode(): [reason]
                for k, (_, _, reason) in MATRIX.items() if reason}
    expected[DUPLICATE] = ["duplicate_key", "duplicate_key"]
    return expected


def accepted(good):
    return set(good) | {k for k, (_, _, reason) in MATRIX.items() if reason is None}


def quarantine_by_key(path):
    by_key = {}
    with open(path) as f:
        for line in f:
            entry = json.loads(line)
            assert entry["detail"] and entry["reason"]
            by_key.setdefault(entry["key"], []).append(entry["reason"])
    return by_key


def test_matrix_through_the_cli(matrix_dir, tmp_path, capsys):
    base, good = matrix_dir
    output = str(tmp_path / "out.tfrecord")
    with no_pipe_opened(base):
        status = CLI.run(["--root_path", str(base / "images"), "--json_file",
                          str(base / "mixed.json"), "--output", output, "--max_bad_fraction", "0.9"])
    assert status == 0
    n_input = len(good) + len(MATRIX) + 2
    n_valid = len(accepted(good))
    assert f"input={n_input} valid={n_valid} quarantined={n_input - n_valid}" in \
        capsys.readouterr().out
    paths = {feature_value(tf.train.Example.FromString(r.numpy()), "path").decode()
             for r in tf.data.TFRecordDataset(output)}
    assert paths == accepted(good)
    assert quarantine_by_key(output + ".quarantine.jsonl") == expected_quarantine()
    # Over the limit: exit status 2, counts per reason named.
    assert CLI.run(["--root_path", str(base / "images"), "--json_file", str(base / "mixed.json"),
                    "--output", output]) == 2
    message = capsys.readouterr().err
    assert "duplicate_key: 2" in message and "bad_label: 4" in message


def run_front(base, work, last_stage, max_bad_fraction):
    config = configs.PipelineConfig(
        pipeline_root=str(work / "root"), metadata_path=str(work / "m.sqlite"),
        ingest=configs.IngestConfig(data_root=str(base), image_root=str(base / "images"),
                                    list_files={"train": "mixed.json", "eval": "mixed.json"},
                                    max_bad_fraction=max_bad_fraction),
        beam_pipeline_args=[], last_stage=last_stage, image_size=32)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config))
    return open_store(config.metadata_path)


def test_matrix_through_the_pipeline(matrix_dir, tmp_path):
    base, good = matrix_dir
    with no_pipe_opened(base):
        store = run_front(base, tmp_path, "ingest", 0.9)
    [execution] = node_executions(store, "FaceExampleGen")
    [examples] = output_artifacts(store, execution.id, "examples")
    summary = json.loads(examples.custom_properties["ingest_summary"].string_value)
    for split in ("train", "eval"):
        assert set(examples_by_path(os.path.join(examples.uri, f"Split-{split}"))) == \
            accepted(good)
        assert summary[split]["valid"] + summary[split]["quarantined"] == \
            summary[split]["input"] == len(good) + len(MATRIX) + 2
        with_reasons = quarantine_by_key(os.path.join(examples.uri, "ingest",
                                                      f"{split}.quarantine.jsonl"))
        assert with_reasons == expected_quarantine()


def test_over_the_limit_the_run_stops_before_transform(matrix_dir, tmp_path):
    base, _ = matrix_dir
    with pytest.raises(Exception) as info:
        run_front(base, tmp_path, "transform", 0.01)
    message = str(info.value)
    assert "quarantined, over the limit" in message and "bad_label: 4" in message
    store = open_store(str(tmp_path / "m.sqlite"))
    assert node_executions(store, "Transform") == []


@pytest.mark.parametrize("name,text,reason", [
    ("notjson.json", "this is not json", "invalid_json"),
    ("truncated.json", '{"g0/id0/0.jpg": {"label": 0, "x1": 4, "y1"', "invalid_json"),
    ("array.json", '[{"g0/id0/0.jpg": {"label": 0}}]', "bad_top_level"),
    ("lines.jsonl", '[1, 2]\n"text"\n', "bad_top_level"),
    ("empty.json", "{}", None),
])
def test_unreadable_lists_fail_with_their_reason(matrix_dir, tmp_path, capsys, name, text,
                                                 reason):
    base, _ = matrix_dir
    (tmp_path / name).write_text(text)
    output = str(tmp_path / "out.tfrecord")
    status = CLI.run(["--root_path", str(base / "images"), "--json_file", str(tmp_path / name),
                      "--output", output])
    assert status != 0
    captured = capsys.readouterr()
    with open(output + ".summary.json") as f:
        summary = json.load(f)
    assert summary["valid"] + summary["quarantined"] == summary["input"]
    if reason:
        assert reason in captured.err and summary["valid"] == 0
        assert set(summary["reasons"]) == {reason}
    else:
        assert "holds no records" in captured.err and summary["input"] == 0


@pytest.mark.parametrize("name,text,reason", [
    ("truncated.json", '{"g0/id0/0.jpg": {"label": 0, "x1": 4, "y1"', "invalid_json"),
    ("array.json", '[{"g0/id0/0.jpg": {"label": 0}}]', "bad_top_level"),
])
def test_unreadable_lists_stop_the_pipeline_with_their_reason(matrix_dir, tmp_path, name, text,
                                                             reason):
    base, _ = matrix_dir
    (base / name).write_text(text)
    config = configs.PipelineConfig(
        pipeline_root=str(tmp_path / "root"), metadata_path=str(tmp_path / "m.sqlite"),
        ingest=configs.IngestConfig(data_root=str(base), image_root=str(base / "images"),
                                    list_files={"train": "mixed.json", "eval": name},
                                    max_bad_fraction=0.9),
        beam_pipeline_args=[], last_stage="transform", image_size=32)
    with pytest.raises(Exception) as info:
        tfx.orchestration.LocalDagRunner().run(create_pipeline(config))
    message = str(info.value)
    assert "split 'eval'" in message and f"{reason}: 1" in message
    store = open_store(config.metadata_path)
    assert node_executions(store, "Transform") == []


@pytest.mark.parametrize("name", ["bom.json", "bom.jsonl"])
def test_a_list_starting_with_a_byte_order_mark_is_read_by_the_cli(matrix_dir, tmp_path, capsys,
                                                                   name):
    """Windows tools start UTF-8 text with EF BB BF; the records after it are all read."""
    base, good = matrix_dir
    if name.endswith(".jsonl"):
        text = "".join(json.dumps({"path": k, **v}) + "\n" for k, v in good.items())
    else:
        text = json.dumps(good)
    (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    output = str(tmp_path / "out.tfrecord")
    assert CLI.run(["--root_path", str(base / "images"), "--json_file", str(tmp_path / name),
                    "--output", output]) == 0
    assert f"input={len(good)} valid={len(good)} quarantined=0" in capsys.readouterr().out
    paths = {feature_value(tf.train.Example.FromString(r.numpy()), "path").decode()
             for r in tf.data.TFRecordDataset(output)}
    assert paths == set(good)
