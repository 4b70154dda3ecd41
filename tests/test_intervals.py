"""Bootstrap intervals over identities (core/intervals.py): weights, ratios, coverage, pairing."""
import tracemalloc

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
    # In blocks of 7 resamples, computed two at a time: the same values in the same places.
    assert np.array_equal(intervals.ratio_replicates(weights, hits, queries, block=7), replicates)
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


def test_unbounded_resamples_stay_in_the_percentiles_so_an_interval_may_end_at_infinity():
    # 35 % of the resamples unbounded: the upper end is +inf, not the largest finite value.
    values = np.concatenate([np.linspace(1.0, 7.5, 650), np.full(350, np.inf)])
    lo, hi = intervals.percentile_interval(values)
    assert hi == np.inf and lo == pytest.approx(np.percentile(values[:650], 2.5 / 0.65), rel=1e-2)
    # Interpolating between a finite and an infinite neighbour is infinite; finite ends unchanged.
    assert intervals.percentile_interval(np.r_[np.arange(975.0), np.full(26, np.inf)])[1] == np.inf
    assert intervals.percentile_interval(np.r_[np.arange(1000.0), np.inf]) == pytest.approx(
        np.percentile(np.arange(1001.0), [2.5, 97.5]))
    # Unbounded resamples are not undefined: 60 % of them still give an interval.
    assert intervals.percentile_interval(np.r_[np.full(60, np.inf), np.ones(40)]) == [1.0, np.inf]
    # The ratio conventions: x / 0 is +inf for x > 0, 0 / 0 undefined.
    assert intervals.ratio(np.array([2.0, 0.0, 3.0]), np.array([0.0, 0.0, 4.0])).tolist()[0] == np.inf
    assert np.isnan(intervals.ratio(np.array([0.0]), np.array([0.0]))[0])
    assert intervals.ratio_replicates(np.ones((1, 2)), np.array([1.0, 0.0]), np.array([0.0, 0.0]))[0] \
        == np.inf


def test_unit_sums_count_each_pair_of_two_drawn_identities_once_per_pair_of_copies():
    # Brute force from the definition: expand each unit into w_u copies; a pair of two copies of
    # different units a, b adds products[a] x products[b] (or the sparse count of (a, b)); copies of
    # one unit are never paired.
    rng = np.random.default_rng(3)
    n_units = 9
    products = rng.integers(1, 5, size=n_units).astype(float)
    a = np.array([0, 0, 2, 5, 7])
    b = np.array([1, 3, 8, 6, 8])
    counts = rng.integers(1, 4, size=len(a)).astype(float)
    linear = rng.integers(0, 3, size=n_units).astype(float)
    sums = intervals.UnitSums.columns([
        intervals.UnitSums(linear, products=products, constant=[-2.0]),
        intervals.UnitSums(np.zeros(n_units), pairs=(a, b, counts, np.zeros(len(a), int)))])
    weights = intervals.resample_weights(np.zeros(n_units, int), 50, seed=1)
    got = sums.of(weights)
    for row, w in zip(got, weights):
        copies = np.repeat(np.arange(n_units), w.astype(int))
        everything = sum(products[x] * products[y] for i, x in enumerate(copies)
                         for y in copies[i + 1:] if x != y)
        assert row[0] == pytest.approx((w * linear).sum() + everything - 2.0)
        pair_count = {(x, y): c for x, y, c in zip(a, b, counts)}
        sparse = sum(pair_count.get((min(x, y), max(x, y)), 0.0) for i, x in enumerate(copies)
                     for y in copies[i + 1:] if x != y)
        assert row[1] == pytest.approx(sparse)
    with pytest.raises(ValueError, match="itself"):
        intervals.UnitSums(np.zeros(3), pairs=(np.array([1]), np.array([1]), np.ones(1), np.zeros(1)))


def test_building_the_weights_peaks_within_a_quarter_above_the_weight_matrix():
    unit_groups = np.repeat(np.arange(4), [9000, 6000, 3000, 2000])        # 20,000 units
    tracemalloc.start()
    try:
        weights = intervals.resample_weights(unit_groups, 200, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert weights.nbytes == 200 * 20000 * 8
    assert peak <= 1.25 * weights.nbytes, peak / weights.nbytes


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
