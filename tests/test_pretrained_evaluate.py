"""Evaluating a model not trained by the run (`--evaluate-model`), and the real-photo review of face-api's
pretrained network on the 204 London photos.

The fast checks build the pipeline (no run) and embed the London photos in-process with the same
alignment and network the exported model holds, then judge them with the evaluator's own
`evaluate`; the full pipeline run (`tools.review_pretrained`) is marked slow.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import local_runner
from pipeline import configs, model_import
from pipeline import pipeline as pipeline_module
from tests.conftest import LONDON_FACES
from tests.test_pretrained import face_api_package  # noqa: F401 (fixture)
from tools import review_pretrained


def components_for(tmp_path, **changes):
    config = configs.PipelineConfig(pipeline_root=str(tmp_path / "root"), metadata_path=None, **changes)
    return {c.id: c for c in pipeline_module.create_components(config)}


def test_evaluate_model_imports_the_model_in_place_of_the_trainer_and_pushes_only_when_asked(tmp_path):
    built = components_for(tmp_path, evaluate_model=str(tmp_path / "model"), last_stage="evaluate")
    assert "Trainer" not in built and "Pusher" not in built
    importer = built["evaluated_model"]
    assert importer.exec_properties["artifact_uri"] == str(tmp_path / "model")
    evaluator = built["RecallEvaluator"]
    assert evaluator.inputs["model"] is importer.outputs["result"]
    pushed = components_for(tmp_path, evaluate_model=str(tmp_path / "model"))
    assert pushed["Pusher"].inputs["model"] is pushed["evaluated_model"].outputs["result"]


def test_transform_gets_the_crop_recipe_of_the_backbone_or_of_the_setting(tmp_path):
    def transform_config(**changes):
        return json.loads(components_for(tmp_path, last_stage="transform", **changes)["Transform"]
                          .exec_properties["custom_config"])

    assert "crop" not in transform_config()          # the box crop: existing runs keep their cache
    assert transform_config(model={"backbone": "face_recognition_net"})["crop"] == "face_api_aligned"
    assert transform_config(crop="face_api_aligned")["crop"] == "face_api_aligned"


def test_runner_flags_evaluate_without_pushing_unless_asked():
    args = local_runner.parse_args(["--evaluate-model", "some/dir"])
    assert local_runner.build_config(args).last_stage == "evaluate"
    args = local_runner.parse_args(["--evaluate-model", "some/dir", "--push"])
    config = local_runner.build_config(args)
    assert (config.evaluate_model, config.last_stage) == ("some/dir", "push")


def test_a_savedmodel_directory_is_copied_into_a_model_artifact_and_a_wrong_one_named(tmp_path):
    saved = tmp_path / "pushed" / "1700000000"
    saved.mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"graph")
    config = configs.PipelineConfig(pipeline_root=str(tmp_path / "root"), evaluate_model=str(saved))
    model_import.resolve_evaluate_model(config, say=lambda _: None)
    assert config.evaluate_model.startswith(str(tmp_path / "root" / "imported_models"))
    with open(os.path.join(config.evaluate_model, "Format-Serving", "saved_model.pb"), "rb") as f:
        assert f.read() == b"graph"
    artifact = tmp_path / "artifact"
    (artifact / "Format-Serving").mkdir(parents=True)
    (artifact / "Format-Serving" / "saved_model.pb").write_bytes(b"graph")
    config.evaluate_model = str(artifact)
    model_import.resolve_evaluate_model(config, say=lambda _: None)
    assert config.evaluate_model == str(artifact)
    config.evaluate_model = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="no SavedModel there"):
        model_import.resolve_evaluate_model(config, say=lambda _: None)
    config.evaluate_model = "pretrained:resnet"
    with pytest.raises(ValueError, match="unknown pretrained model 'resnet'; known: "
                                         "pretrained:face_recognition_net"):
        model_import.resolve_evaluate_model(config, say=lambda _: None)


# ----------------------------------------------------------------------------------------------
# The review on the 204 London photos, in-process.

@pytest.fixture(scope="module")
def london_embeddings(face_api_package):  # noqa: F811
    """Every photo through crop_faces_aligned and the network, as the exported model embeds it."""
    from models.pretrained import alignment, export_pretrained

    with open(os.path.join(LONDON_FACES, "image_list.json")) as f:
        records = json.load(f)
    keys = sorted(records)
    model = tf.function(export_pretrained.embedding_model(), autograph=False)
    align = tf.function(alignment.crop_faces_aligned, autograph=False)
    embeddings = []
    for start in range(0, len(keys), 16):
        batch = keys[start:start + 16]
        data = []
        for key in batch:
            with open(os.path.join(LONDON_FACES, "images", key), "rb") as f:
                data.append(f.read())
        boxes = [[records[k][c] for c in ("x1", "y1", "x2", "y2")] for k in batch]
        crops = align(tf.constant(data), tf.constant(boxes, tf.int64))
        embeddings.append(model(crops)["embedding"].numpy())
    e = np.concatenate(embeddings).astype(np.float64)
    return {"embeddings": e / np.linalg.norm(e, axis=1, keepdims=True),
            "labels": np.array([records[k]["label"] for k in keys]),
            "groups": np.array([k.split("/")[0] for k in keys])}


def numpy_recall_at_1(embeddings, labels):
    """Leave-one-out nearest neighbour by cosine over the whole set, from the definition."""
    scores = embeddings @ embeddings.T
    np.fill_diagonal(scores, -np.inf)
    return float(np.mean(labels[np.argmax(scores, axis=1)] == labels))


def test_review_recall_at_1_is_high_but_the_fmr_gate_refuses_and_recall_only_blesses(london_embeddings):
    from components.recall_evaluator import executor, gate

    settings = review_pretrained.gate_settings(review_pretrained.DEFAULT_MAX_FMR_RATIO)
    metrics = executor.evaluate(london_embeddings, gate.GateConfig(**settings))
    overall = metrics["candidate"]["overall"]["recall@1"]
    assert overall == pytest.approx(numpy_recall_at_1(london_embeddings["embeddings"],
                                                       london_embeddings["labels"]))
    assert overall >= 0.98
    verification = metrics["verification"]
    assert sorted(verification["ratio_groups"]) == ["black", "east_asian", "west_asian", "white"]
    fmr = {g: verification[g]["fmr"] for g in verification["ratio_groups"]}
    print(f"London review in-process: Recall@1 {overall:.3f}, threshold {verification['threshold']:.4f}, "
          f"FMR {fmr}, differential {verification['fmr_differential']:.1f}")
    # The differential the 1:1 view shows: the largest group FMR over the target, beyond the bound.
    assert verification["fmr_differential"] == pytest.approx(max(fmr.values()) / verification["target_fmr"])
    assert verification["fmr_differential"] > settings["max_fmr_ratio"]
    failed = [v["rule"] for v in metrics["verdicts"] if not v["passed"]]
    assert failed == ["max_fmr_ratio"], metrics["failed_rules"]
    recall_only = review_pretrained.recall_only_verdicts(metrics, settings)
    assert recall_only and all(v["passed"] for v in recall_only)


@pytest.mark.slow
def test_review_command_runs_the_pipeline_on_all_204_photos_and_writes_the_report(tmp_path, capsys):
    assert review_pretrained.main(["--work", str(tmp_path)]) == 0
    with open(tmp_path / "review.md") as f:
        text = f.read()
    assert "Pipeline gate" in text and "NOT BLESSED" in text
    assert "Recall@1-only gate (same settings without max_fmr_ratio): BLESSED" in text
    from pipeline import runs as review

    run = review.list_runs(review.open_store(str(tmp_path / "metadata.sqlite")))[-1]
    assert run["blessed"] is False and run["pushed"] is None
    assert run["recall_at_1"]["overall"] >= 0.98
    assert os.path.isfile(run["report"])


@pytest.mark.slow
def test_an_imported_pretrained_model_is_pushed_with_its_operating_point_card_and_gallery(
        small_sample, tmp_path, face_api_package):  # noqa: F811
    """`--evaluate-model pretrained:face_recognition_net --push`: the pushed copy carries the
    evaluation's operating point (read by the model itself) and decides with it: `verify` on a
    genuine and an impostor eval pair scores the NumPy cosine of the embeddings serving_default
    gives (the evaluator's route) and matches exactly when that score is at or above the shipped
    threshold. Its card validates against the Model Card Toolkit schema; the report has the
    gallery of the crops that model saw (its aligned crop)."""
    import local_runner
    from core import json_safe, operating_point
    from pipeline import runs as review
    from tests import model_card_schema

    local_runner.run(["--evaluate-model", "pretrained:face_recognition_net", "--push",
                      "--data-root", small_sample, "--pipeline-root", str(tmp_path / "root"),
                      "--metadata", str(tmp_path / "m.sqlite"),
                      "--serving-dir", str(tmp_path / "serving"), "--report-examples", "2",
                      "--gate", "min_recall=0.0", "max_drop=1.0", "min_group_identities=1"])
    run = review.list_runs(review.open_store(str(tmp_path / "m.sqlite")))[-1]
    assert run["blessed"] and run["pushed"]
    with open(os.path.join(run["evaluation_uri"], "metrics.json")) as f:
        metrics = json_safe.load(f)
    pushed = run["pushed_to"]
    with open(os.path.join(pushed, "assets", operating_point.FILE)) as f:
        point = operating_point.loads(f.read())
    assert point["threshold"] == metrics["verification"]["threshold"]
    assert tf.saved_model.load(pushed).operating_point()["threshold"].numpy() == point["threshold"]
    with open(os.path.join(pushed, "model_card.json")) as f:
        card = json.load(f)
    assert "face_recognition_net" in card["model_parameters"]["model_architecture"]
    model_card_schema.assert_valid(card)
    _verify_decides_eval_pairs_at_the_shipped_threshold(pushed, point)
    assert all(len(kinds["impostor"]) <= 2 for kinds in metrics["error_gallery"].values())
    with open(run["report"]) as f:
        page = f.read()
    assert page.count("<img class='gallery'") == 2 * sum(
        len(pairs) for kinds in metrics["error_gallery"].values() for pairs in kinds.values())


def _verify_decides_eval_pairs_at_the_shipped_threshold(pushed: str, point) -> None:
    """The pushed model's `verify` on a genuine and an impostor pair of the eval split it was
    evaluated on (point's eval data): the highest-scoring genuine pair and the lowest-scoring
    impostor pair by NumPy's cosine of serving_default's embeddings (the evaluator's route), so
    that, with an overall FNMR and FMR under 1, one matches and one does not. verify's score is
    that cosine, its match the score >= the operating point's threshold."""
    from models import export
    from tests.pipeline_helpers import examples_by_path, feature_value

    data = point["eval_data"]
    examples = examples_by_path(os.path.join(data["examples_uri"], f"Split-{data['split']}"))
    keys = sorted(examples)
    assert len(keys) == data["n_images"]
    loaded = tf.saved_model.load(pushed)
    served = loaded.signatures[export.SERVING_DEFAULT](examples=tf.constant(
        [examples[k].SerializeToString() for k in keys]))[export.OUTPUT].numpy().astype(np.float64)
    unit = served / np.linalg.norm(served, axis=1, keepdims=True)
    cosines = unit @ unit.T
    labels = np.array([feature_value(examples[k], "label") for k in keys])
    first, second = np.triu_indices(len(keys), k=1)
    genuine = labels[first] == labels[second]
    pair_scores = cosines[first, second]
    best_genuine = np.flatnonzero(genuine)[np.argmax(pair_scores[genuine])]
    worst_impostor = np.flatnonzero(~genuine)[np.argmin(pair_scores[~genuine])]
    chosen = [best_genuine, worst_impostor]
    request = {}
    for side, index in (("a", first[chosen]), ("b", second[chosen])):
        request[f"image_bytes_{side}"] = tf.constant(
            [feature_value(examples[keys[i]], "image_raw") for i in index])
        for box in ("x1", "y1", "x2", "y2"):
            request[f"{box}_{side}"] = tf.constant(
                [feature_value(examples[keys[i]], box) for i in index], tf.int64)
    decided = loaded.signatures[export.VERIFY](**request)
    scores = decided["score"].numpy()
    np.testing.assert_allclose(scores, pair_scores[chosen], atol=1e-5)
    threshold = point["threshold"]
    np.testing.assert_array_equal(decided["match"].numpy(), scores.astype(np.float64) >= threshold)
    assert (decided["threshold"].numpy() == threshold).all()
    overall = point["rates"]["overall"]
    assert overall["fnmr"] < 1 and overall["fmr"] < 1
    assert decided["match"].numpy().tolist() == [True, False]
    print(f"pushed pretrained model: genuine score {scores[0]:.4f}, impostor {scores[1]:.4f}, "
          f"threshold {threshold:.4f}")
