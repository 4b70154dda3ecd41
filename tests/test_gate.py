"""The release gate's rules on hand-made figures: fail closed, the three regression tests, bars on a
point or on an interval, the 1:1 rules, unbounded figures, which verdicts say they were decided
beyond noise, and the advisories for what is not gated."""
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


def test_a_minimum_bar_on_the_interval_judges_its_lower_end():
    candidate = {"overall": scope(0.9, ci=[0.85, 0.95]), "a": scope(0.62, ci=[0.55, 0.7])}
    point = gate.evaluate_gate(candidate, gate.GateConfig(min_recall=0.6))
    assert failed(point) == []
    assert by_rule(point, "min_recall", "a")["beyond_noise"] is False
    assert by_rule(point, "min_recall", "overall")["beyond_noise"] is True
    lower = gate.evaluate_gate(candidate, gate.GateConfig(min_recall=0.6, bar_test="interval"))
    assert failed(lower) == [("min_recall", "a")]
    verdict = by_rule(lower, "min_recall", "a")
    assert (verdict["judged"], verdict["bound"], verdict["statistic"]) == (0.55, "lower", "recall@1")
    assert "(interval's lower end)" in verdict["message"]


def test_the_old_bar_test_name_is_read_as_interval():
    old = gate.GateConfig.from_dict({"bar_test": "lower_bound", "max_fnmr": 0.055})
    assert old.bar_test == "interval" and old.to_dict()["bar_test"] == "interval"
    assert old == gate.GateConfig(bar_test="interval", max_fnmr=0.055)


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
    # "interval" checks the conservative end of a maximum, the upper one: overall 0.05 <= 0.055,
    # but its interval reaches 0.06.
    strict = gate.GateConfig(max_fnmr={"overall": 0.055}, bar_test="interval")
    verdicts = gate.evaluate_gate(THREE, strict, verification=VERIFICATION)
    assert failed(verdicts) == [("max_fnmr", "overall")]
    verdict = by_rule(verdicts, "max_fnmr", "overall")
    assert (verdict["judged"], verdict["bound"], verdict["value"]) == (0.06, "upper", 0.05)
    assert "(interval's upper end)" in verdict["message"]
    # Its lower end clears a bar the point misses: a maximum never judges the optimistic end.
    loose = gate.GateConfig(max_fnmr={"b": 0.07}, bar_test="interval")
    assert failed(gate.evaluate_gate(THREE, loose, verification=VERIFICATION)) == [("max_fnmr", "b")]


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


# ----------------------------------------------------------------------------- unbounded figures

INF = math.inf


@pytest.mark.parametrize("bar_test", ["point", "interval"])
def test_an_unbounded_ratio_fails_any_finite_maximum(bar_test):
    # A group without false non-matches next to one with: the point ratio is +inf.
    unbounded = dict(VERIFICATION, skewed_error_ratio=INF, skewed_error_ratio_ci=[2.0, INF])
    config = gate.GateConfig(max_fnmr_ratio=1e6, bar_test=bar_test)
    verdict = by_rule(gate.evaluate_gate(THREE, config, verification=unbounded), "max_fnmr_ratio",
                      "overall")
    assert verdict["passed"] is False and verdict["judged"] == INF
    assert "inf > 1000000.000" in verdict["message"] and "unbounded" in verdict["message"]
    assert "[2.0000, inf]" in verdict["message"]
    assert verdict["beyond_noise"] is False          # the interval's lower end is below the bar


def test_an_interval_ending_at_infinity_fails_closed_when_that_end_is_judged():
    # The point is finite and far below the bar; the interval's upper end is unbounded.
    verification = dict(VERIFICATION, skewed_error_ratio=1.2, skewed_error_ratio_ci=[1.0, INF],
                        fmr_differential=1.1, fmr_differential_ci=[0.5, INF])
    config = gate.GateConfig(max_fnmr_ratio=20.0, max_fmr_ratio=20.0, bar_test="interval")
    verdicts = gate.evaluate_gate(THREE, config, verification=verification)
    assert failed(verdicts) == [("max_fmr_ratio", "overall"), ("max_fnmr_ratio", "overall")]
    assert all("unbounded" in v["message"] for v in verdicts if not v["passed"])
    # Judged on the point, the same figures pass: only the judged end decides.
    point = gate.evaluate_gate(THREE, gate.GateConfig(max_fnmr_ratio=20.0, max_fmr_ratio=20.0),
                               verification=verification)
    assert failed(point) == []
    # A minimum judged on an interval whose lower end is -inf fails too.
    candidate = dict(THREE, a=scope(0.9, ci=[-INF, 0.95]))
    assert failed(gate.evaluate_gate(candidate, gate.GateConfig(bar_test="interval"))) == [
        ("min_recall", "a")]


@pytest.mark.parametrize("interval", [None, [0.01, math.nan], [0.01], "[0.01, 0.02]"])
def test_a_rule_on_a_statistic_without_a_usable_interval_fails_closed(interval):
    verification = dict(VERIFICATION, fmr_differential_ci=interval)
    config = gate.GateConfig(max_fmr_ratio=100.0, bar_test="interval")
    verdicts = gate.evaluate_gate(THREE, config, verification=verification)
    assert failed(verdicts) == [("value_missing", "overall")]
    [verdict] = [v for v in verdicts if not v["passed"]]
    assert "has no interval" in verdict["message"] and verdict["statistic"] == "fmr_differential"
    assert verdict["judged"] is None and verdict["value"] == 3.0      # compared with nothing
    # The point test needs no interval; its message says there is none.
    point = gate.evaluate_gate(THREE, gate.GateConfig(max_fmr_ratio=100.0), verification=verification)
    assert failed(point) == [] and "no interval" in by_rule(point, "max_fmr_ratio", "overall")["message"]


def test_texts_show_an_infinite_end_as_inf_and_a_missing_interval_as_no_interval():
    assert gate.interval_text([1.05, INF]) == "[1.0500, inf]"
    assert gate.interval_text([-INF, 0.5], 1) == "[-inf, 0.5]"
    assert gate.interval_text(None) == gate.interval_text([0.1, math.nan]) == "no interval"
    assert gate.number_text(None) == "-" and gate.number_text(-0.02, signed=True) == "-0.0200"


# ----------------------------------------------------------------------------- advisories

def summary(differential_ci=None, ratio_ci=None, fnmr=None, fmr_overall=1e-3, impostors=None,
            groups=("a", "b")):
    """A verification summary (metrics.json's "verification") with target FMR 1e-3: overall and per
    group FNMR intervals `fnmr` {scope: [lo, hi]} and impostor pair counts `impostors`."""
    fnmr = fnmr or {}
    impostors = impostors or {"overall": 10_000, "a": 2_500, "b": 2_500}
    result = {"target_fmr": 1e-3, "threshold": 0.5, "ratio_groups": list(groups),
              "fmr_differential": None if differential_ci is None else sum(differential_ci) / 2,
              "fmr_differential_ci": differential_ci,
              "skewed_error_ratio": None if ratio_ci is None else sum(ratio_ci) / 2,
              "skewed_error_ratio_ci": ratio_ci}
    for name in ("overall", *groups):
        ci = fnmr.get(name, [0.04, 0.06])
        result[name] = {"fnmr": sum(ci) / 2, "fnmr_ci": ci, "n_impostor": impostors[name],
                        "fmr": fmr_overall if name == "overall" else 2e-3}
    return result


def advised(verification, **settings):
    return [(a["statistic"], a["scope"]) for a in gate.advisories(verification, gate.GateConfig(**settings))]


def test_composition_ceiling_is_false_matches_over_target_times_pairs_inside_groups():
    # 10,000 impostor pairs, 5,000 of them inside a group, overall FMR 1e-3: 10 false matches; a
    # model with the same FMR f in both groups and none across them has 5,000 f = 10, f = 2e-3,
    # a differential of 2.
    assert gate.composition_ceiling(summary()) == pytest.approx(2.0)
    four = summary(impostors={"overall": 10_000, "a": 625, "b": 625, "c": 625, "d": 625},
                   groups=("a", "b", "c", "d"), fmr_overall=0.9e-3)
    assert gate.composition_ceiling(four) == pytest.approx(0.9e-3 * 10_000 / (1e-3 * 2_500))
    assert gate.composition_ceiling({"target_fmr": 1e-3}) is None


def test_advisories_need_the_whole_interval_beyond_the_level():
    # Ceiling 2 here, so the FMR differential's level is max(2, 2) = 2.
    assert advised(summary([2.1, 5.0])) == [("fmr_differential", "overall")]
    assert advised(summary([1.9, 5.0])) == []                     # lower end at or below 2: noise
    assert advised(summary([2.0, 5.0])) == []
    # Four equal groups: the ceiling is 4, a differential of 3.5 [2.5, 4.5] is what equal FMRs give.
    four = dict(impostors={"overall": 10_000, "a": 625, "b": 625, "c": 625, "d": 625},
                groups=("a", "b", "c", "d"))
    assert advised(summary([2.5, 4.5], **four)) == []
    assert advised(summary([4.2, 9.0], **four)) == [("fmr_differential", "overall")]
    assert advised(summary(ratio_ci=[1.6, 3.0])) == [("skewed_error_ratio", "overall")]
    assert advised(summary(ratio_ci=[1.4, 30.0])) == []
    # A group FNMR interval wholly above the overall one [0.04, 0.06]; touching is not beyond.
    assert advised(summary(fnmr={"b": [0.061, 0.2]})) == [("fnmr", "b")]
    assert advised(summary(fnmr={"b": [0.06, 0.2]})) == []


def test_advisories_appear_only_while_the_rule_that_would_gate_them_is_off():
    verification = summary([7.6, 31.0], [1.6, math.inf], {"b": [0.07, 0.1]})
    assert advised(verification) == [("fmr_differential", "overall"), ("skewed_error_ratio", "overall"),
                                     ("fnmr", "b")]
    assert advised(verification, max_fmr_ratio=40.0) == [("skewed_error_ratio", "overall"), ("fnmr", "b")]
    assert advised(verification, max_fnmr_ratio=40.0) == [("fmr_differential", "overall")]
    assert advised(verification, max_fmr_ratio=40.0, max_fnmr_ratio=40.0) == []
    # An ungated group is not in ratio_groups: no advisory about it.
    assert advised(dict(verification, ratio_groups=["a"]), max_fmr_ratio=40.0) == [
        ("skewed_error_ratio", "overall")]


def test_an_advisory_names_the_figure_its_interval_and_level_and_never_changes_the_verdict():
    verification = summary([7.6, 31.0])
    verification["fmr_differential"] = 18.5
    [advisory] = gate.advisories(verification, gate.GateConfig())
    assert advisory == {"statistic": "fmr_differential", "scope": "overall", "value": 18.5,
                        "interval": [7.6, 31.0], "level": pytest.approx(2.0),
                        "message": advisory["message"]}
    assert gate.advisory_text(advisory) == "FMR differential 18.5 [7.6, 31.0]"
    assert "max_fmr_ratio is off" in advisory["message"] and "above 2.0" in advisory["message"]
    [unbounded] = gate.advisories(summary(ratio_ci=[1.6, math.inf]), gate.GateConfig())
    assert gate.advisory_text(unbounded) == "skewed error ratio (FNMR) inf [1.6, inf]"
    [group] = gate.advisories(summary(fnmr={"b": [0.07, 0.1]}), gate.GateConfig())
    assert gate.advisory_text(group) == "b FNMR 0.0850 [0.0700, 0.1000]"
    assert gate.evaluate_gate(THREE, gate.GateConfig(), verification=verification) == gate.evaluate_gate(
        THREE, gate.GateConfig(), verification=summary())


@pytest.mark.parametrize("settings, message", [
    ({"min_recal": 0.5}, "unknown setting 'min_recal'; closest known: min_recall"),
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
