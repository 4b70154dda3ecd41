"""Every interval the gate decides on covers its truth at about its nominal 95 %: a fast version of
`make bench ARGS="--only coverage"` (benchmarks/coverage.py: the population model, the truths,
and the full tables in benchmarks/results.md).

100 simulated eval sets of about 20 identities per group (4 groups of unequal size, 2-10 images per
identity, identity random effects) go through evaluate() with the gate's default 1,000 resamples,
in a scenario with many errors ("high") and one with few ("low": groups with 0-5 false
non-matches). Each interval's coverage must lie in 0.88-0.99 (0.95 +- about 3 Monte Carlo
standard errors at 100 sets): below, an interval is too narrow (the gate blesses on noise); above,
too wide (it refuses good models). The upper end applies only where the full simulation finds an
interval about nominal at 20 identities per group with many errors (NOMINAL_IN_HIGH); the others
are conservative by design there or everywhere (few misses in a group of 20 identities, no error
seen, the FMR side's pairs of identities, the joint bounds), each declared approximate for that
reason in core.interval_quality and so published in metrics.json, the report and `review show`;
they are held to the lower end only: they must still cover, and with many errors none may be
more than WIDTH_LIMIT times as wide as its estimate's own spread over the sets (the skewed error
ratio aside: its interval may end at +inf by design). The truths are independent of
the code under test: population rates at the chosen threshold from every population genuine pair
and a million sampled impostor pairs, Recall@1 as the expectation over independent eval sets by a
plain NumPy nearest neighbour.

It fails on a regression of any interval: e.g. with the impostor pair weight w_a + w_b (issue 19)
the FMR, FMR differential and delta FMR intervals cover far below 0.88."""
import numpy as np
import pytest

from benchmarks import coverage

SETS = 100
LOW, HIGH = 0.88, 0.99


@pytest.fixture(scope="module")
def cells():
    result = {}
    for name in ("high", "low"):
        population = coverage.Population(coverage.SCENARIOS[name], 20, seed=7,
                                         impostor_sample=1_000_000)
        result[name] = coverage.simulate(coverage.SCENARIOS[name], 20, SETS, population,
                                         resamples=1000, seed=11, truth_sets=200)
    return result


SCOPES = {"overall": ("overall",), "per group": coverage.GROUPS}
FAMILIES = [(family, scope) for family in coverage.FAMILY_FIGURE for scope in SCOPES
            if not (scope == "per group" and family in ("FMR differential", "skewed error ratio"))
            and not (scope == "overall" and family in ("Recall@1 within group",
                                                       "delta Recall@1 within"))]


# About nominal in the "high" scenario at 20 identities per group (benchmarks/results.md): the
# overall Recall@1 and FNMR, every paired Recall@1 delta and the FNMR delta. A change that widens
# them past 0.99 fails here.
NOMINAL_IN_HIGH = {("Recall@1 whole gallery", "overall"), ("FNMR", "overall"),
                   ("delta Recall@1", "overall"), ("delta Recall@1", "per group"),
                   ("delta Recall@1 within", "per group"), ("delta FNMR", "overall"),
                   ("delta FNMR", "per group")}


@pytest.mark.parametrize("scenario", ["high", "low"])
@pytest.mark.parametrize("family,scope", FAMILIES, ids=[f"{f}, {s}" for f, s in FAMILIES])
def test_interval_covers_its_truth_at_about_95_percent(cells, scenario, family, scope):
    measured = coverage.coverage(cells[scenario]["rows"], family, SCOPES[scope])
    assert measured is not None, f"{family}, {scope}: evaluate() gave no such interval"
    value, error, sets = measured
    assert sets == SETS
    text = f"{family}, {scope} ({scenario}): coverage {value:.3f} +- {error:.3f}"
    assert value >= LOW, f"{text} below {LOW}: too narrow"
    # With few errors (low) the small-count intervals are conservative by design (no error seen
    # bounds a rate only as far as the identities allow): there the lower end only.
    if scenario == "high" and (family, scope) in NOMINAL_IN_HIGH:
        assert value <= HIGH, f"{text} above {HIGH}: too wide"


WIDTH_LIMIT = 4.0
WIDTH_CHECKED = [(f, s) for f, s in FAMILIES if f != "skewed error ratio"]


@pytest.mark.parametrize("family,scope", WIDTH_CHECKED, ids=[f"{f}, {s}" for f, s in WIDTH_CHECKED])
def test_no_interval_is_many_times_wider_than_its_estimates_own_spread(cells, family, scope):
    # The band's upper end cannot catch an interval that is conservative by design growing wider
    # still (it covers 1.000 either way); its width can. With many errors ("high"), each scope's
    # median interval width must stay within WIDTH_LIMIT x the central 95 % range of its
    # estimate's error (estimate - truth) over the simulated sets: the spread a 95 % interval is
    # meant to span, measured independently of the code under test. Left out: the skewed error
    # ratio, whose smallest group may show almost no false non-match at 20 identities per group,
    # so its interval ends at +inf by design (the rule on it then fails closed).
    for name in SCOPES[scope]:
        rows = [r for r in cells["high"]["rows"] if r["family"] == family and r["scope"] == name]
        errors = np.array([r["estimate"] - r["truth"] for r in rows])
        widths = np.array([r["hi"] - r["lo"] for r in rows])
        spread = np.percentile(errors, 97.5) - np.percentile(errors, 2.5)
        assert spread > 0 and np.isfinite(widths).all(), (family, name)
        ratio = np.median(widths) / spread
        assert ratio <= WIDTH_LIMIT, f"{family}, {name}: median width {ratio:.2f} x the spread"


def test_the_intervals_held_to_the_lower_end_only_are_declared_approximate():
    # An interval exempt from the upper end must be published as approximate (metrics.json, the
    # report, review show), and every approximate one's reason must say which way it errs.
    from core import interval_quality

    for family, scope in FAMILIES:
        if (family, scope) not in NOMINAL_IN_HIGH:
            assert coverage.FAMILY_FIGURE[family] in interval_quality.APPROXIMATE, (family, scope)
    for figure, why in interval_quality.APPROXIMATE.items():
        assert "conservative" in why or "too narrow" in why, figure


def test_the_low_scenario_has_groups_with_no_error_and_they_are_covered(cells):
    few, zero = coverage.small_count_rows(cells["low"]["rows"])
    zero_fnmr = [r for r in zero if r["family"] == "FNMR"]
    assert len(zero_fnmr) >= 50            # the case the small-count interval exists for
    assert all(r["lo"] == 0.0 and r["hi"] > 0.0 for r in zero_fnmr)
    assert np.mean([r["lo"] <= r["truth"] <= r["hi"] for r in zero_fnmr]) >= LOW


def test_swapping_the_two_models_negates_every_paired_delta_and_its_interval():
    # What the simulation of max_drop rests on (benchmarks/coverage_rules.py, `_drop_cases`):
    # evaluate(B, A) reports the change of B against A as minus that of A against B, with the
    # interval negated end for end, for every scope and every paired figure.
    from components.recall_evaluator import executor
    from components.recall_evaluator import gate as gate_lib

    population = coverage.Population(coverage.SCENARIOS["moderate"], 10, seed=3,
                                     impostor_sample=200_000)
    candidate, baseline = population.eval_set(10, np.random.default_rng(4))
    config = gate_lib.GateConfig(bootstrap_resamples=300, bootstrap_seed=5, min_group_identities=1)
    forward = executor.evaluate(candidate, config, baseline)["deltas"]
    backward = executor.evaluate(baseline, config, candidate)["deltas"]
    compared = 0
    for scope, delta in forward.items():
        for key in [k for k in delta if f"{k}_ci" in delta]:
            if delta[key] is None:
                continue
            assert backward[scope][key] == pytest.approx(-delta[key], abs=1e-12), (scope, key)
            low, high = delta[f"{key}_ci"]
            assert backward[scope][f"{key}_ci"] == pytest.approx([-high, -low], abs=1e-12), (scope, key)
            compared += 1
    assert compared >= 2 * len(forward)
    assert any(d["recall@1"] != 0 for d in forward.values())
