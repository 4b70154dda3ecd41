"""The whole pipeline with LocalDagRunner on a small generated set, three runs:

1. first run: trains, blesses, pushes, converts to TFLite; the pushed model loads and embeds an
   image;
2. changed Trainer settings: upstream components come from the cache, the new model is evaluated
   against the first one as baseline;
3. thresholds that cannot be met: not blessed, nothing new pushed.
"""
import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx import v1 as tfx

from core import json_safe
from pipeline import configs
from pipeline import runs as pipeline_runs
from pipeline.pipeline import create_pipeline
from tests import model_card_schema
from tests.pipeline_helpers import node_executions, open_store, output_artifacts, state_name
from tests.trainer_helpers import TINY_TRAINING, split_settings
from tools import review

pytestmark = pytest.mark.pipeline


def run_pipeline(work, data, trainer_settings, gate):
    """One run; `trainer_settings` flat (the Trainer's custom_config), split into the model and
    training sections here."""
    model, training = split_settings(trainer_settings)
    config = configs.PipelineConfig(
        pipeline_root=str(work / "root"), metadata_path=str(work / "m.sqlite"),
        serving_model_dir=str(work / "serving"),
        ingest=configs.IngestConfig(data_root=data, image_root=os.path.join(data, "images")),
        beam_pipeline_args=[], image_size=32, model=model, training=training, gate=gate,
        tflite_levels=[0])
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config))
    return open_store(config.metadata_path)


def latest(store, node):
    return node_executions(store, node)[-1]


def read_metrics(store):
    [evaluation] = output_artifacts(store, latest(store, "RecallEvaluator").id, "evaluation")
    with open(os.path.join(evaluation.uri, "metrics.json")) as f:
        return json_safe.load(f), evaluation


def test_three_runs_bless_cache_compare_and_refuse(small_sample, tmp_path, caplog):
    # The tiny eval set has 2 unseen identities per group, under the gate's default minimum of 10:
    # this test is about blessing, caching and refusing, not about group sizes.
    gate = {"min_recall": 0.0, "max_drop": 1.0, "min_group_identities": 1}

    # 1. First run.
    store = run_pipeline(tmp_path, small_sample, TINY_TRAINING, gate)
    [model1] = output_artifacts(store, latest(store, "Trainer").id, "model")
    metrics, evaluation = read_metrics(store)
    assert metrics["blessed"] and metrics["baseline_model"] is None
    assert metrics["model"]["id"] == model1.id
    [blessing] = output_artifacts(store, latest(store, "RecallEvaluator").id, "blessing")
    assert blessing.custom_properties["blessed"].int_value == 1
    assert blessing.custom_properties["current_model_id"].int_value == model1.id
    assert os.path.exists(os.path.join(blessing.uri, "BLESSED"))
    with open(os.path.join(evaluation.uri, "report.html")) as f:
        page = f.read()
    for group in ("north", "south", "east", "west"):
        assert f"<td>{group}</td>" in page
        assert f"{metrics['candidate'][group]['recall@1']:.4f}" in page
    [push1] = output_artifacts(store, latest(store, "Pusher").id, "pushed_model")
    assert push1.custom_properties["pushed"].int_value == 1
    pushed_dir = push1.custom_properties["pushed_destination"].string_value
    assert os.listdir(tmp_path / "serving") == [os.path.basename(pushed_dir)]

    # The pushed model loads and embeds an image.
    with open(os.path.join(small_sample, "test.json")) as f:
        key, box = sorted(json.load(f).items())[0]
    with open(os.path.join(small_sample, "images", key), "rb") as f:
        image = f.read()
    served = tf.saved_model.load(pushed_dir).signatures["embed_images"](
        image_bytes=tf.constant([image]),
        **{k: tf.constant([box[k]], tf.int64) for k in ("x1", "y1", "x2", "y2")})["embedding"]
    assert served.shape == (1, TINY_TRAINING["embedding_size"])
    assert np.linalg.norm(served.numpy()) == pytest.approx(1.0, abs=1e-5)
    # It ships with the evaluation's operating point, decides with it, and has its card; the
    # report shows the error gallery and metrics.json names its pairs.
    from core import operating_point
    loaded = tf.saved_model.load(pushed_dir)
    threshold = metrics["verification"]["threshold"]
    assert loaded.operating_point()["threshold"].numpy() == threshold
    with open(os.path.join(pushed_dir, "assets", operating_point.FILE)) as f:
        point = operating_point.loads(f.read())
    assert point["model"]["uri"] == model1.uri and point["evaluation"]["uri"] == evaluation.uri
    # The evaluation is named by the execution that wrote it (its artifact had no id yet then),
    # and the shipped copy names the blessing it was pushed on: both as ML Metadata has them.
    evaluator_run = latest(store, "RecallEvaluator")
    assert point["evaluation"]["execution_id"] == str(evaluator_run.id)
    [blessing] = output_artifacts(store, evaluator_run.id, "blessing")
    assert point["blessing"] == {"id": blessing.id, "uri": blessing.uri}
    pair = {f"{name}_{side}": value for side in ("a", "b") for name, value in
            [("image_bytes", tf.constant([image]))]
            + [(k, tf.constant([box[k]], tf.int64)) for k in ("x1", "y1", "x2", "y2")]}
    decided = loaded.signatures["verify"](**pair)
    assert decided["score"].numpy()[0] == pytest.approx(1.0, abs=1e-5)
    assert decided["match"].numpy()[0] == (decided["score"].numpy()[0] >= threshold)
    # The card the pipeline wrote, as pushed, in the Model Card Toolkit schema.
    with open(os.path.join(pushed_dir, "model_card.json")) as f:
        model_card_schema.assert_valid(json.load(f))
    assert "id='error-gallery'" in page and "data:image/png;base64" in page
    assert set(metrics["error_gallery"]) == {"overall", "north", "south", "east", "west"}

    # The optional TFLite step converted the pushed model and checked it against the SavedModel.
    from models import tflite as tflite_core
    from tools import embedding_projector
    [tflite] = output_artifacts(store, latest(store, "TFLiteExporter").id, "tflite_model")
    assert tflite.custom_properties["exported"].int_value == 1
    assert tflite.custom_properties["source_model"].string_value == pushed_dir
    with open(os.path.join(tflite.uri, tflite_core.REPORT_FILE)) as f:
        report = json.load(f)
    assert list(report["levels"]) == ["0"] and report["passed"]
    assert report["levels"]["0"]["threshold"] == threshold
    assert report["levels"]["0"]["cosine_mean"] >= tflite_core.MIN_MEAN_COSINE[0]
    assert os.path.getsize(tflite_core.tflite_path(tflite.uri, 0)) > 1000

    # The projector command runs on the real pushed model.
    common = ["--model", pushed_dir, "--list", os.path.join(small_sample, "test.json"),
              "--image-root", os.path.join(small_sample, "images")]
    assert embedding_projector.main(common + ["--out", str(tmp_path / "projector")]) == 0
    with open(os.path.join(small_sample, "test.json")) as f:
        n_test = len(json.load(f))
    with open(tmp_path / "projector" / "metadata.tsv") as f:
        assert len(f.read().splitlines()) == n_test + 1          # a header, then a row per image

    # 2. New Trainer settings: upstream cached, the first model is the baseline.
    store = run_pipeline(tmp_path, small_sample, {**TINY_TRAINING, "seed": 1}, gate)
    for node in ("FaceExampleGen", "StatisticsGen", "Transform"):
        assert state_name(latest(store, node)) == "CACHED", node
    assert state_name(latest(store, "Trainer")) == "COMPLETE"
    [model2] = output_artifacts(store, latest(store, "Trainer").id, "model")
    metrics, _ = read_metrics(store)
    assert metrics["baseline_model"]["id"] == model1.id and metrics["model"]["id"] == model2.id
    for scope, entry in metrics["candidate"].items():
        expected = entry["recall@1"] - metrics["baseline"][scope]["recall@1"]
        assert metrics["deltas"][scope]["recall@1"] == pytest.approx(expected)
    assert any(v["rule"] == "max_drop" for v in metrics["verdicts"])
    versions_after_two = sorted(os.listdir(tmp_path / "serving"))

    # 3. A bar this model cannot clear (perfect Recall@1 everywhere): not blessed, no push,
    # and the log names the failed rules.
    with caplog.at_level(logging.WARNING):
        store = run_pipeline(tmp_path, small_sample, {**TINY_TRAINING, "seed": 2},
                             {**gate, "min_recall": 1.0})
    [failed_log] = [r.getMessage() for r in caplog.records if "NOT blessed" in r.getMessage()]
    assert "Failed rules: overall: Recall@1" in failed_log and "< bar 1.0000" in failed_log
    metrics, _ = read_metrics(store)
    assert metrics["candidate"]["overall"]["recall@1"] < 1.0     # a tiny 2-epoch model
    assert not metrics["blessed"]
    assert ("min_recall", "overall") in [(v["rule"], v["scope"]) for v in metrics["verdicts"]
                                         if not v["passed"]]
    [blessing] = output_artifacts(store, latest(store, "RecallEvaluator").id, "blessing")
    assert blessing.custom_properties["blessed"].int_value == 0
    assert os.path.exists(os.path.join(blessing.uri, "NOT_BLESSED"))
    [push3] = output_artifacts(store, latest(store, "Pusher").id, "pushed_model")
    assert push3.custom_properties["pushed"].int_value == 0
    assert sorted(os.listdir(tmp_path / "serving")) == versions_after_two
    [tflite3] = output_artifacts(store, latest(store, "TFLiteExporter").id, "tflite_model")
    assert tflite3.custom_properties["exported"].int_value == 0     # nothing pushed, nothing made

    # The review command sees all three runs.
    runs = pipeline_runs.list_runs(store)
    assert len(runs) == 3
    assert [r["model_id"] for r in runs][:2] == [model1.id, model2.id]
    assert runs[0]["blessed"] and runs[0]["pushed"]
    assert runs[-1]["recall_at_1"] == {k: v["recall@1"] for k, v in metrics["candidate"].items()}
    assert review.main(["--metadata", str(tmp_path / "m.sqlite"), "report", "-1"]) == 0
    table = pipeline_runs.format_compare(runs[0], runs[1])
    assert "west" in table and "change" in table
    listing = pipeline_runs.format_list(runs).splitlines()
    assert listing[0].split()[:4] == ["run", "started", "model", "overall"]
    assert [line.split()[-2:] for line in listing[1:]] == [["yes", "yes"], ["yes", "yes"],
                                                          ["no", "no"]]
    overall = f"{metrics['candidate']['overall']['recall@1']:.3f}"
    assert listing[3].split()[3] == overall
    shown = pipeline_runs.format_show(runs[-1])
    assert f"overall {overall}" in shown
    pixels = metrics["pixel_baseline"]["overall"]["recall@1"]
    assert "raw pixels" in shown and f"overall {pixels:.3f}" in shown.split("raw pixels")[1]
    assert "FAIL  overall: Recall@1" in shown
