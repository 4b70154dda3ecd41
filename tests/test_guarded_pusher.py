"""Pusher never pushes what was not blessed for exactly this model, and never pushes twice."""
import json
import os
import tempfile

import pytest
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components.guarded_pusher.executor import ASSET_PATH, PUSH_MARKER, Executor
from core import operating_point


@pytest.fixture(autouse=True)
def _temporary_files_in_tmp_path(tmp_path, monkeypatch):
    """Blessings made with mkdtemp land in the test's directory, which pytest removes."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    os.makedirs(tempfile.tempdir)


def make_model(tmp_path, model_id):
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / f"model{model_id}")
    model.id = model_id
    serving = os.path.join(model.uri, "Format-Serving")
    os.makedirs(os.path.join(serving, "variables"))
    for name in ("saved_model.pb", "variables/variables.index"):
        with open(os.path.join(serving, name), "w") as f:
            f.write(f"model {model_id}")
    return model


def point_for(model_uri, threshold=0.25, keys=("a/1.jpg", "b/2.jpg")):
    """An operating point as the evaluator writes it, measured for the model at `model_uri`."""
    metrics = {"verification": {"target_fmr": 1e-3, "threshold": threshold,
                                "overall": {"n_genuine": 4, "n_impostor": 90, "fnmr": 0.25,
                                            "fnmr_ci": [0.0, 0.5], "fmr": 0.0, "fmr_ci": [0.0, 0.0]}},
               "confidence": 0.95, "gate_config": {"target_fmr": 1e-3}, "blessed": True,
               "failed_rules": []}
    return operating_point.build(metrics, "/examples", "eval", keys,
                                 evaluation={"uri": "/evaluation", "execution_id": "5"},
                                 model={"id": 7, "uri": model_uri})


def make_blessing(blessed, current_model_id, model=None, point=None, card=True):
    """A blessing naming `current_model_id`; with `model` (or an explicit `point`), it carries
    the operating point the evaluator writes for that model, and (`card`) a model card."""
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = tempfile.mkdtemp(prefix="blessing")
    blessing.id = 100 + current_model_id
    blessing.set_int_custom_property("blessed", blessed)
    blessing.set_int_custom_property("current_model_id", current_model_id)
    if point is None and model is not None:
        point = point_for(model.uri)
    if point is not None:
        with open(os.path.join(blessing.uri, operating_point.FILE), "w") as f:
            f.write(point if isinstance(point, str) else operating_point.dumps(point))
    for name, text in (("model_card.json", "{}"), ("model_card.html", "<html></html>")) if card else ():
        with open(os.path.join(blessing.uri, name), "w") as f:
            f.write(text)
    return blessing


def push(tmp_path, model, blessing):
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / f"push-{model.id}-{blessing.id}-{len(os.listdir(tmp_path))}")
    destination = pusher_pb2.PushDestination(filesystem=pusher_pb2.PushDestination.Filesystem(
        base_directory=str(tmp_path / "serving")))
    Executor().Do({"model": [model], "model_blessing": [blessing]}, {"pushed_model": [pushed]},
                  {"push_destination": proto_utils.proto_to_json(destination)})
    return pushed


def versions(tmp_path):
    serving = tmp_path / "serving"
    return sorted(os.listdir(serving)) if serving.exists() else []


@pytest.mark.parametrize("blessed,names", [(0, 7), (1, 8)])
def test_not_blessed_or_blessed_for_another_model_is_not_pushed(tmp_path, blessed, names):
    model = make_model(tmp_path, 7)
    pushed = push(tmp_path, model, make_blessing(blessed, names, model))
    assert pushed.get_int_custom_property("pushed") == 0
    assert versions(tmp_path) == []


def test_blessed_model_is_pushed_once_with_a_marker(tmp_path):
    model = make_model(tmp_path, 7)
    first = push(tmp_path, model, make_blessing(1, 7, model))
    assert first.get_int_custom_property("pushed") == 1
    [version] = versions(tmp_path)
    destination = first.get_string_custom_property("pushed_destination")
    assert destination == str(tmp_path / "serving" / version)
    with open(os.path.join(destination, "saved_model.pb")) as f:
        assert f.read() == "model 7"
    with open(os.path.join(destination, PUSH_MARKER)) as f:
        assert json.load(f) == {"model_id": 7, "model_uri": model.uri}
    # Re-blessed later (a rerun): recorded as pushed, at the same place, no second copy.
    again = push(tmp_path, model, make_blessing(1, 7, model))
    assert again.get_int_custom_property("pushed") == 1
    assert again.get_string_custom_property("pushed_destination") == destination
    assert versions(tmp_path) == [version]


def test_single_group_regression_with_better_overall_is_never_pushed(tmp_path):
    """The real gate decides the blessing; the Pusher then refuses it."""
    import numpy as np

    from components.recall_evaluator import executor, gate

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(40), 3)
    groups = np.where(labels < 30, "big", "small")
    centres = rng.normal(size=(40, 8))
    clean = centres[labels] + 0.05 * rng.normal(size=(120, 8))
    baseline = clean.copy()
    baseline[labels < 30] += 2.0 * rng.normal(size=(90, 8))      # baseline poor on "big"
    candidate = clean.copy()
    candidate[labels >= 30] += 2.0 * rng.normal(size=(30, 8))    # candidate poor on "small"
    metrics = executor.evaluate(
        {"embeddings": candidate, "labels": labels, "groups": groups},
        gate.GateConfig(min_recall=0.0, max_drop=0.02),
        baseline={"embeddings": baseline, "labels": labels, "groups": groups})
    assert metrics["deltas"]["overall"]["recall@1"] > 0            # overall improved
    assert metrics["deltas"]["small"]["recall@1"] < -0.02          # one group regressed
    assert not metrics["blessed"]
    model = make_model(tmp_path, 9)
    pushed = push(tmp_path, model, make_blessing(int(metrics["blessed"]), 9, model))
    assert pushed.get_int_custom_property("pushed") == 0 and versions(tmp_path) == []


def unnamed_blessing(model, blessed=1):
    """A blessing without a current_model_id property (a resolver or wiring mistake), with an
    operating point for `model` (so only the missing name can refuse it)."""
    blessing = make_blessing(blessed, 0, model)
    del blessing.mlmd_artifact.custom_properties["current_model_id"]
    blessing.id = 99
    return blessing


@pytest.mark.parametrize("model_id,blessing", [
    (0, lambda m: unnamed_blessing(m)),       # unset on both sides: 0 == 0 must not count
    (0, lambda m: make_blessing(1, 0, m)),    # a blessing naming model 0, for a model without an id
    (7, lambda m: unnamed_blessing(m)),       # a blessing naming no model
    (0, lambda m: make_blessing(1, 7, m)),    # a model without an id is refused whatever the blessing
], ids=["both_unset", "blessing_names_0", "blessing_names_none", "model_without_id"])
def test_a_missing_or_zero_model_id_never_matches(tmp_path, model_id, blessing):
    model = make_model(tmp_path, model_id)
    pushed = push(tmp_path, model, blessing(model))
    assert pushed.get_int_custom_property("pushed") == 0
    assert versions(tmp_path) == []


def numeric_versions(tmp_path):
    return sorted(int(v) for v in versions(tmp_path))


def served_model(tmp_path):
    """What TF Serving loads: the highest numeric version directory."""
    with open(tmp_path / "serving" / str(numeric_versions(tmp_path)[-1]) / "saved_model.pb") as f:
        return f.read()


def test_a_reblessed_older_model_is_pushed_again_as_the_newest_version(tmp_path):
    """A (v1), then B (v2), then A re-blessed: serving would keep B if A were only recorded at
    v1, so A is copied to v3 > v2 and the artifact names v3. All three within the same second:
    TFX's timestamp versions would collide."""
    model_a, model_b = make_model(tmp_path, 7), make_model(tmp_path, 8)
    first = push(tmp_path, model_a, make_blessing(1, 7, model_a))
    second = push(tmp_path, model_b, make_blessing(1, 8, model_b))
    v1, v2 = numeric_versions(tmp_path)
    assert v1 < v2 and served_model(tmp_path) == "model 8"
    assert first.get_string_custom_property("pushed_version") == str(v1)
    assert second.get_string_custom_property("pushed_version") == str(v2)

    again = push(tmp_path, model_a, make_blessing(1, 7, model_a))
    assert again.get_int_custom_property("pushed") == 1
    assert numeric_versions(tmp_path)[:2] == [v1, v2]
    [v3] = numeric_versions(tmp_path)[2:]
    assert v3 > v2
    assert served_model(tmp_path) == "model 7"
    assert again.get_string_custom_property("pushed_version") == str(v3)
    assert again.get_string_custom_property("pushed_destination") == str(tmp_path / "serving" /
                                                                          str(v3))
    with open(tmp_path / "serving" / str(v3) / PUSH_MARKER) as f:
        assert json.load(f) == {"model_id": 7, "model_uri": model_a.uri}
    with open(tmp_path / "serving" / str(v3) / "variables" / "variables.index") as f:
        assert f.read() == "model 7"
    # A is now the newest: re-blessed once more, it is recorded at v3 and not copied again.
    last = push(tmp_path, model_a, make_blessing(1, 7, model_a))
    assert last.get_string_custom_property("pushed_version") == str(v3)
    assert numeric_versions(tmp_path) == [v1, v2, v3]


def test_a_new_version_is_above_every_existing_one_even_within_the_same_second(tmp_path,
                                                                               monkeypatch):
    import time

    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.5)    # the clock does not move
    (tmp_path / "serving" / "1800000000").mkdir(parents=True)     # a version from a faster clock
    (tmp_path / "serving" / "notes").mkdir()                      # not a version: ignored
    model_7, model_8 = make_model(tmp_path, 7), make_model(tmp_path, 8)
    pushed = push(tmp_path, model_7, make_blessing(1, 7, model_7))
    assert pushed.get_string_custom_property("pushed_version") == "1800000001"
    pushed = push(tmp_path, model_8, make_blessing(1, 8, model_8))
    assert pushed.get_string_custom_property("pushed_version") == "1800000002"


def shipped_point(destination):
    with open(os.path.join(destination, ASSET_PATH)) as f:
        return f.read()


def test_the_pushed_version_and_the_archive_copy_carry_the_blessings_operating_point(tmp_path):
    model = make_model(tmp_path, 7)
    point = point_for(model.uri, threshold=0.3125)
    blessing = make_blessing(1, 7, point=point)
    pushed = push(tmp_path, model, blessing)
    destination = pushed.get_string_custom_property("pushed_destination")
    for directory in (destination, pushed.uri):
        text = shipped_point(directory)
        # The evaluator's document, plus the blessing it was pushed on.
        assert text == operating_point.dumps({**point, "blessing": {"id": 107, "uri": blessing.uri}})
        assert operating_point.loads(text)["threshold"] == 0.3125
        with open(os.path.join(directory, "model_card.html")) as f:
            assert f.read() == "<html></html>"
    with open(os.path.join(destination, "saved_model.pb")) as f:
        assert f.read() == "model 7"


@pytest.mark.parametrize("missing", ["model_card.json", "model_card.html"])
def test_a_blessing_without_its_model_card_is_not_pushed(tmp_path, missing):
    model = make_model(tmp_path, 7)
    blessing = make_blessing(1, 7, model=model)
    os.remove(os.path.join(blessing.uri, missing))
    pushed = push(tmp_path, model, blessing)
    assert pushed.get_int_custom_property("pushed") == 0
    assert versions(tmp_path) == []


@pytest.mark.parametrize("problem", ["missing", "other_model", "placeholder", "no_threshold_first"])
def test_a_blessed_model_without_its_own_operating_point_is_never_pushed(tmp_path, problem):
    """Fail closed: no file, a point measured for another model, the export's placeholder, or a
    document whose first key is not the threshold (the serving graph could not read it)."""
    model = make_model(tmp_path, 7)
    point = {"missing": None,
             "other_model": point_for(str(tmp_path / "model8")),
             "placeholder": json.dumps(operating_point.PLACEHOLDER),
             "no_threshold_first": json.dumps({"target_fmr": 1e-3,
                                               **point_for(model.uri)})}[problem]
    pushed = push(tmp_path, model, make_blessing(1, 7, point=point))
    assert pushed.get_int_custom_property("pushed") == 0
    assert versions(tmp_path) == []


def test_a_model_reevaluated_on_other_data_is_pushed_again_with_the_new_operating_point(tmp_path):
    model = make_model(tmp_path, 7)
    first = push(tmp_path, model, make_blessing(1, 7, point=point_for(model.uri, 0.25)))
    # The same data again (another evaluation run): the same operating point, no new version.
    same = push(tmp_path, model, make_blessing(1, 7, point=point_for(model.uri, 0.25)))
    assert same.get_string_custom_property("pushed_version") == \
        first.get_string_custom_property("pushed_version")
    moved = point_for(model.uri, 0.375, keys=("a/1.jpg", "b/2.jpg", "c/3.jpg"))
    again = push(tmp_path, model, make_blessing(1, 7, point=moved))
    assert int(again.get_string_custom_property("pushed_version")) > \
        int(first.get_string_custom_property("pushed_version"))
    assert operating_point.loads(shipped_point(
        again.get_string_custom_property("pushed_destination")))["threshold"] == 0.375


def test_a_destination_other_than_a_versioned_directory_is_refused(tmp_path):
    model = make_model(tmp_path, 7)
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "push")
    destination = pusher_pb2.PushDestination()      # no filesystem base directory
    with pytest.raises(ValueError, match="operating point"):
        Executor().Do({"model": [model], "model_blessing": [make_blessing(1, 7, model)]},
                      {"pushed_model": [pushed]},
                      {"push_destination": proto_utils.proto_to_json(destination)})
