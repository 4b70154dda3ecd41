"""Every interval the gate decides on covers its truth at about its nominal 95 %: a fast version of
`make bench ARGS="--only coverage"` (benchmarks/coverage.py: the population model, the truths,
and the full tables in benchmarks/results.md).

100 simulated eval sets of about 20 identities per group (4 groups of unequal size, 2-10 images per
identity, identity random effects) go through evaluate() with the gate's default 1,000 resamples;
each interval's coverage must lie in 0.88-0.99 (0.95 +- about 3 Monte Carlo standard errors at 100
sets): below, an interval is too narrow (the gate blesses on noise); above, too wide (it refuses
good models). The truths are independent of the code under test: population rates at the chosen
threshold from every population genuine pair and a million sampled impostor pairs, Recall@1 as the
expectation over independent eval sets by a plain NumPy nearest neighbour."""
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


FAMILIES = [(label, family, scopes) for label, family, scopes in [
    ("Recall@1 whole gallery, overall", "Recall@1 whole gallery", ("overall",)),
    ("Recall@1 whole gallery, per group", "Recall@1 whole gallery", coverage.GROUPS),
    ("Recall@1 within group, per group", "Recall@1 within group", coverage.GROUPS),
    ("FNMR, overall", "FNMR", ("overall",)),
    ("FNMR, per group", "FNMR", coverage.GROUPS),
    ("FMR, overall", "FMR", ("overall",)),
    ("FMR, per group", "FMR", coverage.GROUPS),
    ("FMR differential", "FMR differential", ("overall",)),
    ("skewed error ratio", "skewed error ratio", ("overall",)),
    ("delta Recall@1, overall", "delta Recall@1", ("overall",)),
    ("delta Recall@1, per group", "delta Recall@1", coverage.GROUPS),
    ("delta Recall@1 within, per group", "delta Recall@1 within", coverage.GROUPS),
]]


@pytest.mark.parametrize("label,family,scopes", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_interval_covers_its_truth_at_about_95_percent(cells, label, family, scopes):
    measured = coverage.coverage(cells["high"]["rows"], family, scopes)
    assert measured is not None, f"{label}: evaluate() gave no such interval"
    value, error, sets = measured
    assert sets == SETS
    assert LOW <= value <= HIGH, f"{label}: coverage {value:.3f} +- {error:.3f} outside {LOW}-{HIGH}"


@pytest.mark.parametrize("family", ["FNMR", "FMR"])
@pytest.mark.parametrize("scopes", [("overall",), coverage.GROUPS], ids=["overall", "per group"])
def test_rates_with_few_errors_still_cover(cells, family, scopes):
    # FNMR of 0.05-1 % per group: most groups see 0-5 false non-matches, many none, where a
    # percentile interval is [0, 0] or about as short. At zero errors the identities alone bound
    # the rate (conservative), so only the lower end of the band applies here.
    value, error, _ = coverage.coverage(cells["low"]["rows"], family, scopes)
    assert value >= LOW, f"{family} {scopes}: coverage {value:.3f} +- {error:.3f} below {LOW}"


def test_the_low_scenario_has_groups_with_no_error_and_they_are_covered(cells):
    few, zero = coverage.small_count_rows(cells["low"]["rows"])
    zero_fnmr = [r for r in zero if r["family"] == "FNMR"]
    assert len(zero_fnmr) >= 50            # the case the small-count interval exists for
    assert all(r["lo"] == 0.0 and r["hi"] > 0.0 for r in zero_fnmr)
    assert np.mean([r["lo"] <= r["truth"] <= r["hi"] for r in zero_fnmr]) >= LOW
