"""The release gate, the evaluation's numbers and its HTML report (no pipeline needed)."""
import re

import numpy as np
import pytest

from components.recall_evaluator import component, gate, report


def result(**scopes):
    """{'overall': (n_queries, r1), 'a': (...)} -> a recall_at_k-shaped dict."""
    return {s: {"n_queries": n, "n_skipped": 0, "recall@1": r, "recall@5": r}
            for s, (n, r) in scopes.items()}


def failed(verdicts):
    return sorted((v["rule"], v["scope"]) for v in verdicts if not v["passed"])


def test_every_group_must_clear_its_bar():
    config = gate.GateConfig(min_recall=0.6, group_min_recall={"b": 0.8})
    candidate = result(overall=(30, 0.9), a=(10, 0.65), b=(10, 0.79), c=(10, 0.59))
    assert failed(gate.evaluate_gate(candidate, config)) == [("min_recall", "b"),
                                                            ("min_recall", "c")]
    passing = result(overall=(30, 0.9), a=(10, 0.6), b=(10, 0.8), c=(10, 0.6))
    assert failed(gate.evaluate_gate(passing, config)) == []      # bars are inclusive


def test_a_single_group_regression_blocks_even_when_overall_improves():
    config = gate.GateConfig(min_recall=0.5, max_drop=0.02)
    baseline = result(overall=(30, 0.80), a=(10, 0.90), b=(10, 0.70))
    candidate = result(overall=(30, 0.85), a=(10, 0.97), b=(10, 0.67))   # b drops 0.03
    assert failed(gate.evaluate_gate(candidate, config, baseline)) == [("max_drop", "b")]
    within = result(overall=(30, 0.85), a=(10, 0.97), b=(10, 0.681))     # drops 0.019
    assert failed(gate.evaluate_gate(within, config, baseline)) == []


def test_small_groups_are_reported_not_gated_and_named_groups_must_exist():
    config = gate.GateConfig(min_recall=0.5, min_group_queries=5, group_min_recall={"z": 0.5})
    candidate = result(overall=(20, 0.9), a=(16, 0.9), tiny=(4, 0.0))
    assert failed(gate.evaluate_gate(candidate, config)) == [("group_evaluated", "z")]


def test_gate_config_validation():
    with pytest.raises(ValueError, match="unknown gate settings"):
        gate.GateConfig.from_dict({"min_recal": 0.5})
    with pytest.raises(ValueError):
        gate.GateConfig(min_recall=1.5)
    assert gate.GateConfig(ks=[5]).ks == [1, 5]             # Recall@1 is always computed


def clustered(rng, identities, per_identity, noise, groups):
    centres = rng.normal(size=(identities, 16))
    labels = np.repeat(np.arange(identities), per_identity)
    embeddings = centres[labels] + noise * rng.normal(size=(len(labels), 16))
    group_names = np.array([groups[i % len(groups)] for i in labels])
    return {"embeddings": embeddings, "labels": labels, "groups": group_names}


def test_evaluate_numbers_deltas_and_blessing():
    rng = np.random.default_rng(0)
    good = clustered(rng, 20, 4, 0.05, ["a", "b"])
    noisy = dict(good, embeddings=good["embeddings"] + 3.0 * rng.normal(size=(80, 16)))
    pixels = dict(noisy, resolution="4x4x3")
    config = gate.GateConfig(min_recall=0.9, max_drop=0.02)
    metrics = component.evaluate(good, config, baseline=noisy, pixels=pixels)
    assert metrics["candidate"]["overall"]["recall@1"] == 1.0
    assert metrics["candidate"]["a"]["n_queries"] == 40
    base = metrics["baseline"]["a"]["recall@1"]
    assert base < 0.9
    assert metrics["deltas"]["a"]["recall@1"] == pytest.approx(1.0 - base)
    assert metrics["blessed"] and metrics["failed_rules"] == []
    assert metrics["pixel_baseline"]["overall"]["recall@1"] < 0.9
    assert set(metrics["curves"]["candidate"]["overall"]) >= {"1", "2", "5", "10", "20"}
    # The other way round the candidate regressed everywhere: not blessed, every rule named.
    worse = component.evaluate(noisy, config, baseline=good)
    assert not worse["blessed"]
    assert {("max_drop", "a"), ("max_drop", "b"), ("min_recall", "overall")} <= set(
        failed(worse["verdicts"]))


def test_report_shows_every_group_and_the_verdict():
    rng = np.random.default_rng(1)
    data = clustered(rng, 12, 3, 0.8, ["east", "north", "south", "west"])
    metrics = component.evaluate(data, gate.GateConfig(min_recall=0.99), baseline=data,
                                 pixels=dict(data, resolution="8x8x3"))
    metrics.update(split="eval", model={"uri": "/m/1", "id": 1},
                   baseline_model={"uri": "/m/0", "id": 0})
    charts = {"recall_at_1_by_group": report.recall_bar_chart(metrics),
              "recall_at_k": report.recall_curve_chart(metrics)}
    assert all(png.startswith(b"\x89PNG") for png in charts.values())
    page = report.render_html(metrics, charts)
    assert "NOT BLESSED" in page
    for scope in ("overall", "east", "north", "south", "west"):
        entry = metrics["candidate"][scope]
        row = re.search(rf"<tr><td>{scope}</td>(.*?)</tr>", page).group(1)
        assert f"<td>{entry['n_queries']}</td>" in row
        assert f"{entry['recall@1']:.4f}" in row and f"{entry['recall@5']:.4f}" in row
        assert f"{metrics['thresholds'][scope]:.4f}" in row
    assert page.count("data:image/png;base64,") == 2
    assert "http://" not in page and "https://" not in page      # self-contained
