"""Every 1:1 interval of the evaluation (fmr_ci and fnmr_ci overall and per group, the FMR
differential, the skewed error ratio, the paired FNMR / FMR deltas) against a LITERAL identity
bootstrap (tests/literal_bootstrap.py): the same weight draws, the eval set rebuilt from the drawn
identities, every figure recounted by brute force at the same threshold. Data: exact scores
(multiples of 1/16, tests.test_recall.exact_random_data) with identities spread over groups."""
import math

import numpy as np
import pytest

from components.recall_evaluator import executor, gate
from core import false_matches, intervals
from tests import literal_bootstrap as literal
from tests.test_recall import exact_random_data

RESAMPLES, SEED = 200, 3


def evaluated(data, config, baseline=None):
    metrics = executor.evaluate(data, config, baseline=baseline)
    units, unit_groups = intervals.identity_units(data["labels"], data["groups"])
    weights = intervals.resample_weights(unit_groups, RESAMPLES, SEED)
    return metrics, units, weights


def literal_of(data, units, weights, threshold):
    return literal.literal_replicates(literal.pair_scores(data["embeddings"]), data["labels"],
                                      data["groups"], units, weights, threshold)


def summary_and_literal(shape, fmr_bootstrap):
    """(verification summary, literal replicates per scope, scopes) of random data of `shape`
    (exact_random_data's arguments) at target FMR 0.05, with the FMR path it must have taken."""
    embeddings, labels, groups = exact_random_data(*shape)
    data = {"embeddings": embeddings, "labels": labels, "groups": groups}
    metrics, units, weights = evaluated(data, config(target_fmr=0.05))
    summary = metrics["verification"]
    assert summary["fmr_bootstrap"] == fmr_bootstrap
    replicates = literal_of(data, units, weights, summary["threshold"])
    return summary, replicates, ["overall"] + sorted(set(groups.tolist()))


def width(interval):
    return interval[1] - interval[0]


def assert_same_interval(mine, expected, what):
    assert mine is not None and expected is not None, what
    assert mine == pytest.approx(expected, rel=1e-9, abs=1e-12), what
    if width(expected) > 0 and math.isfinite(width(expected)):
        assert 0.9 <= width(mine) / width(expected) <= 1.1, what


@pytest.fixture
def bootstrap_only(monkeypatch):
    """The bootstrap part of every interval: the small-count widening (core.small_counts, tested
    in tests/test_small_counts.py and by the coverage simulation), the FNMR's studentized interval
    (core.studentized, tested against a literal bootstrap-t in tests/test_studentized.py) and the
    skewed error ratio's joint group bounds made neutral, so that what is compared is the
    identity bootstrap itself."""
    from core import rate_intervals, small_counts, studentized

    monkeypatch.setattr(studentized, "studentized_interval", lambda *a, **k: None)

    monkeypatch.setattr(small_counts, "small_count_interval",
                        lambda rate, trials, reps, clusters, bootstrap, *a, **k: bootstrap)
    monkeypatch.setattr(small_counts, "paired_small_count_interval",
                        lambda c, b, trials, clusters, bootstrap, *a, **k: bootstrap)
    monkeypatch.setattr(rate_intervals, "joint_ratio_bounds", lambda *a, **k: [math.inf, 0.0])


def config(**kwargs):
    return gate.GateConfig(min_recall=0.0, min_group_identities=1, bootstrap_resamples=RESAMPLES,
                           bootstrap_seed=SEED, **kwargs)


def test_every_1to1_interval_equals_the_literal_identity_bootstrap(bootstrap_only):
    summary, replicates, scopes = summary_and_literal((8, 180, 8), "exact")
    for scope in scopes:
        for key in ("fnmr", "fmr"):
            assert_same_interval(summary[scope][f"{key}_ci"],
                                 literal.percentile(replicates[scope][key]), (scope, key))
    gated = summary["ratio_groups"]
    assert len(gated) == 3
    # The maximum (over a minimum) of group rates: the bias-corrected percentile interval; the
    # FMR differential's upper end at least the plain percentile one.
    differential = literal.fmr_differential(replicates, gated, 0.05)
    corrected = literal.bias_corrected(differential, summary["fmr_differential"])
    assert_same_interval(summary["fmr_differential_ci"],
                         [corrected[0], max(corrected[1], literal.percentile(differential)[1])],
                         "fmr_differential")
    assert_same_interval(summary["skewed_error_ratio_ci"],
                         literal.bias_corrected(literal.skewed_error_ratio(replicates, gated),
                                                summary["skewed_error_ratio"]),
                         "skewed_error_ratio")


def flipped(embeddings, seed):
    """Another model's embeddings of the same images: signs of some coordinates flipped for a
    third of the images (scores stay multiples of 1/16)."""
    rng = np.random.default_rng(seed)
    other = embeddings.copy()
    rows = rng.choice(len(other), size=len(other) // 3, replace=False)
    other[rows] *= rng.choice([-1.0, 1.0], size=(len(rows), other.shape[1]))
    return other


def test_paired_1to1_deltas_equal_the_literal_paired_bootstrap(bootstrap_only):
    embeddings, labels, groups = exact_random_data(9, 150, 8)
    data = {"embeddings": embeddings, "labels": labels, "groups": groups}
    other = dict(data, embeddings=flipped(embeddings, 1))
    metrics, units, weights = evaluated(data, config(target_fmr=0.05), baseline=other)
    mine = literal_of(data, units, weights, metrics["verification"]["threshold"])
    theirs = literal_of(other, units, weights, metrics["baseline_verification"]["threshold"])
    for scope in ["overall"] + sorted(set(groups.tolist())):
        for key in ("fnmr", "fmr"):
            delta = metrics["deltas"][scope]
            assert delta[key] == pytest.approx(metrics["verification"][scope][key]
                                               - metrics["baseline_verification"][scope][key])
            assert_same_interval(delta[f"{key}_ci"],
                                 literal.percentile(mine[scope][key] - theirs[scope][key]),
                                 (scope, key))


def test_first_order_fmr_intervals_agree_with_the_literal_bootstrap(monkeypatch, bootstrap_only):
    # Beyond the unit-pair budget (here: none allowed) the FMR sums take the first-order weight
    # w_a + w_b - 1. On groups of ~50 identities its intervals are close to the literal ones (the
    # old weight w_a + w_b gave about half their width).
    monkeypatch.setattr(false_matches, "EXACT_UNIT_PAIRS", 0)
    summary, replicates, scopes = summary_and_literal((10, 420, 16), "first_order")
    for scope in scopes:
        expected = literal.percentile(replicates[scope]["fmr"])
        ratio = width(summary[scope]["fmr_ci"]) / width(expected)
        assert 0.8 <= ratio <= 1.25, (scope, ratio)
        # FNMR does not depend on the FMR path: still exact.
        assert summary[scope]["fnmr_ci"] == pytest.approx(
            literal.percentile(replicates[scope]["fnmr"]), rel=1e-9)


def two_groups(rng, noise_a, noise_b, identities=20, per_identity=3):
    centres = rng.normal(size=(2 * identities, 16))
    labels = np.repeat(np.arange(2 * identities), per_identity)
    noise = np.where(labels < identities, noise_a, noise_b)[:, None]
    embeddings = centres[labels] + noise * rng.normal(size=(len(labels), 16))
    groups = np.where(labels < identities, "a", "b")
    return {"embeddings": embeddings, "labels": labels, "groups": groups}


def test_a_group_without_false_non_matches_next_to_one_with_them_is_unbounded_and_fails_closed():
    # Group a's images sit on their identity's centre: no false non-match; group b's are noisy.
    data = two_groups(np.random.default_rng(0), 0.01, 1.0)
    for bar_test in ("point", "lower_bound"):
        metrics = executor.evaluate(data, config(target_fmr=0.01, max_fnmr_ratio=1e6,
                                                  bar_test=bar_test))
        summary = metrics["verification"]
        assert summary["a"]["fnmr"] == 0.0 and summary["b"]["fnmr"] > 0
        assert summary["skewed_error_ratio"] == math.inf
        assert summary["skewed_error_ratio_ci"][1] == math.inf
        assert not metrics["blessed"]
        assert [v["passed"] for v in metrics["verdicts"] if v["rule"] == "max_fnmr_ratio"] == [False]


def test_an_interval_ending_at_infinity_fails_any_finite_bar():
    # A finite point value whose interval ends at +inf (a third of the resamples unbounded): judged
    # on the interval it fails however generous the bar; judged on the point it passes.
    verification = {"skewed_error_ratio": 3.0, "skewed_error_ratio_ci": [1.05, math.inf],
                    "fmr_differential": 1.5, "fmr_differential_ci": [0.5, 2.0]}
    on_interval = gate.GateConfig(max_fnmr_ratio=20.0, bar_test="lower_bound")
    verdicts = gate._ratio_verdicts(verification, on_interval, 0.95)
    assert [v["passed"] for v in verdicts] == [False]
    verdicts = gate._ratio_verdicts(verification, gate.GateConfig(max_fnmr_ratio=20.0), 0.95)
    assert [v["passed"] for v in verdicts] == [True]
    # Undefined in more than half of the resamples: no interval, and the rule fails closed.
    undefined = dict(verification, skewed_error_ratio_ci=None)
    assert not gate._ratio_verdicts(undefined, on_interval, 0.95)[0]["passed"]
