"""The evaluation loads with TFMA's own readers: slices overall and group:<name>, the candidate's and
the baseline's numbers with their intervals, the differences, and a validation result equal to the
blessing with one failure per failed rule."""
import math

import pytest

from components.recall_evaluator import tfma_results


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
             "passed": blessed, "message": "west: Recall@1 0.8000 < bar 0.8500"},
            {"rule": "max_fmr_ratio", "scope": "west", "value": 4.0, "threshold": 3.0,
             "passed": blessed, "message": "west: FMR 4.0x the target"},
        ],
        "failed_rules": [] if blessed else ["west: Recall@1 0.8000 < bar 0.8500",
                                            "west: FMR 4.0x the target"],
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
    failures = [(per_slice.slice_key.single_slice_keys[0].bytes_value.decode(), f.metric_key.name,
                 f.message) for per_slice in result.metric_validations_per_slice
                for f in per_slice.failures]
    expected = [] if blessed else [("west", "min_recall", "west: Recall@1 0.8000 < bar 0.8500"),
                                   ("west", "max_fmr_ratio", "west: FMR 4.0x the target")]
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
