"""operating_point.json: the threshold and the rates at it re-derived by brute force from the
embeddings (NumPy cosine, the threshold rule of core/verification.py written out), the eval data's
fingerprint, and a document the serving graph can read (threshold first, finite)."""
import json
import math

import numpy as np
import pytest
from tfx.types import standard_artifacts

from components.recall_evaluator import executor, gate, shipping
from core import operating_point

TARGET = 0.05


@pytest.fixture(scope="module")
def evaluated():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(30), 3)
    groups = np.where(labels < 18, "g1", "g2")
    centres = rng.normal(size=(30, 16))
    embeddings = (centres[labels] + 0.8 * rng.normal(size=(90, 16))).astype(np.float32)
    config = gate.GateConfig(target_fmr=TARGET, min_recall=0.0, min_group_identities=1,
                             bootstrap_resamples=200)
    metrics = executor.evaluate({"embeddings": embeddings, "labels": labels, "groups": groups},
                                 config)
    keys = [f"{g}/{i:03d}.jpg" for i, g in enumerate(groups)]
    return embeddings, labels, groups, metrics, keys


def _brute_force(embeddings, labels, groups):
    unit = embeddings.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    first, second = np.triu_indices(len(labels), k=1)
    scores = (unit @ unit.T)[first, second]
    genuine = labels[first] == labels[second]
    impostor = np.sort(scores[~genuine])[::-1]
    allowed = math.floor(TARGET * len(impostor))
    rejected = impostor[allowed]                        # the (a + 1)-th largest impostor score
    upper = scores[scores > rejected + 1e-9].min()      # the next score of any pair above it
    return scores, genuine, first, second, (rejected + upper) / 2


def test_the_threshold_and_every_groups_rates_are_the_brute_force_ones(evaluated):
    embeddings, labels, groups, metrics, keys = evaluated
    point = operating_point.build(metrics, "/examples", "eval", keys,
                                  evaluation={"uri": "/ev", "execution_id": "4"},
                                  model={"id": 2, "uri": "/m"})
    scores, genuine, first, second, threshold = _brute_force(embeddings, labels, groups)
    assert point["threshold"] == pytest.approx(threshold, abs=1e-6)
    assert point["target_fmr"] == TARGET
    match = scores >= point["threshold"]
    for scope in ("overall", "g1", "g2"):
        inside = (np.ones_like(match) if scope == "overall"
                  else (groups[first] == scope) & (groups[second] == scope))
        rates = point["rates"][scope]
        assert rates["fmr"] == pytest.approx(match[inside & ~genuine].mean())
        assert rates["fnmr"] == pytest.approx((~match[inside & genuine]).mean())
        assert rates["n_impostor"] == (inside & ~genuine).sum()
        assert rates["fmr_ci"][0] <= rates["fmr"] <= rates["fmr_ci"][1]
        assert rates["fnmr_ci"][0] <= rates["fnmr"] <= rates["fnmr_ci"][1]
    assert point["rates"]["overall"]["fmr"] <= TARGET
    assert point["gate"]["settings"]["target_fmr"] == TARGET
    assert point["gate"]["blessed"] == metrics["blessed"]
    assert point["eval_data"] == {"examples_uri": "/examples", "split": "eval", "n_images": 90,
                                  "keys_sha256": operating_point.keys_digest(keys)}


def test_the_keys_digest_ignores_order_and_changes_with_any_key():
    keys = ["a/1.jpg", "b/2.jpg", "c/3.jpg"]
    assert operating_point.keys_digest(keys) == operating_point.keys_digest(keys[::-1])
    import hashlib

    assert operating_point.keys_digest(keys) == hashlib.sha256(
        "".join(k + "\n" for k in sorted(keys)).encode()).hexdigest()
    assert operating_point.keys_digest(keys) != operating_point.keys_digest(keys[:2])
    assert operating_point.keys_digest(keys) != operating_point.keys_digest(keys[:2] + ["c/4.jpg"])


def test_the_document_starts_with_a_threshold_that_reads_back_exactly(evaluated):
    *_, metrics, keys = evaluated
    point = operating_point.build(metrics, "/x", "eval", keys, {"uri": "/e", "execution_id": "1"},
                                  {"id": 2, "uri": "/m"})
    text = operating_point.dumps(point)
    assert next(iter(json.loads(text))) == "threshold"
    assert operating_point.threshold_of(text) == point["threshold"]
    assert operating_point.loads(text) == json.loads(text)


@pytest.mark.parametrize("text,reason", [
    (json.dumps(operating_point.PLACEHOLDER), "no threshold"),
    ("{", "not valid JSON"),
    (json.dumps({"threshold": 0.5}), "missing"),
])
def test_an_unusable_document_is_refused_with_the_reason(text, reason):
    with pytest.raises(ValueError, match=reason):
        operating_point.loads(text, source="blessing/operating_point.json")


def test_no_impostor_pair_means_no_operating_point():
    labels = np.zeros(4, dtype=int)
    metrics = executor.evaluate({"embeddings": np.eye(4, 3, dtype=np.float32) + 1, "labels": labels,
                                  "groups": np.array(["g"] * 4)},
                                 gate.GateConfig(min_group_identities=1))
    with pytest.raises(ValueError, match="no 1:1 threshold"):
        operating_point.build(metrics, "/x", "eval", ["k"] * 4, {}, {})


def test_the_evaluator_writes_the_same_document_into_its_evaluation_and_blessing(evaluated, tmp_path):
    *_, metrics, keys = evaluated
    artifacts = {}
    for name, kind in (("evaluation", standard_artifacts.ModelEvaluation),
                       ("blessing", standard_artifacts.ModelBlessing),
                       ("examples", standard_artifacts.Examples), ("model", standard_artifacts.Model)):
        artifacts[name] = kind()
        artifacts[name].uri = str(tmp_path / name)
    artifacts["model"].id, artifacts["evaluation"].id = 12, 34
    point = shipping.write_operating_point(metrics, keys, artifacts["examples"], "eval",
                                           artifacts["evaluation"], artifacts["blessing"],
                                           artifacts["model"], execution_id="41")
    for name in ("evaluation", "blessing"):
        with open(tmp_path / name / operating_point.FILE) as f:
            assert operating_point.loads(f.read()) == json.loads(operating_point.dumps(point))
    assert point["model"] == {"id": 12, "uri": str(tmp_path / "model")}
    # Named by its URI and the execution that wrote it: an output has no id before TFX publishes it.
    assert point["evaluation"] == {"uri": str(tmp_path / "evaluation"), "execution_id": "41"}
    assert point["eval_data"]["examples_uri"] == str(tmp_path / "examples")
