"""Bootstrap intervals over identities (core/intervals.py): weights, ratios, coverage, pairing."""
import numpy as np
import pytest

from core import intervals


def test_a_unit_is_one_identity_within_one_group():
    labels = np.array([7, 7, 3, 3, 7, 9])
    groups = np.array(["b", "b", "a", "a", "a", "b"])
    units, unit_groups = intervals.identity_units(labels, groups)
    # Units in (group, label) order: (a, 3), (a, 7), (b, 7), (b, 9); label 7 spans two groups.
    assert units.tolist() == [2, 2, 0, 0, 1, 3]
    assert unit_groups.tolist() == [0, 0, 1, 1]
    units, unit_groups = intervals.identity_units(labels)
    assert units.tolist() == [1, 1, 0, 0, 1, 2] and unit_groups.tolist() == [0, 0, 0]


def test_resampling_draws_each_groups_units_with_replacement_deterministically():
    unit_groups = np.array([0, 0, 0, 1, 1, 2])
    weights = intervals.resample_weights(unit_groups, n_resamples=4000, seed=3)
    assert weights.shape == (4000, 6)
    # Every resample has as many units of each group as the eval set.
    assert (weights[:, :3].sum(axis=1) == 3).all() and (weights[:, 3:5].sum(axis=1) == 2).all()
    assert (weights[:, 5] == 1).all()
    # With replacement: a unit drawn 0..3 times, each unit of a 3-unit group on average once,
    # and P(drawn 0 times) = (2/3)^3.
    assert set(np.unique(weights[:, :3])) <= {0, 1, 2, 3}
    assert weights[:, :3].mean() == pytest.approx(1.0, abs=0.03)
    assert (weights[:, 0] == 0).mean() == pytest.approx((2 / 3) ** 3, abs=0.03)
    assert (intervals.resample_weights(unit_groups, 50, seed=3)
            == intervals.resample_weights(unit_groups, 50, seed=3)).all()
    assert (intervals.resample_weights(unit_groups, 50, seed=4)
            != intervals.resample_weights(unit_groups, 50, seed=3)).any()


def test_ratio_replicates_equal_the_statistic_of_the_resampled_identities():
    rng = np.random.default_rng(0)
    hits = rng.integers(0, 4, size=12).astype(float)
    queries = hits + rng.integers(0, 3, size=12)
    queries[5] = hits[5] = 0           # an identity with no answerable query
    weights = intervals.resample_weights(np.zeros(12, int), n_resamples=200, seed=1)
    replicates = intervals.ratio_replicates(weights, hits, queries)
    for w, value in zip(weights, replicates):
        drawn = np.repeat(np.arange(12), w.astype(int))     # the identities this resample drew
        assert value == pytest.approx(hits[drawn].sum() / queries[drawn].sum())
    # Several statistics at once: columns.
    both = intervals.ratio_replicates(weights, np.stack([hits, hits / 2], 1), np.stack([queries] * 2, 1))
    assert np.allclose(both[:, 0], replicates) and np.allclose(both[:, 1], replicates / 2)


def test_undefined_resamples_are_left_out_and_too_many_give_no_interval():
    assert intervals.percentile_interval(np.array([np.nan] * 3 + [0.5] * 7)) == [0.5, 0.5]
    assert intervals.percentile_interval(np.array([np.nan] * 6 + [0.5] * 4)) is None
    values = np.arange(1001) / 1000
    assert intervals.percentile_interval(values, 0.95) == pytest.approx([0.025, 0.975])


def test_intervals_cover_the_true_rate_about_95_percent_of_the_time():
    # 200 simulated eval sets of 40 identities x 4 queries. Identity a hits with its own rate p_a
    # (Beta(4, 1): mean 0.8, identities differ, so queries of one identity are correlated); the
    # population Recall@1 is 0.8. A 95 % interval should contain 0.8 in ~95 % of the sets.
    rng = np.random.default_rng(11)
    n_sets, n_identities, per_identity = 200, 40, 4
    rates = rng.beta(4.0, 1.0, size=(n_sets, n_identities))
    hits = rng.binomial(per_identity, rates).astype(float)
    queries = np.full(n_identities, float(per_identity))
    covered = 0
    for s in range(n_sets):
        weights = intervals.resample_weights(np.zeros(n_identities, int), 1000, seed=s)
        lo, hi = intervals.ratio_interval(weights, hits[s], queries)
        covered += lo <= 0.8 <= hi
    assert 0.90 <= covered / n_sets <= 0.99, covered


def test_resampling_images_instead_of_identities_would_undercover():
    # The same simulation through the per-image view: every query its own unit. Correlated queries
    # make that interval too narrow; this is why the unit is the identity.
    rng = np.random.default_rng(12)
    n_sets, n_identities, per_identity = 100, 40, 4
    rates = rng.beta(1.0, 0.25, size=(n_sets, n_identities))       # mean 0.8, strongly spread
    hits = rng.binomial(1, np.repeat(rates, per_identity, axis=1)).astype(float)
    by_identity = hits.reshape(n_sets, n_identities, per_identity).sum(axis=2)
    covered_identity = covered_image = 0
    for s in range(n_sets):
        w_identity = intervals.resample_weights(np.zeros(n_identities, int), 400, seed=s)
        w_image = intervals.resample_weights(np.zeros(n_identities * per_identity, int), 400, seed=s)
        lo, hi = intervals.ratio_interval(w_identity, by_identity[s], np.full(n_identities, 4.0))
        covered_identity += lo <= 0.8 <= hi
        lo, hi = intervals.ratio_interval(w_image, hits[s], np.ones(n_identities * per_identity))
        covered_image += lo <= 0.8 <= hi
    assert covered_image < covered_identity - 5, (covered_image, covered_identity)
    assert 0.88 <= covered_identity / n_sets <= 0.99


def test_paired_difference_uses_the_same_identities_for_both_models():
    rng = np.random.default_rng(5)
    n = 60
    queries = np.full(n, 4.0)
    baseline = rng.binomial(4, rng.beta(2, 1, size=n)).astype(float)   # identities differ a lot
    candidate = baseline.copy()
    candidate[:6] = np.maximum(candidate[:6] - 1, 0)                   # a small, real drop
    weights = intervals.resample_weights(np.zeros(n, int), 1000, seed=0)
    same = intervals.paired_difference_interval(weights, (baseline, queries), (baseline, queries))
    assert same == [0.0, 0.0]
    lo, hi = intervals.paired_difference_interval(weights, (candidate, queries), (baseline, queries))
    true = (candidate.sum() - baseline.sum()) / queries.sum()
    assert lo <= true <= hi < 0.0
    # Two separate intervals would not show the drop: they overlap widely.
    a = intervals.ratio_interval(weights, candidate, queries)
    b = intervals.ratio_interval(weights, baseline, queries)
    assert (hi - lo) < 0.5 * ((a[1] - a[0]) + (b[1] - b[0]))
    assert a[1] > b[0]


def test_bad_resample_count_is_rejected():
    with pytest.raises(ValueError, match="n_resamples"):
        intervals.resample_weights(np.zeros(3, int), 0)


# ----------------------------------------------------------------------------- small counts

def test_wilson_interval_matches_scipy():
    from scipy import stats

    for errors, trials in [(0, 20), (1, 37), (5, 120), (60, 120), (120, 120), (3, 1000)]:
        expected = stats.binomtest(errors, trials).proportion_ci(0.95, method="wilson")
        got = intervals.wilson_interval(errors / trials, trials, 0.95)
        assert got == pytest.approx([expected.low, expected.high], abs=1e-12)
    expected = stats.binomtest(2, 50).proportion_ci(0.9, method="wilson")
    assert intervals.wilson_interval(2 / 50, 50, 0.9) == pytest.approx([expected.low, expected.high])


def _literal_bootstrap(errors, trials, resamples, seed):
    """Ratios of identities drawn with replacement (a plain loop, not core.intervals)."""
    rng = np.random.default_rng(seed)
    n = len(trials)
    values = []
    for _ in range(resamples):
        drawn = rng.integers(0, n, size=n)
        values.append(errors[drawn].sum() / trials[drawn].sum())
    return np.array(values)


def test_design_effect_is_one_for_independent_trials_and_the_cluster_size_when_identities_fail_together():
    trials = np.full(400, 5.0)
    # Independent: each identity's 5 trials are Bernoulli(0.1) on their own.
    rng = np.random.default_rng(0)
    independent = rng.binomial(5, 0.1, size=400).astype(float)
    rate = independent.sum() / trials.sum()
    reps = _literal_bootstrap(independent, trials, 2000, 1)
    assert intervals.design_effect(rate, trials.sum(), reps) == pytest.approx(1.0, abs=0.15)
    # Perfectly clustered: an identity fails all 5 trials or none: design effect 5 (1 + (m-1) rho).
    clustered = 5.0 * (rng.random(400) < 0.1)
    rate = clustered.sum() / trials.sum()
    reps = _literal_bootstrap(clustered, trials, 2000, 2)
    assert intervals.design_effect(rate, trials.sum(), reps) == pytest.approx(5.0, rel=0.15)
    # Too few errors to estimate it.
    assert intervals.design_effect(4 / 2000, 2000, reps) is None
    assert intervals.design_effect(0.0, 2000, reps) is None


def test_zero_errors_give_the_wilson_bound_at_the_number_of_identities_not_zero_zero():
    from scipy import stats

    # 20 identities of 6 pairs each, no error: every resample has none, bootstrap [0, 0]. Without a
    # design effect the effective count is Kish's (sum n)^2 / sum n^2 = 20 identities.
    sizes = np.full(20, 6.0)
    got = intervals.small_count_interval(0.0, 120, np.zeros(1000), sizes, [0.0, 0.0])
    expected = stats.binomtest(0, 20).proportion_ci(0.95, method="wilson")
    assert got == pytest.approx([0.0, expected.high])
    # Unequal identities: Kish's count of (1, 1, 1, 9): 144 / 84.
    kish = 12 ** 2 / 84
    got = intervals.small_count_interval(0.0, 12, np.zeros(100), [1, 1, 1, 9], [0.0, 0.0])
    assert got[1] == pytest.approx(intervals.wilson_interval(0.0, kish)[1])
    # A design effect measured elsewhere (the overall scope): n_eff = trials / 2 = 60.
    got = intervals.small_count_interval(0.0, 120, np.zeros(1000), sizes, [0.0, 0.0],
                                         pooled_design_effect=2.0)
    assert got[1] == pytest.approx(stats.binomtest(0, 60).proportion_ci(method="wilson").high)
    # All queries hit (Recall@1 = 1): the mirror image.
    got = intervals.small_count_interval(1.0, 120, np.ones(1000), sizes, [1.0, 1.0])
    assert got == pytest.approx([1 - expected.high, 1.0])


def test_small_count_interval_keeps_the_wider_end_and_fails_closed_without_a_bootstrap():
    from scipy import stats

    rng = np.random.default_rng(3)
    trials = rng.integers(1, 20, size=300).astype(float)
    errors = rng.binomial(trials.astype(int), 0.2).astype(float)
    rate = errors.sum() / trials.sum()
    reps = _literal_bootstrap(errors, trials, 1000, 4)
    boot = list(np.percentile(reps, [2.5, 97.5]))
    deff = np.var(reps, ddof=1) / (rate * (1 - rate) / trials.sum())
    wilson = intervals.wilson_interval(rate, trials.sum() / max(1.0, deff))
    got = intervals.small_count_interval(rate, trials.sum(), reps, trials, boot)
    assert got == pytest.approx([min(boot[0], wilson[0]), max(boot[1], wilson[1])])
    assert got[0] <= rate <= got[1]
    # Never narrower than what independent trials would give (n_eff <= trials).
    plain = stats.binomtest(int(errors.sum()), int(trials.sum())).proportion_ci(method="wilson")
    assert got[0] <= plain.low + 1e-12 and got[1] >= plain.high - 1e-12
    assert intervals.small_count_interval(rate, trials.sum(), reps, trials, None) is None


def test_small_count_interval_covers_clustered_rates_with_few_errors():
    # 400 simulated groups of 20 identities x 2-10 images (pairs m(m-1)/2); identity i fails each
    # of its pairs with probability p_i, p_i ~ Beta with mean 0.01 (errors clustered in few
    # identities): most groups see 0-5 errors, where the percentile interval alone covers little.
    rng = np.random.default_rng(5)
    covered_plain = covered = 0
    sets = 400
    for s in range(sets):
        images = rng.integers(2, 11, size=20)
        pairs = (images * (images - 1) / 2).astype(float)
        p = rng.beta(0.2, 19.8, size=20)
        truth = 0.01                       # the expectation of the pair-weighted rate
        errors = rng.binomial(pairs.astype(int), p).astype(float)
        rate = errors.sum() / pairs.sum()
        reps = _literal_bootstrap(errors, pairs, 300, s)
        boot = list(np.percentile(reps, [2.5, 97.5]))
        got = intervals.small_count_interval(rate, pairs.sum(), reps, pairs, boot)
        covered_plain += boot[0] <= truth <= boot[1]
        covered += got[0] <= truth <= got[1]
    assert covered_plain / sets < 0.85
    assert covered / sets >= 0.93


def test_paired_small_count_interval_is_newcombes_hybrid_score_interval_with_the_resampled_correlation():
    from scipy import stats

    # 24 identities x 5 queries: the candidate misses none, the baseline 3 (too few for a design
    # effect): each rate's Wilson interval at Kish's 24 identities, r = 0 (no candidate variance).
    sizes = np.full(24, 5.0)
    rng = np.random.default_rng(0)
    baseline_reps = 1 - rng.binomial(3, 0.5, size=500) / 120
    c = stats.binomtest(24, 24).proportion_ci(method="wilson")
    lb, ub = intervals.wilson_interval(117 / 120, 24)
    d = 1.0 - 117 / 120
    expected = [d - np.hypot(1.0 - c.low, ub - 117 / 120), d + np.hypot(0.0, 117 / 120 - lb)]
    got = intervals.paired_small_count_interval((1.0, np.ones(500), None),
                                                (117 / 120, baseline_reps, None), 120, sizes,
                                                [0.0, 0.05])
    assert got == pytest.approx([min(0.0, expected[0]), max(0.05, expected[1])])
    # Correlated resamples shrink the interval (the pairing): r from the paired replicates.
    p1, p2 = 0.9, 0.8
    common = rng.normal(0, 0.03, size=2000)
    reps1, reps2 = p1 + common + rng.normal(0, 0.005, 2000), p2 + common + rng.normal(0, 0.005, 2000)
    r = np.corrcoef(reps1, reps2)[0, 1]
    sizes = np.full(100, 10.0)
    n1 = intervals.effective_trials(p1, 1000, reps1, sizes)
    n2 = intervals.effective_trials(p2, 1000, reps2, sizes)
    (l1, u1), (l2, u2) = intervals.wilson_interval(p1, n1), intervals.wilson_interval(p2, n2)
    low = p1 - p2 - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * r * (p1 - l1) * (u2 - p2))
    high = p1 - p2 + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2 - 2 * r * (u1 - p1) * (p2 - l2))
    got = intervals.paired_small_count_interval((p1, reps1, None), (p2, reps2, None), 1000, sizes,
                                                [0.1, 0.1])
    assert got == pytest.approx([low, high])
    assert high - low < 0.5 * (u1 - l1 + u2 - l2)        # narrower than unpaired
    assert intervals.paired_small_count_interval((p1, reps1, None), (p2, reps2, None), 1000, sizes,
                                                 None) is None
