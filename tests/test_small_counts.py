"""core.small_counts against scipy's binomial intervals, a literal identity bootstrap and the
formulas as published (Wilson; Kish; Newcombe's hybrid score interval)."""
import numpy as np
import pytest

from core import small_counts


def t_wilson(p, n_eff, clusters, level=0.95):
    """Wilson's score interval (the textbook formula) with Student's t quantile at G - 1 degrees
    of freedom and n_eff (G - 1) / G trials, G = max(2, clusters): the small-cluster correction."""
    from scipy import stats

    g = max(2.0, clusters)
    z = stats.t.ppf(0.5 + level / 2, g - 1)
    n = n_eff * (g - 1) / g
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [max(0.0, centre - half), min(1.0, centre + half)]


def test_wilson_interval_matches_scipy():
    from scipy import stats

    for errors, trials in [(0, 20), (1, 37), (5, 120), (60, 120), (120, 120), (3, 1000)]:
        expected = stats.binomtest(errors, trials).proportion_ci(0.95, method="wilson")
        got = small_counts.wilson_interval(errors / trials, trials, 0.95)
        assert got == pytest.approx([expected.low, expected.high], abs=1e-12)
    expected = stats.binomtest(2, 50).proportion_ci(0.9, method="wilson")
    assert small_counts.wilson_interval(2 / 50, 50, 0.9) == pytest.approx([expected.low, expected.high])


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
    assert small_counts.design_effect(rate, trials.sum(), reps) == pytest.approx(1.0, abs=0.15)
    # Perfectly clustered: an identity fails all 5 trials or none: design effect 5 (1 + (m-1) rho).
    clustered = 5.0 * (rng.random(400) < 0.1)
    rate = clustered.sum() / trials.sum()
    reps = _literal_bootstrap(clustered, trials, 2000, 2)
    assert small_counts.design_effect(rate, trials.sum(), reps) == pytest.approx(5.0, rel=0.15)
    # Nothing to estimate it from: no error, or no resampling variance.
    assert small_counts.design_effect(0.0, 2000, reps) is None
    assert small_counts.design_effect(0.01, 2000, np.full(100, 0.01)) is None


def test_zero_errors_give_the_wilson_bound_at_the_number_of_identities_not_zero_zero():
    from scipy import stats

    # 20 identities of 6 pairs each, no error: every resample has none, bootstrap [0, 0]. Without a
    # design effect the effective count is Kish's (sum n)^2 / sum n^2 = 20 identities; with the
    # small-cluster correction the upper end is t^2 / (19 + t^2), t at 19 degrees of freedom.
    sizes = np.full(20, 6.0)
    got = small_counts.small_count_interval(0.0, 120, np.zeros(1000), sizes, [0.0, 0.0])
    t = stats.t.ppf(0.975, 19)
    assert got == pytest.approx([0.0, t * t / (19 + t * t)])
    assert got[1] > stats.binomtest(0, 20).proportion_ci(0.95, method="wilson").high
    # Unequal identities: Kish's count of (1, 1, 1, 9) is 144 / 84 (G = 2 at least for the t).
    kish = 12 ** 2 / 84
    got = small_counts.small_count_interval(0.0, 12, np.zeros(100), [1, 1, 1, 9], [0.0, 0.0])
    assert got[1] == pytest.approx(t_wilson(0.0, kish, kish)[1])
    # A prior design effect (the overall scope's): n_eff = trials / 2 = 60, still G = 20.
    got = small_counts.small_count_interval(0.0, 120, np.zeros(1000), sizes, [0.0, 0.0],
                                            prior_design_effect=2.0)
    assert got[1] == pytest.approx(t_wilson(0.0, 60, 20)[1])
    # All queries hit (Recall@1 = 1): the mirror image.
    got = small_counts.small_count_interval(1.0, 120, np.ones(1000), sizes, [1.0, 1.0])
    assert got == pytest.approx([1 - t * t / (19 + t * t), 1.0])


def test_small_count_interval_keeps_the_wider_end_and_fails_closed_without_a_bootstrap():
    from scipy import stats

    rng = np.random.default_rng(3)
    trials = rng.integers(1, 20, size=300).astype(float)
    errors = rng.binomial(trials.astype(int), 0.2).astype(float)
    rate = errors.sum() / trials.sum()
    reps = _literal_bootstrap(errors, trials, 1000, 4)
    boot = list(np.percentile(reps, [2.5, 97.5]))
    deff = np.var(reps, ddof=1) / (rate * (1 - rate) / trials.sum())
    kish = trials.sum() ** 2 / np.square(trials).sum()
    wilson = t_wilson(rate, trials.sum() / max(1.0, deff), kish)
    got = small_counts.small_count_interval(rate, trials.sum(), reps, trials, boot)
    assert got == pytest.approx([min(boot[0], wilson[0]), max(boot[1], wilson[1])])
    assert got[0] <= rate <= got[1]
    # Never narrower than what independent trials would give (n_eff <= trials).
    plain = stats.binomtest(int(errors.sum()), int(trials.sum())).proportion_ci(method="wilson")
    assert got[0] <= plain.low + 1e-12 and got[1] >= plain.high - 1e-12
    assert small_counts.small_count_interval(rate, trials.sum(), reps, trials, None) is None


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
        got = small_counts.small_count_interval(rate, pairs.sum(), reps, pairs, boot)
        covered_plain += boot[0] <= truth <= boot[1]
        covered += got[0] <= truth <= got[1]
    assert covered_plain / sets < 0.85
    assert covered / sets >= 0.93


def test_paired_small_count_interval_is_newcombes_hybrid_score_interval_with_the_resampled_correlation():

    # 24 identities x 5 queries: the candidate misses none (Wilson at Kish's 24 identities), the
    # baseline 3 (its own design effect weighs 3/5 against the conservative prior 120 / 24 = 5);
    # r = 0 (no candidate variance).
    sizes = np.full(24, 5.0)
    rng = np.random.default_rng(0)
    baseline_reps = 1 - rng.binomial(3, 0.5, size=500) / 120
    c_low = t_wilson(1.0, 24, 24)[0]
    own = np.var(baseline_reps, ddof=1) / (117 / 120 * 3 / 120 / 120)
    n_eff = min(120, max(24, 120 / (0.6 * max(1.0, own) + 0.4 * 5.0)))
    lb, ub = t_wilson(117 / 120, n_eff, 24)
    d = 1.0 - 117 / 120
    expected = [d - np.hypot(1.0 - c_low, ub - 117 / 120), d + np.hypot(0.0, 117 / 120 - lb)]
    got = small_counts.paired_small_count_interval((1.0, np.ones(500), None),
                                                (117 / 120, baseline_reps, None), 120, sizes,
                                                [0.0, 0.05])
    assert got == pytest.approx([min(0.0, expected[0]), max(0.05, expected[1])])
    # Correlated resamples shrink the interval (the pairing): r from the paired replicates.
    p1, p2 = 0.9, 0.8
    common = rng.normal(0, 0.03, size=2000)
    reps1, reps2 = p1 + common + rng.normal(0, 0.005, 2000), p2 + common + rng.normal(0, 0.005, 2000)
    r = np.corrcoef(reps1, reps2)[0, 1]
    sizes = np.full(100, 10.0)
    n1 = small_counts.effective_trials(p1, 1000, reps1, sizes)
    n2 = small_counts.effective_trials(p2, 1000, reps2, sizes)
    (l1, u1), (l2, u2) = t_wilson(p1, n1, 100), t_wilson(p2, n2, 100)
    low = p1 - p2 - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * r * (p1 - l1) * (u2 - p2))
    high = p1 - p2 + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2 - 2 * r * (u1 - p1) * (p2 - l2))
    got = small_counts.paired_small_count_interval((p1, reps1, None), (p2, reps2, None), 1000, sizes,
                                                [0.1, 0.1])
    assert got == pytest.approx([low, high])
    assert high - low < 0.5 * (u1 - l1 + u2 - l2)        # narrower than unpaired
    assert small_counts.paired_small_count_interval((p1, reps1, None), (p2, reps2, None), 1000, sizes,
                                                 None) is None


def test_few_errors_shrink_the_own_design_effect_towards_the_prior_in_proportion_to_the_errors():
    from scipy import stats

    # 40 identities x 5 trials, 2 errors in two identities: own design effect from the literal
    # bootstrap, weighed 2/5 against the prior (3.0 here), 3/5.
    trials = np.full(40, 5.0)
    errors = np.zeros(40)
    errors[[3, 17]] = 1.0
    reps = _literal_bootstrap(errors, trials, 2000, 9)
    rate = 2 / 200
    own = max(1.0, np.var(reps, ddof=1) / (rate * (1 - rate) / 200))
    expected_n = 200 / (0.4 * own + 0.6 * 3.0)
    got = small_counts.small_count_interval(rate, 200, reps, trials, [0.0, 0.0],
                                            prior_design_effect=3.0)
    ci = stats.binomtest(2, 200).proportion_ci(method="wilson")   # only to bracket the result
    assert got == pytest.approx([0.0, t_wilson(rate, expected_n, 40)[1]])
    assert got[1] > ci.high                                      # wider than independent trials
    # Five errors or more: the own design effect alone, whatever the prior.
    errors[[1, 5, 9]] = 1.0
    reps = _literal_bootstrap(errors, trials, 2000, 10)
    own = max(1.0, np.var(reps, ddof=1) / (0.025 * 0.975 / 200))
    got = small_counts.small_count_interval(0.025, 200, reps, trials, [0.0, 0.0],
                                            prior_design_effect=40.0)
    assert got == pytest.approx([0.0, t_wilson(0.025, min(200, max(40, 200 / own)), 40)[1]])


def test_a_least_design_effect_only_ever_lowers_the_effective_trials():
    # 60 identities x 8 trials, errors in 8 of them: own design effect from the literal bootstrap.
    # A least design effect above it sets n_eff = trials / least; one below it changes nothing;
    # and n_eff never falls below Kish's number of clusters (60).
    trials = np.full(60, 8.0)
    errors = np.zeros(60)
    errors[[2, 11, 19, 30, 41, 52, 55, 58]] = [3.0, 2.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0]
    reps = _literal_bootstrap(errors, trials, 2000, 12)
    rate = errors.sum() / trials.sum()
    own = max(1.0, np.var(reps, ddof=1) / (rate * (1 - rate) / 480))
    assert 1.0 < own < 4.0
    assert small_counts.effective_trials(rate, 480, reps, trials) == pytest.approx(480 / own)
    assert small_counts.effective_trials(rate, 480, reps, trials, least_design_effect=own + 2.0) \
        == pytest.approx(480 / (own + 2.0))
    assert small_counts.effective_trials(rate, 480, reps, trials, least_design_effect=own / 2) \
        == pytest.approx(480 / own)
    assert small_counts.effective_trials(rate, 480, reps, trials, least_design_effect=100.0) \
        == pytest.approx(60.0)
    got = small_counts.small_count_interval(rate, 480, reps, trials, [rate, rate],
                                            least_design_effect=own + 2.0)
    assert got == pytest.approx(t_wilson(rate, 480 / (own + 2.0), 60))


def test_paired_intervals_take_the_conservative_prior_at_the_overall_scope_and_the_overalls_in_a_group():
    from core import rate_intervals
    from core.features import OVERALL

    # Two models on the same 200 genuine pairs (40 identities x 5), one error each at the overall
    # scope (fewer than five: the design effect leans on its prior), and a group holding them.
    trials = np.full(40, 5.0)
    mine, theirs = np.zeros(40), np.zeros(40)
    mine[[3, 4, 5, 6, 7, 8]] = 1.0
    theirs[[3]] = 1.0
    reps = {"mine": _literal_bootstrap(mine, trials, 1000, 4),
            "theirs": _literal_bootstrap(theirs, trials, 1000, 4)}
    columns = [(OVERALL, "fnmr"), ("a", "fnmr")]
    index = {column: i for i, column in enumerate(columns)}

    def model(errors, replicates):
        rate = errors.sum() / 200
        return {"replicates": np.stack([replicates, replicates], axis=1),
                "clusters": np.array([40.0, 40.0]),
                "entries": {c: {"fnmr": rate, "n_genuine": 200.0} for c in columns}}

    candidate, baseline = model(mine, reps["mine"]), model(theirs, reps["theirs"])
    boot = [0.0, 0.0]
    p1, p2 = mine.sum() / 200, theirs.sum() / 200
    prior2 = small_counts.design_effect(p2, 200, reps["theirs"])
    for scope, priors in ((OVERALL, (None, None)),
                          ("a", (small_counts.design_effect(p1, 200, reps["mine"]), prior2))):
        expected = small_counts.paired_small_count_interval(
            (p1, reps["mine"], priors[0]), (p2, reps["theirs"], priors[1]), 200, 40.0, boot)
        got = rate_intervals.paired_interval((scope, "fnmr"), p1, p2, candidate, baseline, index, boot)
        assert got == pytest.approx(expected)
    # The conservative prior (trials / Kish's clusters = 5) is wider than the own estimate of
    # one error in one identity (about 1): the overall's interval is the wider of the two.
    own_prior = small_counts.paired_small_count_interval(
        (p1, reps["mine"], None), (p2, reps["theirs"], prior2), 200, 40.0, boot)
    overall = rate_intervals.paired_interval((OVERALL, "fnmr"), p1, p2, candidate, baseline, index,
                                             boot)
    assert overall[0] < own_prior[0]


def test_unit_trials_are_each_units_share_of_the_trials():
    from core.intervals import UnitSums

    # Queries per unit (linear); impostor pairs of 3 units of 1, 2, 3 images (products: unit a is
    # in v_a (V - v_a) pairs); a sparse pair (0, 2) taken off twice.
    sums = UnitSums(np.array([[4.0, 0.0], [1.0, 0.0], [0.0, 0.0]]),
                    products=np.array([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]]),
                    pairs=(np.array([0]), np.array([2]), np.array([-2.0]), np.array([1])))
    assert small_counts.unit_trials(sums) == pytest.approx(
        np.array([[4.0, 1 * 5 - 2], [1.0, 2 * 4], [0.0, 3 * 3 - 2]]))


def test_impostor_pairs_cluster_in_pairs_of_identities_kish_over_unit_pairs():
    from core.intervals import UnitSums

    # 5 identities of 1, 2, 2, 3, 6 images: the pairs of two identities are v_a v_b image pairs
    # each; Kish's count over all identity pairs, by brute force.
    v = np.array([1.0, 2.0, 2.0, 3.0, 6.0])
    sizes = [v[a] * v[b] for a in range(5) for b in range(a + 1, 5)]
    expected = sum(sizes) ** 2 / sum(s * s for s in sizes)
    queries = np.array([3.0, 1.0, 1.0, 1.0, 2.0])           # a per-unit column beside it
    sums = UnitSums(np.stack([queries, np.zeros(5)], axis=1),
                    products=np.stack([np.zeros(5), v], axis=1))
    got = small_counts.unit_clusters(sums)
    assert got == pytest.approx([queries.sum() ** 2 / np.square(queries).sum(), expected])


def test_bias_corrected_interval_shifts_towards_the_estimate_when_resamples_sit_above_it():
    from scipy import stats

    from core import bias_corrected

    # Resamples of a maximum sit above the estimate: 80 % of them above. BC takes the
    # Phi(2 z0 -+ 1.96) percentiles, z0 = Phi^-1(0.2), here written out with NumPy / SciPy.
    rng = np.random.default_rng(0)
    reps = np.concatenate([rng.uniform(0.5, 1.0, 200), rng.uniform(1.0, 3.0, 800)])
    z0 = stats.norm.ppf(0.2)
    expected = np.percentile(reps, 100 * stats.norm.cdf([2 * z0 - 1.959964, 2 * z0 + 1.959964]))
    got = bias_corrected.bias_corrected_interval(reps, 1.0)
    assert got == pytest.approx(expected, rel=1e-5)
    plain = np.percentile(reps, [2.5, 97.5])
    assert got[0] < plain[0] and got[1] < plain[1]
    # Centred resamples: the plain percentile interval; an infinite estimate: the plain one too.
    centred = rng.normal(size=1001)
    assert bias_corrected.bias_corrected_interval(centred, float(np.median(centred))) == \
        pytest.approx(np.percentile(centred, [2.5, 97.5]))
    assert bias_corrected.bias_corrected_interval(reps, np.inf) == pytest.approx(plain)
    # +inf resamples stay (an end may be +inf); too many undefined: no interval.
    unbounded = np.concatenate([rng.uniform(0.5, 1.0, 800), np.full(200, np.inf)])
    assert bias_corrected.bias_corrected_interval(unbounded, 1.0)[1] == np.inf
    assert bias_corrected.bias_corrected_interval(np.full(10, np.nan), 1.0) is None
    # The FMR differential keeps BC's lower end and the higher of the two upper ends.
    raised = bias_corrected.at_least_the_percentile_upper_end(got, reps)
    assert raised == pytest.approx([got[0], plain[1]])
    assert bias_corrected.at_least_the_percentile_upper_end(None, reps) is None


def test_the_skewed_error_ratios_interval_never_starts_below_one():
    from core import rate_intervals

    # Two groups with about the same FNMR (0.10 and 0.11 of 200 pairs, errors spread): the joint
    # bounds' lower end (largest lower end / smallest upper end) is below 1, a ratio of a largest
    # to a smallest rate never is; the upper end is the wider of the two, untouched.
    rng = np.random.default_rng(3)
    reps = np.stack([rng.normal(0.10, 0.02, 1000), rng.normal(0.11, 0.02, 1000)], axis=1)
    columns = [("a", "fnmr"), ("b", "fnmr")]
    entries = {("a", "fnmr"): {"fnmr": 0.10, "n_genuine": 200},
               ("b", "fnmr"): {"fnmr": 0.11, "n_genuine": 200}}
    clusters = np.array([60.0, 60.0])
    ratios = reps.max(axis=1) / reps.min(axis=1)
    joint = rate_intervals.joint_ratio_bounds(columns, entries, reps, clusters, {}, ["a", "b"])
    assert joint[0] < 1.0
    got = rate_intervals.skewed_error_ratio_interval(ratios, 1.1, columns, entries, reps, clusters,
                                                     {}, ["a", "b"])
    assert got[0] == 1.0
    assert got[1] == pytest.approx(max(joint[1], np.percentile(ratios, 97.5)), rel=0.05)
    assert got[1] >= joint[1]


def test_joint_bounds_of_a_max_over_min_hold_when_every_group_interval_holds():
    from core import rate_intervals

    # Two groups, FNMR 0.1 of 100 pairs (spread over identities) and 0 of 50; Bonferroni level
    # 0.975 each: lower = largest lower end / smallest upper end, upper = largest upper / 0 = inf.
    rng = np.random.default_rng(1)
    reps = np.stack([rng.normal(0.1, 0.02, 1000), np.zeros(1000)], axis=1)
    columns = [("a", "fnmr"), ("b", "fnmr")]
    entries = {("a", "fnmr"): {"fnmr": 0.1, "n_genuine": 100},
               ("b", "fnmr"): {"fnmr": 0.0, "n_genuine": 50}}
    clusters = np.array([40.0, 20.0])
    each = [small_counts.small_count_interval(
        entries[c]["fnmr"], entries[c]["n_genuine"], reps[:, i], clusters[i],
        list(np.percentile(reps[:, i], [1.25, 98.75])), 0.975) for i, c in enumerate(columns)]
    got = rate_intervals.joint_ratio_bounds(columns, entries, reps, clusters, {}, ["a", "b"])
    assert each[1][0] == 0.0
    assert got == pytest.approx([each[0][0] / min(each[0][1], each[1][1]), np.inf])
    # Both groups without an error: 0 / 0 is 1 at both ends only if every upper end is 0 too,
    # which the small-count interval never gives (no error seen is not proof of none).
    zeros = {c: {"fnmr": 0.0, "n_genuine": 50} for c in columns}
    low, high = rate_intervals.joint_ratio_bounds(columns, zeros, np.zeros((1000, 2)), clusters,
                                                  {}, ["a", "b"])
    assert low == 0.0 and high == np.inf



def _satterthwaite_by_loops(errors, trials, groups):
    """Satterthwaite's degrees of freedom of a stratified clustered variance, written out per unit:
    v_u = n_g / (n_g - 1) (z_u - mean of z over u's group)^2, z_u = e_u - r m_u, r = sum e / sum m;
    (sum v)^2 / sum v^2."""
    rate = sum(errors) / sum(trials)
    z = [e - rate * m for e, m in zip(errors, trials)]
    v = []
    for g in sorted(set(groups)):
        mine = [z[u] for u in range(len(z)) if groups[u] == g]
        if len(mine) < 2:
            continue
        mean = sum(mine) / len(mine)
        v += [len(mine) / (len(mine) - 1) * (x - mean) ** 2 for x in mine]
    return sum(v) ** 2 / sum(x * x for x in v) if any(v) else float("inf")


def test_variance_degrees_count_the_identities_that_carry_the_variance():
    rng = np.random.default_rng(3)
    groups = np.repeat([0, 1, 2], [40, 25, 1])          # a group of one unit adds no variance
    trials = rng.integers(1, 10, size=(len(groups), 3)).astype(float)
    errors = rng.binomial(trials.astype(int), [0.02, 0.2, 0.5]).astype(float)
    got = small_counts.variance_degrees(errors, trials, groups)
    expected = [_satterthwaite_by_loops(errors[:, m], trials[:, m], groups) for m in range(3)]
    assert got == pytest.approx(expected)
    # k identities holding all the errors (equal shares) among 300: about k degrees of freedom,
    # however many identities the scope has.
    trials = np.full((300, 1), 6.0)
    for k in (1, 2, 4, 8):
        errors = np.zeros((300, 1))
        errors[:k] = 3.0
        assert k <= small_counts.variance_degrees(errors, trials, np.zeros(300))[0] < k + 0.5
    # Errors spread over every identity: many (about G / 3 for residuals near normal).
    errors = rng.binomial(6, 0.3, size=(300, 1)).astype(float)
    assert small_counts.variance_degrees(errors, trials, np.zeros(300))[0] > 60
    # No error and no variance: +inf (the clusters' G - 1 applies).
    assert small_counts.variance_degrees(np.zeros((5, 1)), np.ones((5, 1)), np.zeros(5))[0] == np.inf


def test_the_score_intervals_t_quantile_takes_the_fewer_of_the_clusters_and_the_variances_degrees():
    from scipy import stats

    def at(p, n_eff, clusters, df):
        g = max(2.0, clusters)
        return small_counts.wilson_interval(p, n_eff * (g - 1) / g, z=stats.t.ppf(0.975, df))

    assert small_counts.clustered_wilson(0.01, 2000, 300, degrees=3.5) == pytest.approx(
        at(0.01, 2000, 300, 3.5))
    assert small_counts.clustered_wilson(0.01, 2000, 30, degrees=500) == pytest.approx(
        t_wilson(0.01, 2000, 30))
    assert small_counts.clustered_wilson(0.01, 2000, 30, degrees=0.3) == pytest.approx(
        at(0.01, 2000, 30, 1.0))
    # Through small_count_interval: the same errors in two identities reach further up than
    # spread over all, where the bootstrap says nothing more.
    reps = np.full(100, 0.01)
    few = small_counts.small_count_interval(0.01, 2000, reps, np.full(300, 2000 / 300),
                                            [0.01, 0.01], degrees=2.0)
    spread = small_counts.small_count_interval(0.01, 2000, reps, np.full(300, 2000 / 300),
                                               [0.01, 0.01])
    assert few[1] > spread[1] * 1.1 and few[0] < spread[0]
