"""FaceExampleGen inside LocalDagRunner: Examples, counts, quarantine, caching, failure over the limit."""
import json
import os
import shutil

import pytest
from PIL import Image
from tfx import v1 as tfx

from components.face_example_gen.component import FaceExampleGen
from components.face_example_gen.executor import ingest_paths
from pipeline import configs
from pipeline.pipeline import create_pipeline
from tests import image_factory as images
from tests.pipeline_helpers import (
    examples_by_path,
    feature_value,
    node_executions,
    open_store,
    output_artifacts,
    state_name,
)

pytestmark = pytest.mark.pipeline


def run_example_gen(root, metadata, **kwargs):
    example_gen = FaceExampleGen(**kwargs)
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="ingest-test", pipeline_root=str(root), components=[example_gen],
        enable_cache=True,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(metadata)))
    tfx.orchestration.LocalDagRunner().run(pipeline)
    store = open_store(str(metadata))
    execution = node_executions(store, "FaceExampleGen")[-1]
    artifacts = output_artifacts(store, execution.id, "examples")
    return store, execution, artifacts


@pytest.fixture
def sample_copy(small_sample, tmp_path):
    """A private copy: tests here change images."""
    data = tmp_path / "data"
    shutil.copytree(small_sample, data)
    return data


def check_split_matches_list(split_uri, list_path, image_root):
    with open(list_path) as f:
        expected = json.load(f)
    examples = examples_by_path(split_uri)
    assert set(examples) == set(expected)
    for key, value in expected.items():
        example = examples[key]
        with open(os.path.join(image_root, key), "rb") as f:
            data = f.read()
        width, height = Image.open(os.path.join(image_root, key)).size
        assert feature_value(example, "image_raw") == data
        for name in ("label", "x1", "y1", "x2", "y2"):
            assert feature_value(example, name) == value[name]
        assert feature_value(example, "image_width") == width
        assert feature_value(example, "image_height") == height
        assert feature_value(example, "group") == key.split("/")[0].encode()


def test_ingest_then_cache_then_invalidate_on_a_changed_image(sample_copy, tmp_path):
    kwargs = dict(input_base=str(sample_copy), image_root=str(sample_copy / "images"))
    root, metadata = tmp_path / "root", tmp_path / "m.sqlite"

    store, execution, [examples] = run_example_gen(root, metadata, **kwargs)
    assert state_name(execution) == "COMPLETE"
    assert json.loads(examples.properties["split_names"].string_value) == ["train", "eval"]
    for split, list_name in (("train", "train.json"), ("eval", "test.json")):
        check_split_matches_list(os.path.join(examples.uri, f"Split-{split}"),
                                 sample_copy / list_name, sample_copy / "images")
    summary = json.loads(examples.custom_properties["ingest_summary"].string_value)
    assert summary["train"]["input"] == summary["train"]["valid"] == 36
    assert summary["eval"]["input"] == summary["eval"]["valid"] == 32
    assert examples.custom_properties["num_quarantined"].int_value == 0
    assert os.path.getsize(ingest_paths(examples.uri, "train")["quarantine"]) == 0

    # Same inputs: the cached artifact is reused.
    store, execution, [cached] = run_example_gen(root, metadata, **kwargs)
    assert state_name(execution) == "CACHED" and cached.id == examples.id

    # One image replaced (the lists unchanged): a new ingest, carrying the new bytes.
    with open(sample_copy / "train.json") as f:
        key = sorted(json.load(f))[0]
    replacement = images.jpeg(*Image.open(sample_copy / "images" / key).size, seed=99)
    (sample_copy / "images" / key).write_bytes(replacement)
    store, execution, [fresh] = run_example_gen(root, metadata, **kwargs)
    assert state_name(execution) == "COMPLETE" and fresh.id != examples.id
    examples_now = examples_by_path(os.path.join(fresh.uri, "Split-train"))
    assert feature_value(examples_now[key], "image_raw") == replacement


def test_bad_records_are_quarantined_and_over_the_limit_the_run_fails(sample_copy, tmp_path):
    with open(sample_copy / "train.json") as f:
        records = json.load(f)
    keys = sorted(records)
    (sample_copy / "images" / keys[0]).unlink()                         # missing_file
    records[keys[1]]["label"] = "seven"                                  # bad_label
    (sample_copy / "images" / keys[2]).write_bytes(b"not an image")      # undecodable_image
    with open(sample_copy / "train.json", "w") as f:
        json.dump(records, f)
    kwargs = dict(input_base=str(sample_copy), image_root=str(sample_copy / "images"))

    # 3 of 36 bad (8.3 %): within a 10 % limit, the run succeeds and keeps every good record.
    store, execution, [examples] = run_example_gen(tmp_path / "r1", tmp_path / "m1.sqlite",
                                                   max_bad_fraction=0.10, **kwargs)
    assert state_name(execution) == "COMPLETE"
    assert len(examples_by_path(os.path.join(examples.uri, "Split-train"))) == 33
    with open(ingest_paths(examples.uri, "train")["quarantine"]) as f:
        quarantine = {q["key"]: q["reason"] for q in map(json.loads, f)}
    assert quarantine == {keys[0]: "missing_file", keys[1]: "bad_label",
                          keys[2]: "undecodable_image"}
    summary = json.loads(examples.custom_properties["ingest_summary"].string_value)["train"]
    assert (summary["input"], summary["valid"], summary["quarantined"]) == (36, 33, 3)

    # Default limit (1 %): the run stops with the reasons, and no artifact is published.
    with pytest.raises(Exception) as info:
        run_example_gen(tmp_path / "r2", tmp_path / "m2.sqlite", **kwargs)
    message = str(info.value)
    assert "3 of 36" in message and "missing_file: 1" in message and "bad_label: 1" in message
    store = open_store(str(tmp_path / "m2.sqlite"))
    [failed] = node_executions(store, "FaceExampleGen")
    assert state_name(failed) == "FAILED"
    live = [a for a in output_artifacts(store, failed.id) if a.state == a.LIVE]
    assert live == []


def test_single_list_split_by_identity_hash(tmp_path):
    london = os.path.join(os.path.dirname(__file__), "data", "london_faces")
    store, execution, [examples] = run_example_gen(
        tmp_path / "root", tmp_path / "m.sqlite", input_base=london,
        image_root=os.path.join(london, "images"), list_files={"all": "image_list.json"},
        identity_split={"train": 3, "eval": 1})
    labels = {}
    for split in ("train", "eval"):
        by_path = examples_by_path(os.path.join(examples.uri, f"Split-{split}"))
        labels[split] = {feature_value(e, "label") for e in by_path.values()}
        assert len(by_path) == 2 * len(labels[split])          # both photos of a person together
    assert labels["train"].isdisjoint(labels["eval"])          # eval identities are unseen
    assert len(labels["train"]) + len(labels["eval"]) == 102
    assert len(labels["eval"]) > 10


def test_front_pipeline_validates_against_the_curated_schema(small_sample, tmp_path):
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    config = configs.PipelineConfig(
        pipeline_root=str(tmp_path / "root"), metadata_path=str(tmp_path / "m.sqlite"),
        ingest=configs.IngestConfig(data_root=small_sample,
                                    image_root=os.path.join(small_sample, "images")),
        beam_pipeline_args=[], last_stage="ingest")
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config))
    store = open_store(str(tmp_path / "m.sqlite"))
    for node in ("FaceExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator"):
        assert [state_name(e) for e in node_executions(store, node)] == ["COMPLETE"], node
    [validator] = node_executions(store, "ExampleValidator")
    [anomalies] = output_artifacts(store, validator.id, "anomalies")
    for split in ("train", "eval"):
        parsed = anomalies_pb2.Anomalies()
        with open(os.path.join(anomalies.uri, f"Split-{split}", "SchemaDiff.pb"), "rb") as f:
            parsed.ParseFromString(f.read())
        assert dict(parsed.anomaly_info) == {}, split
