"""The evaluation loads with TFMA's own readers: slices overall and group:<name>, the candidate's and
the baseline's numbers with their intervals, the differences, and a validation result equal to the
blessing with one failure per failed rule, each naming the metric it judged, its threshold on the
right side (upper bound for a maximum, lower bound for a minimum) and a value on the failing side."""
import math

import numpy as np
import pytest

from components.recall_evaluator import executor, gate, tfma_results
from tests.test_recall_evaluator import clustered


def metrics_dict(blessed=False):
    candidate = {
        "overall": {"recall@1": 0.9, "recall@1_ci": [0.85, 0.94], "recall@1_within": 0.93,
                    "n_queries": 400, "n_identities": 100},
        "east": {"recall@1": 0.95, "recall@1_ci": [0.9, 0.99], "recall@1_within": 0.97,
                 "n_queries": 100, "n_identities": 25},
        "west": {"recall@1": 0.8, "recall@1_ci": [0.7, 0.88], "recall@1_within": 0.86,
                 "n_queries": 100, "n_identities": 25},
    }
    baseline = {scope: {"recall@1": entry["recall@1"] - 0.05, "n_queries": entry["n_queries"]}
                for scope, entry in candidate.items()}
    return {
        "candidate": candidate, "baseline": baseline,
        "deltas": {scope: {"recall@1": 0.05, "recall@1_ci": [0.01, 0.09]} for scope in candidate},
        "verification": {"target_fmr": 1e-3, "threshold": 0.4123,
                         "overall": {"fnmr": 0.02, "fnmr_ci": [0.01, 0.03], "fmr": 0.001,
                                     "fmr_ci": [0.0008, 0.0012], "tar@far=1e-3": 0.98},
                         "east": {"fnmr": 0.01, "fnmr_ci": [0.0, 0.02], "fmr": 0.0005,
                                  "fmr_ci": [0.0, 0.001]},
                         "west": {"fnmr": 0.05, "fnmr_ci": [0.02, 0.08], "fmr": 0.004,
                                  "fmr_ci": [0.002, 0.006], "tar@far=1e-4": None}},
        "verdicts": [
            {"rule": "min_recall", "scope": "overall", "value": 0.9, "threshold": 0.5,
             "passed": True, "message": "overall ok"},
            {"rule": "min_recall", "scope": "west", "value": 0.8, "threshold": 0.85,
             "passed": blessed, "message": "west: Recall@1 0.8000 < bar 0.8500",
             "statistic": "recall@1", "bound": "lower", "judged": 0.8},
            {"rule": "max_fmr_ratio", "scope": "overall", "value": 4.0, "threshold": 3.0,
             "passed": blessed, "message": "FMR differential 4.000 > 3.000",
             "statistic": "fmr_differential", "bound": "upper", "judged": 4.0},
        ],
        "failed_rules": [] if blessed else ["west: Recall@1 0.8000 < bar 0.8500",
                                            "FMR differential 4.000 > 3.000"],
        "blessed": blessed,
    }


def by_slice(result):
    return {tfma_results_slice_name(key): values[""][""] for key, values in result.slicing_metrics}


def tfma_results_slice_name(key):
    return "overall" if not key else "group:" + "".join(
        v.decode() if isinstance(v, bytes) else str(v) for _, v in key)


def test_tfma_loads_every_slice_with_values_intervals_and_differences(tmp_path):
    tfma = pytest.importorskip("tensorflow_model_analysis")
    metrics = metrics_dict()
    tfma_results.write(metrics, str(tmp_path), candidate_uri="/m/1", baseline_uri="/m/0")

    candidate = by_slice(tfma.load_eval_result(str(tmp_path)))
    assert set(candidate) == {"overall", "group:east", "group:west"}
    west = candidate["group:west"]
    assert west["recall_at_1"]["boundedValue"] == {"lowerBound": 0.7, "upperBound": 0.88, "value": 0.8}
    assert west["recall_at_1_within"]["doubleValue"] == 0.86
    assert west["n_identities"]["doubleValue"] == 25
    assert west["fnmr"]["boundedValue"] == {"lowerBound": 0.02, "upperBound": 0.08, "value": 0.05}
    assert "tar_at_far=1e-4" not in west                          # null: not enough impostor pairs
    fnr, fpr = tfma_results.fairness_names(0.4123)
    assert fnr == "fairness_indicators_metrics/false_negative_rate@0.4123"
    assert west[fnr]["boundedValue"]["value"] == 0.05 and west[fpr]["boundedValue"]["value"] == 0.004
    assert candidate["overall"]["threshold"]["doubleValue"] == 0.4123
    assert math.isclose(candidate["overall"]["recall_at_1_diff"]["boundedValue"]["value"], 0.05)
    assert candidate["overall"]["recall_at_1_diff"]["boundedValue"]["lowerBound"] == 0.01

    baseline = by_slice(tfma.load_eval_result(str(tmp_path), model_name="baseline"))
    assert math.isclose(baseline["group:east"]["recall_at_1"]["doubleValue"], 0.9)
    assert "recall_at_1_diff" not in baseline["group:east"]


@pytest.mark.parametrize("blessed", [True, False])
def test_validation_result_equals_the_blessing_with_one_failure_per_failed_rule(tmp_path, blessed):
    tfma = pytest.importorskip("tensorflow_model_analysis")
    tfma_results.write(metrics_dict(blessed), str(tmp_path))
    result = tfma.load_validation_result(str(tmp_path))
    assert result.validation_ok is blessed
    failures = [(slice_name(per_slice.slice_key), f.metric_key.name, f.message)
                for per_slice in result.metric_validations_per_slice for f in per_slice.failures]
    expected = [] if blessed else [("west", "recall_at_1", "west: Recall@1 0.8000 < bar 0.8500"),
                                   ("overall", "fmr_differential", "FMR differential 4.000 > 3.000")]
    assert sorted(failures) == sorted(expected)


def test_not_blessed_without_a_failed_verdict_still_fails_validation(tmp_path):
    tfma = pytest.importorskip("tensorflow_model_analysis")
    metrics = metrics_dict(blessed=True)
    metrics.update(blessed=False, verdicts=[], failed_rules=["no rule could be evaluated"])
    tfma_results.write(metrics, str(tmp_path))
    result = tfma.load_validation_result(str(tmp_path))
    assert not result.validation_ok
    [per_slice] = result.metric_validations_per_slice
    assert [f.message for f in per_slice.failures] == ["no rule could be evaluated"]


def slice_name(key):
    return key.single_slice_keys[0].bytes_value.decode() if key.single_slice_keys else "overall"


def failures_of(tfma, path):
    """(slice, failure) of every failure in the written validation result."""
    result = tfma.load_validation_result(path)
    return result, [(slice_name(s.slice_key), f) for s in result.metric_validations_per_slice
                    for f in s.failures]


def assert_failing_side(failure):
    """The failure's value violates its one bound: below a lower bound, above an upper bound."""
    limits = failure.metric_threshold.value_threshold
    value = failure.metric_value.double_value.value
    assert limits.HasField("lower_bound") != limits.HasField("upper_bound"), failure
    if limits.HasField("lower_bound"):
        assert value < limits.lower_bound.value, failure
    else:
        assert value > limits.upper_bound.value, failure


def strict_evaluation():
    """A real evaluate() on four groups of clustered identities with a baseline, under a gate every
    kind of rule fails: minimums (Recall@1, the change against the baseline, identities per group)
    and maximums (FNMR, FMR differential, skewed error ratio), judged on the interval."""
    rng = np.random.default_rng(3)
    candidate = clustered(rng, 60, 4, 0.9, ["a", "b", "c", "d"])
    baseline = dict(candidate, embeddings=candidate["embeddings"] + 0.2 * rng.normal(
        size=candidate["embeddings"].shape))
    config = gate.GateConfig(min_recall=0.99, max_drop=0.0, regression_test="non_inferiority",
                             max_fnmr=0.001, max_fmr_ratio=1.0, max_fnmr_ratio=1.0, bar_test="interval",
                             min_group_identities=16, target_fmr=0.01, bootstrap_resamples=200)
    return executor.evaluate(candidate, config, baseline)


def test_every_failure_names_a_written_metric_and_lies_beyond_its_bound(tmp_path):
    tfma = pytest.importorskip("tensorflow_model_analysis")
    metrics = strict_evaluation()
    rules = {v["rule"] for v in metrics["verdicts"] if not v["passed"]}
    assert {"min_recall", "max_drop", "max_fnmr", "max_fmr_ratio", "max_fnmr_ratio",
            "min_group_identities"} <= rules, metrics["failed_rules"]
    # Non-inferiority refuses a group whose measured change is an improvement: only the number the
    # rule judged (the interval's lower end) lies on the failing side, and that is what is written.
    assert any(v["rule"] == "max_drop" and v["value"] >= v["threshold"]
               for v in metrics["verdicts"] if not v["passed"])
    tfma_results.write(metrics, str(tmp_path), candidate_uri="/m/1", baseline_uri="/m/0")
    result, failures = failures_of(tfma, str(tmp_path))
    assert not result.validation_ok
    assert len(failures) == len(metrics["failed_rules"])
    written = {tfma_results_slice_name(key): values[""][""]
               for key, values in tfma.load_eval_result(str(tmp_path)).slicing_metrics}
    kinds = {}
    for scope, failure in failures:
        assert_failing_side(failure)
        name = failure.metric_key.name + ("_diff" if failure.metric_key.is_diff else "")
        assert name in written["overall" if scope == "overall" else f"group:{scope}"], (scope, name)
        limits = failure.metric_threshold.value_threshold
        kinds.setdefault(failure.metric_key.name, set()).add(
            "lower" if limits.HasField("lower_bound") else "upper")
    # Minimums bound from below, maximums from above.
    assert kinds["recall_at_1"] == {"lower"} and kinds["n_identities"] == {"lower"}
    assert kinds["fnmr"] == kinds["fmr_differential"] == kinds["skewed_error_ratio"] == {"upper"}
    diffs = [f for _, f in failures if f.metric_key.is_diff]
    assert diffs and all(f.metric_threshold.value_threshold.lower_bound.value == 0.0 for f in diffs)


def test_an_unbounded_ratio_fails_with_an_infinite_value_above_its_bound(tmp_path):
    tfma = pytest.importorskip("tensorflow_model_analysis")
    metrics = metrics_dict(blessed=True)
    metrics["verification"].update(skewed_error_ratio=math.inf, skewed_error_ratio_ci=[1.5, math.inf])
    config = gate.GateConfig(max_fnmr_ratio=3.0, min_group_identities=1, min_recall=0.5)
    metrics["verdicts"] = gate.evaluate_gate(metrics["candidate"], config, None, metrics["verification"])
    metrics["blessed"] = all(v["passed"] for v in metrics["verdicts"])
    tfma_results.write(metrics, str(tmp_path))
    result, [(scope, failure)] = failures_of(tfma, str(tmp_path))
    assert not result.validation_ok and scope == "overall"
    assert failure.metric_key.name == "skewed_error_ratio"
    assert failure.metric_value.double_value.value == math.inf
    assert_failing_side(failure)
    overall = by_slice(tfma.load_eval_result(str(tmp_path)))["overall"]
    assert "skewed_error_ratio" in overall


def test_fail_closed_failures_name_their_metric_and_carry_no_value_when_it_is_missing(tmp_path):
    tfma = pytest.importorskip("tensorflow_model_analysis")
    metrics = metrics_dict(blessed=True)
    metrics["verification"]["west"]["fnmr_ci"] = None            # the interval the test needs
    config = gate.GateConfig(min_recall=0.5, min_group_identities=1, bar_test="interval",
                             max_fnmr={"west": 0.1, "north": 0.1})   # north: not in the split
    metrics["verdicts"] = gate.evaluate_gate(metrics["candidate"], config, None, metrics["verification"])
    metrics["blessed"] = False
    tfma_results.write(metrics, str(tmp_path))
    _, failures = failures_of(tfma, str(tmp_path))
    named = {(scope, f.metric_key.name): f for scope, f in failures}
    assert set(named) == {("west", "fnmr"), ("north", "n_queries")}
    missing = named["west", "fnmr"]
    assert not missing.HasField("metric_value")
    assert missing.metric_threshold.value_threshold.upper_bound.value == 0.1
    assert_failing_side(named["north", "n_queries"])             # 0 queries, at least 1 needed
