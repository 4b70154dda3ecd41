"""Merging data sets: several lists, each labelled from 0, get disjoint label ranges."""
import json
import os

import pytest
import tensorflow as tf
from tfx import v1 as tfx

from components.face_example_gen.beam_ingest import label_offsets
from components.face_example_gen.component import FaceExampleGen
from tests import image_factory as images
from tests.pipeline_helpers import (
    examples_by_path,
    feature_value,
    node_executions,
    open_store,
    output_artifacts,
)
from tests.test_bad_input_matrix import CLI

BOX = {"x1": 2, "y1": 2, "x2": 30, "y2": 30}


@pytest.fixture
def two_datasets(tmp_path):
    """lists/a_trillion.json: labels 0..2 (3 ids); lists/b_vggface2.json: labels 0..4 (5 ids)."""
    root = tmp_path / "images"
    lists = tmp_path / "lists"
    lists.mkdir()
    expected = {}
    for name, dataset, identities in (("a_trillion.json", "trillion", 3),
                                      ("b_vggface2.json", "vggface2", 5)):
        records = {}
        for label in range(identities):
            for n in range(2):
                key = f"{dataset}/id{label}/{n}.jpg"
                (root / key).parent.mkdir(parents=True, exist_ok=True)
                (root / key).write_bytes(images.jpeg(32, 32, seed=label * 10 + n))
                records[key] = {"label": label, **BOX}
        (lists / name).write_text(json.dumps(records))
        expected[name] = records
    return tmp_path, expected


def test_offsets_follow_the_sorted_lists():
    assert label_offsets({"a": 2, "b": 4, "c": 0}, ["a", "b", "c"]) == {
        "a": [0, 2], "b": [3, 7], "c": [8, 8]}
    assert label_offsets({"b": 1}, ["a", "b"]) == {"a": [0, -1], "b": [0, 1]}   # a: no labels


def test_cli_merges_two_lists_without_label_collisions(two_datasets, tmp_path, capsys):
    base, expected = two_datasets
    output = str(tmp_path / "merged.tfrecord")
    status = CLI.run(["--root_path", str(base / "images"), "--json_file",
                      str(base / "lists" / "a_trillion.json"), str(base / "lists" / "b_vggface2.json"),
                      "--output", output, "--offset_labels"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "labels 0..2 <- " in printed and "labels 3..7 <- " in printed
    labels = {}
    for record in tf.data.TFRecordDataset(output):
        example = tf.train.Example.FromString(record.numpy())
        labels[feature_value(example, "path").decode()] = feature_value(example, "label")
    for key, value in expected["a_trillion.json"].items():
        assert labels[key] == value["label"]
    for key, value in expected["b_vggface2.json"].items():
        assert labels[key] == value["label"] + 3
    assert len(set(labels.values())) == 8


def test_pipeline_records_the_label_ranges_with_the_artifact(two_datasets, tmp_path):
    base, _ = two_datasets
    example_gen = FaceExampleGen(input_base=str(base / "lists"), image_root=str(base / "images"),
                                 list_files={"train": "*.json", "eval": "b_*.json"},
                                 offset_labels=True)
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="merge", pipeline_root=str(tmp_path / "root"), components=[example_gen],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(tmp_path / "m.sqlite"))))
    store = open_store(str(tmp_path / "m.sqlite"))
    [examples] = output_artifacts(store, node_executions(store, "FaceExampleGen")[0].id, "examples")
    summary = json.loads(examples.custom_properties["ingest_summary"].string_value)
    ranges = {os.path.basename(k): v for k, v in summary["train"]["label_ranges"].items()}
    assert ranges == {"a_trillion.json": [0, 2], "b_vggface2.json": [3, 7]}
    train = examples_by_path(os.path.join(examples.uri, "Split-train"))
    assert sorted({feature_value(e, "label") for e in train.values()}) == list(range(8))
