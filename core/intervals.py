"""Bootstrap confidence intervals over identities, and the paired bootstrap of a difference.

Why identities: the images of one identity are not independent (its queries tend to hit or miss
together), so resampling images would understate the noise. The resampling unit is an identity
within a group (`identity_units`); units are resampled with replacement within their group
(stratified: every resample has as many units of each group as the eval set), which keeps group
figures defined and the overall figure's group mix fixed.

Resampling never ranks or scores again. Every statistic here is a ratio of sums over units
(hits / queries, false non-matches / genuine pairs, ...): the per-unit sums are computed once, a
resample is a vector of unit weights (how often each unit was drawn, from a multinomial), and all
resamples of all statistics are one matrix product: [resamples, units] @ [units, statistics].

Paired bootstrap: the candidate and the baseline model are evaluated on the same images, so their
difference is resampled with the SAME weights for both: the identities that are hard for both
models cancel, and the interval of the difference is much narrower than two separate intervals
would suggest.

Intervals are percentile intervals (the 2.5th and 97.5th percentile of the resampled statistic for
95 %). A resample whose denominator is 0 (e.g. only identities without an answerable query were
drawn) leaves the statistic undefined; those resamples are left out, and the interval is None when
more than half of them are.
"""
from __future__ import annotations

import math
from typing import Any, List, Optional, Tuple

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95


def identity_units(labels, groups=None) -> Tuple[np.ndarray, np.ndarray]:
    """(unit code of every image [N], group code of every unit [U]). A unit is one label within one
    group; an identity whose images lie in two groups is two units. Units are numbered by (group
    name, label) order; group codes by sorted group name."""
    labels = np.asarray(labels)
    _, label_codes = np.unique(labels, return_inverse=True)
    if groups is None:
        group_codes = np.zeros(len(labels), dtype=np.int64)
    else:
        _, group_codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    label_codes, group_codes = label_codes.reshape(-1), group_codes.reshape(-1)
    keys = group_codes.astype(np.int64) * (int(label_codes.max(initial=0)) + 1) + label_codes
    unique_keys, unit_codes = np.unique(keys, return_inverse=True)
    unit_groups = unique_keys // (int(label_codes.max(initial=0)) + 1)
    return unit_codes.reshape(-1).astype(np.int64), unit_groups.astype(np.int64)


def resample_weights(unit_groups: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES,
                     seed: int = DEFAULT_SEED) -> np.ndarray:
    """[n_resamples, U] float64: how often each unit is drawn when each group's units are drawn
    with replacement, as many as the group has. Deterministic for a given seed and unit layout."""
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples!r}")
    unit_groups = np.asarray(unit_groups)
    rng = np.random.default_rng(seed)
    weights = np.zeros((int(n_resamples), len(unit_groups)), dtype=np.float64)
    rows = np.arange(int(n_resamples))[:, None]
    for group in np.unique(unit_groups):
        members = np.flatnonzero(unit_groups == group)
        size = len(members)
        # Draw `size` units with replacement per resample; count the draws of each (a multinomial).
        draws = rng.integers(0, size, size=(int(n_resamples), size)) + rows * size
        weights[:, members] = np.bincount(draws.ravel(), minlength=int(n_resamples) * size
                                          ).reshape(int(n_resamples), size)
    return weights


def ratio_replicates(weights: np.ndarray, numerators: np.ndarray,
                     denominators: np.ndarray) -> np.ndarray:
    """Resampled ratios sum(w * numerator) / sum(w * denominator): [resamples] for [U] inputs,
    [resamples, M] for [U, M] inputs (M statistics at once). NaN where the denominator is 0."""
    top = weights @ np.asarray(numerators, dtype=np.float64)
    bottom = weights @ np.asarray(denominators, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), np.nan)


def percentile_interval(replicates: np.ndarray,
                        level: float = DEFAULT_LEVEL) -> Optional[List[float]]:
    """[lo, hi] from the defined resamples; None when more than half are undefined."""
    replicates = np.asarray(replicates, dtype=np.float64)
    finite = replicates[np.isfinite(replicates)]
    if len(finite) == 0 or len(finite) * 2 < len(replicates):
        return None
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return [float(lo), float(hi)]


def percentile_intervals(replicates: np.ndarray,
                         level: float = DEFAULT_LEVEL) -> List[Optional[List[float]]]:
    """`percentile_interval` of every column of [resamples, M]."""
    return [percentile_interval(replicates[:, m], level) for m in range(replicates.shape[1])]


def ratio_interval(weights, numerators, denominators,
                   level: float = DEFAULT_LEVEL) -> Optional[List[float]]:
    """Interval of one ratio statistic from its per-unit sums."""
    return percentile_interval(ratio_replicates(weights, numerators, denominators), level)


def paired_difference_interval(weights, candidate: Tuple[np.ndarray, np.ndarray],
                               baseline: Tuple[np.ndarray, np.ndarray],
                               level: float = DEFAULT_LEVEL) -> Optional[List[float]]:
    """Interval of candidate ratio - baseline ratio, both resampled with the same weights.
    `candidate` and `baseline` are (numerators, denominators) per unit."""
    difference = ratio_replicates(weights, *candidate) - ratio_replicates(weights, *baseline)
    return percentile_interval(difference, level)


# ----------------------------------------------------------------------------- small counts

MIN_ERRORS_FOR_DESIGN_EFFECT = 5


def design_effect(rate: Optional[float], trials: float, replicates) -> Optional[float]:
    """The identity bootstrap's variance of a rate over the binomial variance rate (1 - rate) /
    trials of as many independent trials: how much the clustering of trials in identities inflates
    the noise (>= 1 by construction here). None when it cannot be estimated reliably: no rate, no
    trials, fewer than MIN_ERRORS_FOR_DESIGN_EFFECT errors or non-errors (the bootstrap variance of
    a handful of errors is that of the one or two identities holding them), or no finite replicate."""
    if rate is None or not trials:
        return None
    errors = float(rate) * float(trials)
    if min(errors, float(trials) - errors) < MIN_ERRORS_FOR_DESIGN_EFFECT - 1e-9:
        return None
    replicates = np.asarray(replicates, dtype=np.float64)
    finite = replicates[np.isfinite(replicates)]
    if len(finite) < 2:
        return None
    binomial = float(rate) * (1.0 - float(rate)) / float(trials)
    return max(1.0, float(np.var(finite, ddof=1)) / binomial)


def wilson_interval(rate: float, trials: float, level: float = DEFAULT_LEVEL) -> List[float]:
    """Wilson's score interval of a binomial proportion `rate` out of `trials` (which may be a
    fractional effective count): the p with |rate - p| <= z sqrt(p (1 - p) / trials)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    n, p = float(trials), float(rate)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def small_count_interval(rate: Optional[float], trials: float, replicates, cluster_sizes,
                         bootstrap: Optional[List[float]], level: float = DEFAULT_LEVEL,
                         pooled_design_effect: Optional[float] = None) -> Optional[List[float]]:
    """Interval of a proportion (FNMR, FMR: errors / trials; Recall@k: hits / queries; trials
    clustered in identities) that keeps its coverage when few or no errors (misses) are observed:
    per end, the wider of the bootstrap percentile interval `bootstrap` and Wilson's score interval
    at the effective number of trials (symmetric in p and 1 - p, so a Recall@1 near 1 is handled
    as an error rate near 0).

    Why: with no error observed every resample has none either, and the percentile interval is
    [0, 0], which covers no positive rate; with one to a few errors it is about as short. A score
    interval needs only the count, but the trials are not independent (the pairs of one identity
    fail together), so it is taken at n_eff = trials / design effect:
    * the scope's own design effect (`design_effect`: bootstrap variance / binomial variance) when
      it has at least MIN_ERRORS_FOR_DESIGN_EFFECT errors and as many non-errors;
    * else `pooled_design_effect`, measured where errors are plentiful (the caller passes the
      overall scope's for a group: the clustering of pairs in identities is a property of the
      model and the data, not of the group);
    * else the largest design effect identities allow: the trials of each identity perfectly
      correlated, n_eff = (sum of cluster sizes)^2 / sum of squared cluster sizes (Kish's effective
      number of clusters).
    n_eff is never below that floor nor above `trials`. `cluster_sizes` are the trials per identity
    (any common multiple: only their proportions matter). The result is None when `bootstrap` is
    None (too many undefined resamples: fail closed) and `bootstrap` itself when `rate` is None.
    Ends lie in [0, 1]; the point estimate always lies inside (Wilson's interval contains it).
    """
    if bootstrap is None or rate is None or not trials:
        return bootstrap
    n_eff = effective_trials(rate, trials, replicates, cluster_sizes, pooled_design_effect)
    lo, hi = wilson_interval(float(rate), n_eff, level)
    return [float(min(bootstrap[0], lo)), float(max(bootstrap[1], hi))]


def effective_trials(rate: float, trials: float, replicates, cluster_sizes,
                     pooled_design_effect: Optional[float] = None) -> float:
    """n_eff of `small_count_interval`: trials / (own design effect, else the pooled one), else
    Kish's effective number of clusters; never below that floor nor above `trials`."""
    sizes = np.asarray(cluster_sizes, dtype=np.float64)
    sizes = sizes[sizes > 0]
    floor = float(sizes.sum() ** 2 / np.square(sizes).sum()) if len(sizes) else 1.0
    own = design_effect(rate, trials, replicates)
    effect = own if own is not None else pooled_design_effect
    n_eff = float(trials) / effect if effect else floor
    return min(float(trials), max(floor, n_eff))


def paired_small_count_interval(candidate: Tuple[float, Any, Optional[float]],
                                baseline: Tuple[float, Any, Optional[float]], trials: float,
                                cluster_sizes, bootstrap: Optional[List[float]],
                                level: float = DEFAULT_LEVEL) -> Optional[List[float]]:
    """Interval of candidate rate - baseline rate on the same trials (the paired deltas), per end
    the wider of the paired bootstrap's percentile interval `bootstrap` and Newcombe's hybrid
    score interval (MOVER: the method of variance estimates recovery, Newcombe 1998, method 10,
    and Zou & Donner 2008) built from each rate's Wilson interval at its effective number of
    trials (`effective_trials`) and the correlation of the two rates over the paired resamples:

        L = d - sqrt((p1 - l1)^2 + (u2 - p2)^2 - 2 r (p1 - l1)(u2 - p2))
        U = d + sqrt((u1 - p1)^2 + (p2 - l2)^2 - 2 r (u1 - p1)(p2 - l2))

    Why: with few misses (Recall@1 near 1) the percentile interval of a difference is as short and
    skewed as that of a rate (it ignores how far the rarer event's rate may be), while the score
    limits carry that asymmetry into the difference; r keeps the pairing (identities hard for both
    models cancel). `candidate` / `baseline`: (rate, replicates, pooled design effect or None).
    r is 0 when either rate has no resampling variance (no information: the unpaired bound).
    Two models with the same results on every identity (the paired bootstrap: [0, 0]) therefore
    get about +-(1 - Wilson's lower limit) when both are near 1 (no discordant query seen is not
    proof of none, as no error seen is not), and nearly [0, 0] at mid rates (r = 1).
    None when `bootstrap` is None (fail closed); `bootstrap` when a rate is None."""
    if bootstrap is None or candidate[0] is None or baseline[0] is None or not trials:
        return bootstrap
    (p1, reps1, pooled1), (p2, reps2, pooled2) = candidate, baseline
    l1, u1 = wilson_interval(p1, effective_trials(p1, trials, reps1, cluster_sizes, pooled1), level)
    l2, u2 = wilson_interval(p2, effective_trials(p2, trials, reps2, cluster_sizes, pooled2), level)
    reps1, reps2 = np.asarray(reps1, dtype=np.float64), np.asarray(reps2, dtype=np.float64)
    both = np.isfinite(reps1) & np.isfinite(reps2)
    r = 0.0
    if both.sum() > 2 and np.std(reps1[both]) > 0 and np.std(reps2[both]) > 0:
        r = float(np.clip(np.corrcoef(reps1[both], reps2[both])[0, 1], -1.0, 1.0))
    d = float(p1) - float(p2)
    low = d - math.sqrt(max(0.0, (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * r * (p1 - l1) * (u2 - p2)))
    high = d + math.sqrt(max(0.0, (u1 - p1) ** 2 + (p2 - l2) ** 2 - 2 * r * (u1 - p1) * (p2 - l2)))
    return [float(min(bootstrap[0], max(-1.0, low))), float(max(bootstrap[1], min(1.0, high)))]
