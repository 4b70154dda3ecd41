"""The release gate's rules on hand-made figures: fail closed, the three regression tests, bars on a
point or on an interval, the 1:1 rules, and which verdicts say they were decided beyond noise."""
import math

import pytest

from components.recall_evaluator import gate


def scope(r1, ci=None, identities=20, within=None, within_ci=None, queries=40):
    """One candidate entry: whole-gallery Recall@1 `r1` (interval `ci`), within-group figures."""
    within = r1 if within is None else within
    return {"n_queries": queries, "n_skipped": 0, "n_identities": identities, "recall@1": r1,
            "recall@1_ci": ci, "n_queries_within": queries, "n_identities_within": identities,
            "recall@1_within": within, "recall@1_within_ci": within_ci}


def delta(change, ci=None, within=None, within_ci=None):
    return {"recall@1": change, "recall@1_ci": ci, "recall@1_within": within,
            "recall@1_within_ci": within_ci}


def failed(verdicts):
    return sorted((v["rule"], v["scope"]) for v in verdicts if not v["passed"])


def by_rule(verdicts, rule, scope_name):
    [verdict] = [v for v in verdicts if v["rule"] == rule and v["scope"] == scope_name]
    return verdict


def test_every_gated_group_must_clear_its_bar_and_bars_are_inclusive():
    config = gate.GateConfig(min_recall=0.6, group_min_recall={"b": 0.8})
    candidate = {"overall": scope(0.9), "a": scope(0.65), "b": scope(0.79), "c": scope(0.59)}
    assert failed(gate.evaluate_gate(candidate, config)) == [("min_recall", "b"), ("min_recall", "c")]
    passing = {"overall": scope(0.9), "a": scope(0.6), "b": scope(0.8), "c": scope(0.6)}
    assert failed(gate.evaluate_gate(passing, config)) == []


def test_the_gallery_setting_picks_the_gated_figure():
    # Group b: 1.0 within its own group, 0.05 against the whole gallery.
    candidate = {"overall": scope(0.55), "a": scope(1.0), "b": scope(0.05, within=1.0)}
    assert failed(gate.evaluate_gate(candidate, gate.GateConfig())) == [("min_recall", "b")]
    assert failed(gate.evaluate_gate(candidate, gate.GateConfig(gallery="within"))) == []


# ----------------------------------------------------------------------------- fail closed

def test_no_answerable_query_anywhere_is_not_blessed():
    # An eval split whose identities all have one image: no recall at all. Before, zero verdicts
    # blessed it; now the overall scope is always gated and a missing value fails.
    empty = {"n_queries": 0, "n_skipped": 30, "n_identities": 0, "recall@1": None, "recall@1_ci": None,
             "n_queries_within": 0, "n_identities_within": 0, "recall@1_within": None,
             "recall@1_within_ci": None}
    verdicts = gate.evaluate_gate({"overall": empty}, gate.GateConfig())
    assert failed(verdicts) == [("value_missing", "overall")]
    assert "missing" in verdicts[0]["message"]


def test_a_nan_value_fails_closed():
    candidate = {"overall": scope(math.nan), "a": scope(0.9)}
    assert failed(gate.evaluate_gate(candidate, gate.GateConfig())) == [("value_missing", "overall")]


def test_a_gated_group_with_too_few_identities_fails_and_ungated_groups_are_exempt():
    candidate = {"overall": scope(0.9), "big": scope(0.9, identities=10), "tiny": scope(0.0, identities=9)}
    verdicts = gate.evaluate_gate(candidate, gate.GateConfig(min_recall=0.5))
    assert failed(verdicts) == [("min_group_identities", "tiny"), ("min_recall", "tiny")]
    message = by_rule(verdicts, "min_group_identities", "tiny")["message"]
    assert "9 identities" in message and "min_group_identities 10" in message
    exempt = gate.evaluate_gate(candidate, gate.GateConfig(min_recall=0.5, ungated_groups=["tiny"]))
    assert failed(exempt) == [] and all(v["scope"] != "tiny" for v in exempt)
    lowered = gate.evaluate_gate(candidate, gate.GateConfig(min_recall=0.5, min_group_identities=9))
    assert failed(lowered) == [("min_recall", "tiny")]


def test_a_group_named_in_the_settings_must_be_in_the_eval_split():
    candidate = {"overall": scope(0.9), "a": scope(0.9)}
    config = gate.GateConfig(group_min_recall={"z": 0.5}, max_fnmr={"y": 0.1})
    verification = {"overall": {"fnmr": 0.0}, "a": {"fnmr": 0.0}}
    assert failed(gate.evaluate_gate(candidate, config, verification=verification)) == [
        ("group_evaluated", "y"), ("group_evaluated", "z")]


def test_the_old_silent_skip_setting_is_refused_with_its_reason():
    with pytest.raises(ValueError, match="min_group_queries was removed.*min_group_identities"):
        gate.GateConfig.from_dict({"min_group_queries": 5})


def test_overall_verdicts_come_first():
    candidate = {"overall": scope(0.1), "a": scope(0.1, identities=2)}
    verdicts = gate.evaluate_gate(candidate, gate.GateConfig(min_recall=0.5))
    assert [v["scope"] for v in verdicts][0] == "overall"
    assert verdicts[0]["message"].startswith("overall: Recall@1 0.1000 < bar 0.5000")


def test_no_rule_at_all_would_not_bless():
    # The overall scope is always gated, so an empty candidate still yields a failing verdict.
    verdicts = gate.evaluate_gate({"overall": {}}, gate.GateConfig())
    assert failed(verdicts) == [("value_missing", "overall")]


# ----------------------------------------------------------------------------- regression tests

BASE = {"overall": scope(0.9, ci=[0.85, 0.95]), "a": scope(0.9, ci=[0.8, 0.97])}


@pytest.mark.parametrize("test, change, ci, passes, beyond", [
    # point: only the measured change counts.
    ("point", -0.03, [-0.10, 0.04], False, False),
    ("point", -0.01, [-0.08, 0.06], True, False),
    ("point", -0.01, [-0.015, -0.005], True, True),
    # significant: block only when the drop exceeds max_drop AND the interval lies below 0.
    ("significant", -0.03, [-0.10, 0.04], True, False),      # noise: passes, not beyond noise
    ("significant", -0.03, [-0.05, -0.01], False, False),    # real drop, though maybe < 0.02
    ("significant", -0.06, [-0.09, -0.03], False, True),     # real drop, surely > 0.02
    ("significant", -0.01, [-0.03, -0.001], True, False),    # significant but within allowance
    # non_inferiority: bless only when the interval's lower end is >= -max_drop.
    ("non_inferiority", 0.0, [-0.05, 0.05], False, False),   # could hide a 0.05 drop
    ("non_inferiority", -0.005, [-0.015, 0.005], True, True),
])
def test_regression_tests(test, change, ci, passes, beyond):
    config = gate.GateConfig(min_recall=0.5, max_drop=0.02, regression_test=test)
    deltas = {"overall": delta(0.0, [-0.01, 0.01]), "a": delta(change, ci)}
    verdict = by_rule(gate.evaluate_gate(BASE, config, deltas), "max_drop", "a")
    assert verdict["passed"] is passes
    assert verdict["beyond_noise"] is beyond
    assert verdict["interval"] == ci and verdict["test"] == test
    assert f"{change:+.4f}" in verdict["message"]


def test_a_regression_test_that_needs_an_interval_fails_closed_without_one():
    deltas = {"overall": delta(0.0, None), "a": delta(0.0, [-0.01, 0.01])}
    for test in ("significant", "non_inferiority"):
        verdicts = gate.evaluate_gate(BASE, gate.GateConfig(regression_test=test), deltas)
        assert failed(verdicts) == [("value_missing", "overall")]
    point = gate.evaluate_gate(BASE, gate.GateConfig(regression_test="point"), deltas)
    assert failed(point) == []


def test_within_gallery_regressions_use_the_within_figures():
    deltas = {"overall": delta(0.0, [-0.01, 0.01], 0.0, [-0.01, 0.01]),
              "a": delta(0.0, [-0.01, 0.01], -0.2, [-0.3, -0.1])}
    assert failed(gate.evaluate_gate(BASE, gate.GateConfig(), deltas)) == []
    assert failed(gate.evaluate_gate(BASE, gate.GateConfig(gallery="within"), deltas)) == [
        ("max_drop", "a")]


def test_bar_on_the_interval_lower_bound():
    candidate = {"overall": scope(0.9, ci=[0.85, 0.95]), "a": scope(0.62, ci=[0.55, 0.7])}
    point = gate.evaluate_gate(candidate, gate.GateConfig(min_recall=0.6))
    assert failed(point) == []
    assert by_rule(point, "min_recall", "a")["beyond_noise"] is False
    assert by_rule(point, "min_recall", "overall")["beyond_noise"] is True
    lower = gate.evaluate_gate(candidate, gate.GateConfig(min_recall=0.6, bar_test="lower_bound"))
    assert failed(lower) == [("min_recall", "a")]


# ----------------------------------------------------------------------------- 1:1 rules

VERIFICATION = {"overall": {"fnmr": 0.05, "fnmr_ci": [0.04, 0.06]},
                "a": {"fnmr": 0.02, "fnmr_ci": [0.01, 0.03]},
                "b": {"fnmr": 0.08, "fnmr_ci": [0.05, 0.11]},
                "fmr_differential": 3.0, "fmr_differential_ci": [2.0, 4.5],
                "skewed_error_ratio": 4.0, "skewed_error_ratio_ci": [2.0, 9.0]}
THREE = {name: scope(0.9, ci=[0.85, 0.95]) for name in ("overall", "a", "b")}


def test_one_to_one_rules_are_off_by_default():
    verdicts = gate.evaluate_gate(THREE, gate.GateConfig(), verification=VERIFICATION)
    assert {v["rule"] for v in verdicts} == {"min_recall"}


def test_max_fnmr_global_and_per_group():
    everywhere = gate.evaluate_gate(THREE, gate.GateConfig(max_fnmr=0.06), verification=VERIFICATION)
    assert failed(everywhere) == [("max_fnmr", "b")]
    per_group = gate.GateConfig(max_fnmr={"a": 0.01, "overall": 0.1})
    assert failed(gate.evaluate_gate(THREE, per_group, verification=VERIFICATION)) == [("max_fnmr", "a")]
    # lower_bound checks the pessimistic end: overall 0.05 <= 0.055, but its interval reaches 0.06.
    strict = gate.GateConfig(max_fnmr={"overall": 0.055}, bar_test="lower_bound")
    assert failed(gate.evaluate_gate(THREE, strict, verification=VERIFICATION)) == [
        ("max_fnmr", "overall")]


def test_ratio_rules_and_an_unbounded_ratio_fails_closed():
    config = gate.GateConfig(max_fmr_ratio=2.5, max_fnmr_ratio=5.0)
    verdicts = gate.evaluate_gate(THREE, config, verification=VERIFICATION)
    assert failed(verdicts) == [("max_fmr_ratio", "overall")]
    assert by_rule(verdicts, "max_fnmr_ratio", "overall")["beyond_noise"] is False   # ci up to 9
    unbounded = dict(VERIFICATION, skewed_error_ratio=None, skewed_error_ratio_ci=None)
    assert failed(gate.evaluate_gate(THREE, config, verification=unbounded)) == [
        ("max_fmr_ratio", "overall"), ("value_missing", "overall")]
    assert failed(gate.evaluate_gate(THREE, config, verification=None)) == [
        ("value_missing", "overall"), ("value_missing", "overall")]


@pytest.mark.parametrize("settings, message", [
    ({"min_recal": 0.5}, "unknown gate settings"),
    ({"min_recall": 1.5}, "min_recall"),
    ({"gallery": "all"}, "gallery"),
    ({"regression_test": "strict"}, "regression_test"),
    ({"bar_test": "upper"}, "bar_test"),
    ({"min_group_identities": 0}, "min_group_identities"),
    ({"ungated_groups": ["overall"]}, "ungated_groups"),
    ({"target_fmr": 0.0}, "target_fmr"),
    ({"max_fnmr": {"a": 2.0}}, "max_fnmr"),
    ({"max_fmr_ratio": 0.5}, "max_fmr_ratio"),
    ({"bootstrap_resamples": 10}, "bootstrap_resamples"),
    ({"confidence": 1.0}, "confidence"),
])
def test_gate_config_validation(settings, message):
    with pytest.raises(ValueError, match=message):
        gate.GateConfig.from_dict(settings)


def test_gate_config_defaults_and_round_trip():
    config = gate.GateConfig(ks=[5])
    assert config.ks == [1, 5]                      # Recall@1 is always computed
    assert (config.gallery, config.regression_test, config.bar_test) == ("mixed", "significant", "point")
    assert config.min_group_identities == 10 and config.target_fmr == 1e-3
    assert gate.GateConfig.from_dict(config.to_dict()) == config
