"""Pusher never pushes what was not blessed for exactly this model, and never pushes twice."""
import json
import os

import pytest
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components.guarded_pusher.executor import PUSH_MARKER, Executor


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


def make_blessing(blessed, current_model_id):
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = "/unused"
    blessing.id = 100 + current_model_id
    blessing.set_int_custom_property("blessed", blessed)
    blessing.set_int_custom_property("current_model_id", current_model_id)
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
    pushed = push(tmp_path, model, make_blessing(blessed, names))
    assert pushed.get_int_custom_property("pushed") == 0
    assert versions(tmp_path) == []


def test_blessed_model_is_pushed_once_with_a_marker(tmp_path):
    model = make_model(tmp_path, 7)
    first = push(tmp_path, model, make_blessing(1, 7))
    assert first.get_int_custom_property("pushed") == 1
    [version] = versions(tmp_path)
    destination = first.get_string_custom_property("pushed_destination")
    assert destination == str(tmp_path / "serving" / version)
    with open(os.path.join(destination, "saved_model.pb")) as f:
        assert f.read() == "model 7"
    with open(os.path.join(destination, PUSH_MARKER)) as f:
        assert json.load(f) == {"model_id": 7, "model_uri": model.uri}
    # Re-blessed later (a rerun): recorded as pushed, at the same place, no second copy.
    again = push(tmp_path, model, make_blessing(1, 7))
    assert again.get_int_custom_property("pushed") == 1
    assert again.get_string_custom_property("pushed_destination") == destination
    assert versions(tmp_path) == [version]


def test_single_group_regression_with_better_overall_is_never_pushed(tmp_path):
    """The real gate decides the blessing; the Pusher then refuses it."""
    import numpy as np

    from components.recall_evaluator import component, gate

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(40), 3)
    groups = np.where(labels < 30, "big", "small")
    centres = rng.normal(size=(40, 8))
    clean = centres[labels] + 0.05 * rng.normal(size=(120, 8))
    baseline = clean.copy()
    baseline[labels < 30] += 2.0 * rng.normal(size=(90, 8))      # baseline poor on "big"
    candidate = clean.copy()
    candidate[labels >= 30] += 2.0 * rng.normal(size=(30, 8))    # candidate poor on "small"
    metrics = component.evaluate(
        {"embeddings": candidate, "labels": labels, "groups": groups},
        gate.GateConfig(min_recall=0.0, max_drop=0.02),
        baseline={"embeddings": baseline, "labels": labels, "groups": groups})
    assert metrics["deltas"]["overall"]["recall@1"] > 0            # overall improved
    assert metrics["deltas"]["small"]["recall@1"] < -0.02          # one group regressed
    assert not metrics["blessed"]
    model = make_model(tmp_path, 9)
    pushed = push(tmp_path, model, make_blessing(int(metrics["blessed"]), 9))
    assert pushed.get_int_custom_property("pushed") == 0 and versions(tmp_path) == []
