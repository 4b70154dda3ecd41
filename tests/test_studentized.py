"""core.studentized: the bootstrap-t interval of the FNMR, against a literal bootstrap-t (the eval
set rebuilt from the drawn identities, the rate and its stratified delta-method standard error
recounted from that list) with the same draws."""
import math

import numpy as np
import pytest

from core import intervals, studentized


def _skewed_units(seed, per_group=(20, 25, 15)):
    """Per-unit genuine pairs and false non-matches with a log-normal identity effect (a few hard
    identities hold most errors), and each unit's group."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(len(per_group)), per_group)
    trials = rng.integers(1, 40, len(groups)).astype(float)
    p = np.clip(np.exp(rng.normal(-4.0, 1.5, len(groups))), 0.0, 1.0)
    errors = rng.binomial(trials.astype(int), p).astype(float)
    return groups, errors, trials


def _literal_rate_and_se(drawn, groups, errors, trials):
    """Rate and stratified linearised standard error of the eval set made of the `drawn` units
    (a list, one entry per copy), written from the formula: per group, n/(n-1) x the sum of the
    squared deviations of z = e - r m from the group's mean, over (sum m)^2."""
    total_e = sum(errors[u] for u in drawn)
    total_m = sum(trials[u] for u in drawn)
    rate = total_e / total_m
    variance = 0.0
    for g in sorted(set(groups[u] for u in drawn)):
        z = [errors[u] - rate * trials[u] for u in drawn if groups[u] == g]
        mean = sum(z) / len(z)
        variance += len(z) / (len(z) - 1) * sum((x - mean) ** 2 for x in z)
    return rate, math.sqrt(variance) / total_m


def _literal_percentile(values, q):
    values = sorted(values)
    position = q * (len(values) - 1)
    below = int(math.floor(position))
    above = min(below + 1, len(values) - 1)
    low, high = values[below], values[above]
    return low if low == high else low + (position - below) * (high - low)


def test_studentized_interval_equals_a_literal_bootstrap_t_with_the_same_draws():
    groups, errors, trials = _skewed_units(seed=5)
    weights = intervals.resample_weights(groups, 300, seed=2)
    rate, se = _literal_rate_and_se(list(range(len(groups))), groups, errors, trials)
    pivots = []
    for w in weights:
        drawn = [u for u in range(len(groups)) for _ in range(int(w[u]))]
        r_star, se_star = _literal_rate_and_se(drawn, groups, errors, trials)
        pivots.append((r_star - rate) / se_star if se_star > 0 else
                      (-math.inf if r_star < rate else math.nan))
    pivots = [p for p in pivots if not math.isnan(p)]
    expected = [rate - _literal_percentile(pivots, 0.975) * se,
                rate - _literal_percentile(pivots, 0.025) * se]
    replicates = (weights @ errors) / (weights @ trials)
    got = studentized.studentized_interval(weights, groups, errors, trials, replicates, rate)
    assert np.allclose(got, [max(0.0, expected[0]), min(1.0, expected[1])], rtol=1e-9, atol=1e-12)


def test_upper_end_is_above_the_percentile_one_for_skewed_errors():
    # The reason for the interval: resamples that lose a hard identity lose spread too.
    groups, errors, trials = _skewed_units(seed=11)
    weights = intervals.resample_weights(groups, 2000, seed=0)
    replicates = (weights @ errors) / (weights @ trials)
    rate = errors.sum() / trials.sum()
    t = studentized.studentized_interval(weights, groups, errors, trials, replicates, rate)
    percentile = intervals.percentile_interval(replicates)
    assert t[1] > percentile[1]
    assert t[0] <= rate <= t[1]


def test_not_computed_with_errors_in_fewer_than_five_identities():
    groups, errors, trials = _skewed_units(seed=5)
    few = np.zeros_like(errors)
    few[np.flatnonzero(errors)[:studentized.MIN_ERROR_UNITS - 1]] = 1.0
    weights = intervals.resample_weights(groups, 100, seed=0)
    replicates = (weights @ few) / (weights @ trials)
    assert studentized.studentized_interval(weights, groups, few, trials, replicates,
                                            few.sum() / trials.sum()) is None
    assert studentized.studentized_interval(weights, groups, errors, trials,
                                            (weights @ errors) / (weights @ trials), None) is None


def test_resamples_without_errors_are_the_worst_pivot_not_dropped():
    # 10 % of the resamples drew only the unit without errors: their pivot is -inf, more than the
    # 2.5 % tail, so the upper end is the largest rate there is (1), not a finite guess.
    groups = np.zeros(6, dtype=np.int64)
    trials = np.full(6, 10.0)
    errors = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    weights = np.array([[0, 0, 0, 0, 0, 6]] * 10 + [[1, 1, 1, 1, 1, 1]] * 90, dtype=float)
    replicates = (weights @ errors) / (weights @ trials)
    got = studentized.studentized_interval(weights, groups, errors, trials, replicates,
                                           errors.sum() / trials.sum())
    assert got[1] == 1.0


def _evaluated_and_recounted():
    """(the evaluation's verification summary, {scope: (errors, trials) per unit}, the resampling
    weights, unit_groups) on identities of varying difficulty in groups a and b (the noise of
    their images log-normal: false non-matches sit in a few of them) and of one difficulty in
    group c. Per unit, the genuine pairs and false
    non-matches are recounted by brute force at the evaluation's threshold (a match is a score
    >= it), with the evaluation's own resampling weights."""
    from core import evaluation, features
    from core.settings.gate import GateConfig

    rng = np.random.default_rng(21)
    n_ids, dim = 120, 16
    centres = rng.standard_normal((n_ids, dim))
    noise = np.exp(rng.normal(-0.6, 0.5, n_ids))
    noise[2::3] = np.exp(-0.45)         # group c: every identity alike, its errors spread out
    sizes = rng.integers(2, 7, n_ids)
    labels = np.repeat(np.arange(n_ids), sizes)
    groups = np.array(["a", "b", "c"])[labels % 3]
    embeddings = (centres[labels] + noise[labels, None] * rng.standard_normal((len(labels), dim)))
    embeddings = (embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)).astype(np.float32)
    config = GateConfig(bootstrap_resamples=400, bootstrap_seed=3, min_group_identities=1)
    metrics = evaluation.measure({"embeddings": embeddings, "labels": labels, "groups": groups},
                                 config)
    verification = metrics["verification"]
    threshold = float(verification["threshold"])

    units, unit_groups = intervals.identity_units(labels, groups)
    weights = intervals.resample_weights(unit_groups, 400, 3)
    sims = embeddings @ embeddings.T
    upper = np.triu(np.ones_like(sims, dtype=bool), 1)
    genuine = upper & (labels[:, None] == labels[None, :])
    first, second = np.nonzero(genuine)
    missed = sims[first, second] < threshold
    trials_all = np.bincount(units[first], minlength=len(unit_groups)).astype(float)
    errors_all = np.bincount(units[first], weights=missed, minlength=len(unit_groups))
    counts = {}
    for scope in [features.OVERALL, "a", "b", "c"]:
        keep = np.ones(len(unit_groups), bool) if scope == features.OVERALL else (
            unit_groups == ["a", "b", "c"].index(scope))
        counts[scope] = (np.where(keep, errors_all, 0.0), np.where(keep, trials_all, 0.0))
    return verification, counts, weights, unit_groups


def test_evaluations_fnmr_intervals_contain_the_studentized_one_recounted_from_the_embeddings():
    # The studentized interval of the recounted errors with the evaluation's own resamples must
    # lie inside every scope's fnmr_ci, and be its upper end somewhere (the interval is wired, not
    # only computed).
    verification, counts, weights, unit_groups = _evaluated_and_recounted()
    binding = 0
    for scope, (errors, trials) in counts.items():
        replicates = (weights @ errors) / (weights @ trials)
        rate = errors.sum() / trials.sum()
        assert verification[scope]["fnmr"] == pytest.approx(rate)
        t = studentized.studentized_interval(weights, unit_groups, errors, trials, replicates, rate)
        assert t is not None
        ci = verification[scope]["fnmr_ci"]
        assert ci[0] <= t[0] + 1e-12 and t[1] <= ci[1] + 1e-12
        binding += ci[1] == pytest.approx(t[1])
    assert binding >= 1


def test_a_groups_fnmr_interval_is_the_widest_of_its_own_and_the_score_interval_at_the_pooled_design_effect():
    # Per end the widest of: the percentile interval of the group's resamples, its studentized
    # interval, and Wilson's score interval at the effective trials whose design effect is at
    # least the overall scope's (core.rate_intervals.pooled_effect), its variance x G / (G - 1)
    # and its t quantile at the fewer of G - 1 (G: Kish's clusters) and Satterthwaite's degrees of
    # freedom of the group's identity-clustered variance (sum v)^2 / sum v^2,
    # v_u = n / (n - 1) (z_u - mean z)^2, z_u = e_u - rate m_u; every piece recomputed here from
    # the recounted errors. A group with a design effect below the overall's must take the
    # overall's.
    from scipy import stats

    from core import small_counts
    from core.features import OVERALL

    verification, counts, weights, unit_groups = _evaluated_and_recounted()
    errors, trials = counts[OVERALL]
    pooled = small_counts.design_effect(errors.sum() / trials.sum(), trials.sum(),
                                        (weights @ errors) / (weights @ trials))
    raised = 0
    for scope in ("a", "b", "c"):
        errors, trials = counts[scope]
        replicates = (weights @ errors) / (weights @ trials)
        rate, n = errors.sum() / trials.sum(), trials.sum()
        own = small_counts.design_effect(rate, n, replicates)
        assert np.count_nonzero(errors) >= 5 and own is not None    # the own estimate alone
        kish = small_counts.kish_clusters(trials[trials > 0])
        n_eff = min(n, max(kish, n / max(own, pooled)))
        mine = unit_groups == ["a", "b", "c"].index(scope)
        z = errors[mine] - rate * trials[mine]
        v = len(z) / (len(z) - 1.0) * (z - z.mean()) ** 2
        df = min(kish - 1.0, v.sum() ** 2 / (v ** 2).sum())
        wilson = small_counts.wilson_interval(rate, n_eff * (kish - 1.0) / kish,
                                              z=stats.t.ppf(0.975, df))
        t = studentized.studentized_interval(weights, unit_groups, errors, trials, replicates, rate)
        percentile = np.percentile(replicates, [2.5, 97.5])
        expected = [min(wilson[0], t[0], percentile[0]), max(wilson[1], t[1], percentile[1])]
        assert verification[scope]["fnmr_ci"] == pytest.approx(expected)
        raised += own < pooled
    assert raised >= 1


def test_the_weight_matrix_is_not_copied():
    # A copy of [resamples, units] per group and scope would double the bootstrap's memory
    # (1.6 GB at 1,000 resamples x 200,000 identities): the groups' weights are views.
    import tracemalloc

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(4), 5000)
    trials = rng.integers(1, 10, len(groups)).astype(float)
    errors = rng.binomial(trials.astype(int), 0.05).astype(float)
    weights = intervals.resample_weights(groups, 200, seed=1)
    replicates = (weights @ errors) / (weights @ trials)
    tracemalloc.start()
    try:
        studentized.studentized_interval(weights, groups, errors, trials, replicates,
                                         errors.sum() / trials.sum())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.1 * weights.nbytes
