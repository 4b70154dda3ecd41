"""Intervals of proportions that keep their coverage when few or no errors are observed.

A percentile bootstrap of a rate with no observed error is [0, 0] (every resample has none either),
which covers no positive rate; with one to a few errors it is about as short. These functions widen
the bootstrap interval (core.intervals) per end by a score interval at the identity-clustered
effective number of trials, for a rate (`small_count_interval`: FNMR, FMR, Recall@k) and for the
paired difference of two models' rates (`paired_small_count_interval`). The measured coverage of
both is in benchmarks/results.md (make bench ARGS="--only coverage").

Effective trials (`effective_trials`): the trials of one identity are not independent (its pairs
fail together, its queries hit or miss together), so a score interval is taken at
n_eff = trials / design effect, the design effect being the identity bootstrap's variance of the
rate over the binomial variance of as many independent trials (`design_effect`). It is the
scope's OWN design effect: how errors cluster in identities differs between groups and between
statistics (a group whose few misses are spread over many identities must not borrow the overall
scope's clustering, which is dominated by a few hard identities: that made within-group Recall@1
intervals much too wide). With few errors the own estimate rests on a handful of identities, so it
is shrunk towards a prior (see `effective_trials`; the evaluator's priors: core.rate_intervals
.prior_effect), and n_eff always lies between Kish's number of clusters (all of a cluster's
trials perfectly correlated: the most conservative value the clusters allow; identities for
queries and genuine pairs, pairs of identities for impostor pairs, `unit_clusters`) and the number
of trials. With G clusters, Wilson's interval takes the small-number-of-clusters corrections
(`clustered_wilson`: Student's t with G - 1 degrees of freedom, variance x G / (G - 1)), and
fewer degrees of freedom when the variance rests on a few identities (`variance_degrees`).
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, List, Optional, Tuple

import numpy as np

from core.intervals import DEFAULT_LEVEL, UnitSums, group_members

# Errors (and non-errors) from which a scope's own design effect is used alone; below, it is shrunk
# towards the prior in proportion to the errors seen.
MIN_ERRORS_FOR_DESIGN_EFFECT = 5


def unit_trials(denominators: UnitSums) -> np.ndarray:
    """[U, M] trials per identity unit of each column: the derivative of the column's denominator
    with respect to the unit's weight at w = 1 (queries or genuine pairs inside the unit; for pairs
    of two units, each unit's share of every pair it is in). Negative shares (pairs taken off)
    count as 0."""
    trials = denominators.linear.copy()
    if denominators.products is not None:
        v = denominators.products
        trials += v * (v.sum(axis=0, keepdims=True) - v)
    if denominators.pairs is not None and len(denominators.pairs[0]):
        a, b, count, column = denominators.pairs
        np.add.at(trials, (a, column), count)
        np.add.at(trials, (b, column), count)
    return np.maximum(trials, 0.0)


def unit_clusters(denominators: UnitSums) -> np.ndarray:
    """[M] the effective number of independent clusters of each column's trials: the floor of
    `effective_trials`. Trials of one unit (queries, genuine pairs): Kish's count over the units'
    trials. Trials between two units (impostor pairs, `products`): the pairs of one pair of
    identities are the cluster (they share both identities' images), so Kish's count over the
    unit pairs' sizes v_a v_b, in closed form
        (sum_{a<b} v_a v_b)^2 / sum_{a<b} (v_a v_b)^2
        = ((S1^2 - S2) / 2)^2 / ((S2^2 - S4) / 2),  Sk = sum_u v_u^k.
    (A pair of identities is not independent of the other pairs of either identity; counting it
    as a cluster is the standard two-way (dyadic) reading, and far less conservative than taking
    a whole identity as the cluster, which would bound an FMR of 1e-3 by Wilson's limit at a few
    dozen trials.)"""
    result = np.array([kish_clusters(denominators.linear[:, m])
                       for m in range(denominators.width)])
    if denominators.products is not None:
        v = denominators.products
        s1, s2, s4 = v.sum(axis=0), (v ** 2).sum(axis=0), (v ** 4).sum(axis=0)
        paired = (s2 * s2 - s4) > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            pairs = ((s1 * s1 - s2) / 2) ** 2 / ((s2 * s2 - s4) / 2)
        result = np.where(paired, pairs, result)
    return result


def variance_degrees(errors: np.ndarray, trials: np.ndarray, unit_groups: np.ndarray) -> np.ndarray:
    """[M] Satterthwaite's degrees of freedom of each column's identity-clustered variance, from the
    per-unit errors and trials [U, M] (`unit_trials` of the numerators and denominators: each
    unit's share, so a rate's linearised influence is z_u = e_u - r m_u with r = sum e / sum m).
    The variance of the rate is the stratified sum (units resampled within their group) of
        v_u = n_g / (n_g - 1) (z_u - mean_g z)^2,
    and Satterthwaite's approximation gives it (sum v)^2 / sum v^2 degrees of freedom, each unit's
    term estimated by its own squared residual: about the number of identities that carry the
    variance. +inf where there is no variance (no error, or one unit per group).

    Why: a rate's errors gather in its few hardest identities, and where a handful of identities
    hold them all, the variance (the bootstrap's and the design effect's alike) rests on those few,
    however many identities the scope has; an eval set that drew fewer of them underestimates it,
    and a t quantile at the number of identities does not allow for that (too short on the upper
    side, the one max_fnmr judges). With many identities sharing the errors it is large: about
    G / 3 for residuals near normal (each term estimated by itself), a t quantile 15 % above
    G - 1's at G = 20 and 1 % at G = 200."""
    errors = np.asarray(errors, dtype=np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    totals = trials.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = np.where(totals > 0, errors.sum(axis=0) / totals, 0.0)
    residuals = errors - rates * trials
    terms = np.zeros_like(residuals)
    for members in group_members(unit_groups):
        z = residuals[members]
        n = len(z)
        if n > 1:
            terms[members] = n / (n - 1.0) * np.square(z - z.mean(axis=0))
    first, second = terms.sum(axis=0), np.square(terms).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(second > 0, first * first / second, np.inf)


def design_effect(rate: Optional[float], trials: float, replicates) -> Optional[float]:
    """The identity bootstrap's variance of a rate over the binomial variance rate (1 - rate) /
    trials of as many independent trials (floored at 1). None when it cannot be estimated: no rate,
    no trials, no error or no non-error, fewer than two finite replicates, or no resampling
    variance."""
    if rate is None or not trials:
        return None
    rate, trials = float(rate), float(trials)
    if not 0.0 < rate < 1.0:
        return None
    replicates = np.asarray(replicates, dtype=np.float64)
    finite = replicates[np.isfinite(replicates)]
    if len(finite) < 2:
        return None
    effect = float(np.var(finite, ddof=1)) / (rate * (1.0 - rate) / trials)
    if effect <= 1e-9:          # no resampling variance (rounding aside)
        return None
    return max(1.0, effect)


def wilson_interval(rate: float, trials: float, level: float = DEFAULT_LEVEL,
                    z: Optional[float] = None) -> List[float]:
    """Wilson's score interval of a binomial proportion `rate` out of `trials` (which may be a
    fractional effective count): the p with |rate - p| <= z sqrt(p (1 - p) / trials), z the
    normal quantile of `level` unless given."""
    if z is None:
        z = NormalDist().inv_cdf(0.5 + level / 2.0)
    n, p = float(trials), float(rate)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(max(0.0, p * (1 - p) / n + z * z / (4 * n * n)))
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def clustered_wilson(rate: float, n_eff: float, clusters: float,
                     level: float = DEFAULT_LEVEL, degrees: Optional[float] = None) -> List[float]:
    """Wilson's interval at `n_eff` with the usual small-number-of-clusters corrections of a
    cluster-robust variance (as CR1 with t quantiles): the variance times G / (G - 1) (the
    bootstrap's and the plug-in variance of a mean of G clusters are (G - 1) / G of the unbiased
    one) and Student's t quantile with G - 1 degrees of freedom instead of the normal one,
    G = Kish's effective number of clusters (at least 2); fewer when `degrees` (the variance's own,
    `variance_degrees`) is fewer (at least 1). Negligible at a few hundred identities sharing the
    errors; about 10 % wider at 20."""
    from scipy import stats

    g = max(2.0, float(clusters))
    df = g - 1.0 if degrees is None else max(1.0, min(g - 1.0, float(degrees)))
    z = float(stats.t.ppf(0.5 + level / 2.0, df))
    return wilson_interval(rate, n_eff * (g - 1.0) / g, level, z)


def kish_clusters(cluster_sizes) -> float:
    """Kish's effective number of clusters, (sum s)^2 / sum s^2 over the positive sizes (1 if none):
    n_eff when every trial of a cluster has the same outcome. A scalar is taken as that number."""
    if np.ndim(cluster_sizes) == 0:
        return max(1.0, float(cluster_sizes))
    sizes = np.asarray(cluster_sizes, dtype=np.float64)
    sizes = sizes[sizes > 0]
    return float(sizes.sum() ** 2 / np.square(sizes).sum()) if len(sizes) else 1.0


def effective_trials(rate: float, trials: float, replicates, cluster_sizes,
                     prior_design_effect: Optional[float] = None,
                     least_design_effect: Optional[float] = None) -> float:
    """n_eff = trials / design effect, in [Kish's number of clusters, trials].

    The design effect is the scope's own (`design_effect`) when the rarer outcome (errors, or
    non-errors) has been seen at least MIN_ERRORS_FOR_DESIGN_EFFECT times. With e fewer (0 < e < 5)
    the own estimate rests on one or a few identities (one error in one identity gives about 1
    whatever the true clustering), so it is shrunk towards the prior:
        (e x own + (5 - e) x prior) / 5,
    and with no error (no own estimate) the prior alone. The prior is `prior_design_effect` when the
    caller has one (core.rate_intervals.prior_effect: for a group's within-group Recall@k the same
    group's whole-gallery one, else the overall scope's same figure), else the most conservative
    value the clusters allow, trials / Kish's number of clusters. `least_design_effect`, when
    given, bounds the design effect from below (core.rate_intervals.pooled_effect: a group's FNMR
    takes at least the clustering measured on all groups together)."""
    floor = min(float(trials), kish_clusters(cluster_sizes))
    conservative = float(trials) / floor
    prior = conservative if prior_design_effect is None else min(conservative,
                                                                 max(1.0, prior_design_effect))
    rarer = min(float(rate), 1.0 - float(rate)) * float(trials)
    own = design_effect(rate, trials, replicates)
    if own is None:
        effect = prior
    elif rarer >= MIN_ERRORS_FOR_DESIGN_EFFECT - 1e-9:
        effect = own
    else:
        share = rarer / MIN_ERRORS_FOR_DESIGN_EFFECT
        effect = share * own + (1.0 - share) * prior
    if least_design_effect is not None:
        effect = max(effect, least_design_effect)
    return min(float(trials), max(floor, float(trials) / effect))


def small_count_interval(rate: Optional[float], trials: float, replicates, cluster_sizes,
                         bootstrap: Optional[List[float]], level: float = DEFAULT_LEVEL,
                         prior_design_effect: Optional[float] = None,
                         least_design_effect: Optional[float] = None,
                         degrees: Optional[float] = None) -> Optional[List[float]]:
    """Interval of a proportion (FNMR, FMR: errors / trials; Recall@k: hits / queries; trials
    clustered in identities, `cluster_sizes` per identity) that keeps its coverage with few or no
    errors: per end, the wider of the bootstrap percentile interval `bootstrap` and Wilson's score
    interval at `effective_trials` (symmetric in p and 1 - p, so a Recall@1 near 1 is handled as an
    error rate near 0), its design effect at least `least_design_effect` when given. None when
    `bootstrap` is None (too many undefined resamples: fail closed); `bootstrap` itself when
    `rate` is None or there are no trials. The point estimate always lies inside (Wilson's
    interval contains it). `degrees`: the t quantile's degrees of freedom when fewer than the
    clusters allow (`clustered_wilson`)."""
    if bootstrap is None or rate is None or not trials:
        return bootstrap
    n_eff = effective_trials(rate, trials, replicates, cluster_sizes, prior_design_effect,
                             least_design_effect)
    lo, hi = clustered_wilson(float(rate), n_eff, kish_clusters(cluster_sizes), level, degrees)
    return [float(min(bootstrap[0], lo)), float(max(bootstrap[1], hi))]


def paired_small_count_interval(candidate: Tuple[float, Any, Optional[float]],
                                baseline: Tuple[float, Any, Optional[float]], trials: float,
                                cluster_sizes, bootstrap: Optional[List[float]],
                                level: float = DEFAULT_LEVEL) -> Optional[List[float]]:
    """Interval of candidate rate - baseline rate on the same trials (the paired deltas): per end
    the wider of the paired bootstrap's percentile interval `bootstrap` and Newcombe's hybrid score
    interval (MOVER, Newcombe 1998 method 10; Zou & Donner 2008) from each rate's Wilson interval
    at its effective number of trials and the correlation r of the two rates over the paired
    resamples:

        L = d - sqrt((p1 - l1)^2 + (u2 - p2)^2 - 2 r (p1 - l1)(u2 - p2))
        U = d + sqrt((u1 - p1)^2 + (p2 - l2)^2 - 2 r (u1 - p1)(p2 - l2))

    Why: with few misses the percentile interval of a difference is as short and skewed as that of
    a rate, while the score limits carry the rarer event's uncertainty into the difference; r keeps
    the pairing (identities hard for both models cancel), and is 0 when either rate has no
    resampling variance (the unpaired bound: no discordant query seen is not proof of none).
    `candidate` / `baseline`: (rate, replicates, prior design effect or None). None when
    `bootstrap` is None (fail closed); `bootstrap` when a rate is None."""
    if bootstrap is None or candidate[0] is None or baseline[0] is None or not trials:
        return bootstrap
    (p1, reps1, prior1), (p2, reps2, prior2) = candidate, baseline
    g = kish_clusters(cluster_sizes)
    l1, u1 = clustered_wilson(p1, effective_trials(p1, trials, reps1, cluster_sizes, prior1), g, level)
    l2, u2 = clustered_wilson(p2, effective_trials(p2, trials, reps2, cluster_sizes, prior2), g, level)
    reps1, reps2 = np.asarray(reps1, dtype=np.float64), np.asarray(reps2, dtype=np.float64)
    both = np.isfinite(reps1) & np.isfinite(reps2)
    r = 0.0
    if both.sum() > 2 and np.std(reps1[both]) > 0 and np.std(reps2[both]) > 0:
        r = float(np.clip(np.corrcoef(reps1[both], reps2[both])[0, 1], -1.0, 1.0))
    d = float(p1) - float(p2)
    low = d - math.sqrt(max(0.0, (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * r * (p1 - l1) * (u2 - p2)))
    high = d + math.sqrt(max(0.0, (u1 - p1) ** 2 + (p2 - l2) ** 2 - 2 * r * (u1 - p1) * (p2 - l2)))
    return [float(min(bootstrap[0], max(-1.0, low))), float(max(bootstrap[1], min(1.0, high)))]
