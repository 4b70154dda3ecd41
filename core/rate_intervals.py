"""The evaluator's intervals of rates, widened for small counts (core.small_counts), from the
bootstrap replicates of every (scope, key) column: what `_with_intervals` and `_deltas` of the
RecallEvaluator publish as `<key>_ci`.

Rates are Recall@k (hits / answerable queries: `n_queries`, `n_queries_within`), FNMR (false
non-matches / `n_genuine`) and FMR (false matches / `n_impostor`). Columns are (scope, key) with
the overall scope first and, within a scope, whole-gallery Recall@k before its within-group twin
(core.recall's order), so that priors (`prior_effect`) are measured before they are needed.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from core import bias_corrected, small_counts
from core.features import OVERALL
from core.intervals import DEFAULT_LEVEL, percentile_interval, ratio

TRIALS = {"fnmr": "n_genuine", "fmr": "n_impostor"}
Column = Tuple[str, str]


def trials_key(key: str) -> str:
    """The entry's key holding the trials of rate `key`."""
    if key in TRIALS:
        return TRIALS[key]
    return "n_queries_within" if key.endswith("_within") else "n_queries"


def unit_clusters(denominators) -> np.ndarray:
    """[M] each column's effective number of independent clusters (small_counts.unit_clusters)."""
    return small_counts.unit_clusters(denominators)


def prior_effect(effects: Dict[Column, Optional[float]], scope: str, key: str) -> Optional[float]:
    """The prior design effect (core.small_counts.effective_trials) of a rate with few errors:
    for a within-group Recall@k, the same group's whole-gallery Recall@k (the same identities'
    clustering, measured where more misses are seen); else the overall scope's same figure (the
    clustering of the model's errors in identities, measured on more trials); None at the overall
    scope (the conservative prior)."""
    sibling = effects.get((scope, key[:-len("_within")])) if key.endswith("_within") else None
    return sibling if sibling is not None else effects.get((OVERALL, key))


def pooled_effect(effects: Dict[Column, Optional[float]], scope: str, key: str) -> Optional[float]:
    """The least design effect (core.small_counts.effective_trials) of a group's FNMR: the overall
    scope's, measured on all groups' identities at once; None for every other column.

    Why: a group's false non-matches gather in its few hardest identities (core.studentized), and
    an eval set that drew none of them shows a low rate with a low spread, so an interval built
    from the group's identities alone is too short on the upper side, the side `max_fnmr` judges
    (benchmarks/results.md, "Coverage of the gate's intervals"). No interval of the group alone
    can see identities it did not draw; the overall scope resamples every group's identities (G
    groups: about G times as many), so its design effect reflects how heavy the tail of hard
    identities is far more reliably. A group keeps its own design effect when that is larger (its
    errors cluster more than the others'), so the floor only widens: a group whose errors are
    spread more evenly than the others' gets a conservative interval, which fails safe under
    max_fnmr.
    Recall@k keeps its own clustering (module core.small_counts: its misses cluster differently
    between groups, and borrowing made within-group Recall@1 intervals much too wide)."""
    return effects.get((OVERALL, key)) if key == "fnmr" and scope != OVERALL else None


def _degrees(degrees: Optional[np.ndarray], i: int) -> Optional[float]:
    return None if degrees is None else float(degrees[i])


def widened_intervals(columns: Sequence[Column], entries: Dict[Column, dict], replicates: np.ndarray,
                      clusters: np.ndarray, level: float = DEFAULT_LEVEL,
                      degrees: Optional[np.ndarray] = None
                      ) -> Tuple[List[Optional[List[float]]], Dict[Column, Optional[float]]]:
    """(every column's interval: the percentile interval of its replicates widened by
    small_counts.small_count_interval, the design effects measured per column). `entries[column]`
    is the dict holding the column's rate under its key and its trials (`trials_key`); `degrees`
    [M], when given, each column's small_counts.variance_degrees."""
    effects: Dict[Column, Optional[float]] = {}
    result = []
    for i, (scope, key) in enumerate(columns):
        entry, reps = entries[scope, key], replicates[:, i]
        rate, trials = entry[key], entry[trials_key(key)]
        result.append(small_counts.small_count_interval(
            rate, trials, reps, clusters[i], percentile_interval(reps, level), level,
            prior_effect(effects, scope, key), pooled_effect(effects, scope, key),
            _degrees(degrees, i)))
        effects[scope, key] = small_counts.design_effect(rate, trials, reps)
    return result, effects


def joint_ratio_bounds(columns: Sequence[Column], entries: Dict[Column, dict], replicates: np.ndarray,
                       clusters: np.ndarray, effects: Dict[Column, Optional[float]],
                       scopes: Sequence[str], key: str = "fnmr", level: float = DEFAULT_LEVEL,
                       degrees: Optional[np.ndarray] = None) -> Optional[List[float]]:
    """[lower, upper] bounds of max / min of the `scopes`' rates `key` at confidence `level`, from
    the groups' widened intervals at the Bonferroni level 1 - (1 - level) / len(scopes) (all hold
    at once with probability >= level, and then the true max lies in [largest lower end, largest
    upper end] and the true min in [smallest lower end, smallest upper end]): lower = largest lower
    end / smallest upper end, upper = largest upper end / smallest lower end. Why: the bootstrap of
    a ratio over a minimum misses how far the smallest rate may be from its few observed errors (a
    group with 0-5 false non-matches), and the maximum and minimum of noisy rates are biased; the
    groups' small-count intervals carry both. A ratio with a 0 denominator is +inf, 0 / 0 is 1.0
    (core.verification.skewed_error_ratio); None when a group has no interval (fail closed)."""
    if not scopes:
        return None
    joint = 1.0 - (1.0 - level) / len(scopes)
    index = {column: i for i, column in enumerate(columns)}
    ends = []
    for scope in scopes:
        i = index[scope, key]
        entry, reps = entries[scope, key], replicates[:, i]
        ci = small_counts.small_count_interval(
            entry[key], entry[trials_key(key)], reps, clusters[i], percentile_interval(reps, joint),
            joint, prior_effect(effects, scope, key), pooled_effect(effects, scope, key),
            _degrees(degrees, i))
        if ci is None:
            return None
        ends.append(ci)
    return [_max_over_min(max(lo for lo, _ in ends), min(hi for _, hi in ends)),
            _max_over_min(max(hi for _, hi in ends), min(lo for lo, _ in ends))]


def _max_over_min(high: float, low: float) -> float:
    if high == 0 and low == 0:
        return 1.0
    return float(ratio(np.array([high]), np.array([low]))[0])


def fmr_differential_interval(differential: np.ndarray, estimate: Optional[float],
                              level: float = DEFAULT_LEVEL) -> Optional[List[float]]:
    """The FMR differential's interval from its resamples (max over groups of FMR / target): the
    bias-corrected percentile interval (core.bias_corrected), its upper end at least the plain
    percentile one (fails safe under max_fmr_ratio)."""
    return bias_corrected.at_least_the_percentile_upper_end(
        bias_corrected.bias_corrected_interval(differential, estimate, level), differential, level)


def skewed_error_ratio_interval(ratios: np.ndarray, estimate: Optional[float], columns, entries,
                                replicates: np.ndarray, clusters: np.ndarray, effects,
                                scopes: Sequence[str], level: float = DEFAULT_LEVEL,
                                degrees: Optional[np.ndarray] = None) -> Optional[List[float]]:
    """The skewed error ratio's interval: per end the wider of the bias-corrected percentile
    interval of its resamples `ratios` and `joint_ratio_bounds` of the groups' FNMR, its lower end
    at least 1 (a largest over a smallest rate is never below 1; the joint bounds' lower end, a
    largest lower end over a smallest upper end, can be); None (fail closed) when either is None."""
    boot = bias_corrected.bias_corrected_interval(ratios, estimate, level)
    joint = joint_ratio_bounds(columns, entries, replicates, clusters, effects, scopes, "fnmr", level,
                               degrees)
    if boot is None or joint is None:
        return None
    return [max(1.0, min(boot[0], joint[0])), max(boot[1], joint[1])]


def paired_interval(column: Column, mine: float, theirs: float, candidate: dict, baseline: dict,
                    index: Dict[Column, int], bootstrap: Optional[List[float]],
                    level: float = DEFAULT_LEVEL) -> Optional[List[float]]:
    """A paired delta's interval: small_counts.paired_small_count_interval of the two models'
    rates `mine` and `theirs` at `column`, each with its resamples and, in a group, the overall
    scope's design effect as prior; at the overall scope the conservative prior (None), as in
    `prior_effect`: a rate's own estimate, which rests on its few errors, cannot be its prior.
    `candidate` / `baseline`: the evaluator's measured models ("replicates", "clusters",
    "entries" as `widened_intervals` uses them)."""
    scope, key = column
    i, o = index[column], index[OVERALL, key]
    rates = []
    for rate, model in ((mine, candidate), (theirs, baseline)):
        overall = model["entries"][OVERALL, key]
        prior = None if scope == OVERALL else small_counts.design_effect(
            overall[key], overall[trials_key(key)], model["replicates"][:, o])
        rates.append((rate, model["replicates"][:, i], prior))
    trials = candidate["entries"][column][trials_key(key)]
    return small_counts.paired_small_count_interval(rates[0], rates[1], trials,
                                                    candidate["clusters"][i], bootstrap, level)
