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
