"""The studentized (bootstrap-t) interval of a ratio of identity sums, for the FNMR.

Why: a false non-match rate is a ratio of sums over identities, sum_u e_u / sum_u m_u (a unit's
false non-matches over its genuine pairs), and its per-identity terms are heavily skewed: a few
hard identities hold most of the errors. Then the spread of the rate grows with the rate, and an
eval set that drew few of the hard identities has a low rate AND a low spread: the percentile
interval (core.intervals) and a score interval at the set's own design effect (core.small_counts)
are both too short on the upper side, which is the side a `max_fnmr` rule judges. The bootstrap-t
resamples the pivot t = (r* - r) / se* instead of r* itself: resamples that lose a hard identity
have a small se* as well as a small r*, so t reaches far below 0 and the upper end
r - t_(alpha/2) se moves up by as much as the data's own skewness says (Efron & Tibshirani 1993,
ch. 12; Hesterberg 2015, "What teachers should know about the bootstrap": for skewed data the
bootstrap-t is the interval whose coverage holds up at small n).

se is the linearised (delta-method) standard error of the ratio under the identity resampling,
stratified as the resampling is (units drawn within their group):

    var = sum_g n_g / (n_g - 1) sum_{u in g} (z_u - mean_g z)^2 / (sum_u m_u)^2,  z_u = e_u - r m_u,

computed for every resample from five weighted sums per stratum (`_stratum_moments`) with that
resample's r*. A resample without any error has se* = 0 and t* = -inf (the worst value, kept):
the interval is used only where errors were seen in at least MIN_ERROR_UNITS identities, so that
such resamples are rare (at most (1 - 5/n)^n of them: 0.4 % at n = 20 identities).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from core.intervals import DEFAULT_LEVEL, group_members, percentile_interval

# Identities with at least one error from which the studentized interval is computed (below it the
# small-count score interval of core.small_counts carries the upper end alone).
MIN_ERROR_UNITS = 5


def _stratum_moments(weights: np.ndarray, errors: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """[resamples, 5]: the weighted sums of e, m, e^2, e m, m^2 over the stratum's units."""
    terms = np.stack([errors, trials, errors * errors, errors * trials, trials * trials], axis=1)
    return weights @ terms


def _standard_errors(weights: np.ndarray, unit_groups: np.ndarray, errors: np.ndarray,
                     trials: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """[resamples] the linearised standard error of the ratio at each resample (module docstring);
    `weights` [resamples, U] (all ones for the eval set itself), `rates` the resamples' ratios."""
    variance = np.zeros(len(weights))
    total_trials = np.zeros(len(weights))
    for members in group_members(unit_groups):      # a group's weights: a view, no copy
        if not trials[members].any() and not errors[members].any():
            continue
        n = len(trials[members])
        s_e, s_m, s_ee, s_em, s_mm = _stratum_moments(weights[:, members], errors[members],
                                                      trials[members]).T
        total_trials += s_m
        if n < 2:
            continue
        s_z = s_e - rates * s_m
        s_zz = s_ee - 2.0 * rates * s_em + rates * rates * s_mm
        variance += n / (n - 1.0) * np.maximum(s_zz - s_z * s_z / n, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total_trials > 0, np.sqrt(variance) / total_trials, np.nan)


def studentized_interval(weights: np.ndarray, unit_groups: np.ndarray, errors: np.ndarray,
                         trials: np.ndarray, replicates: np.ndarray, rate: Optional[float],
                         level: float = DEFAULT_LEVEL, bounds: Tuple[float, float] = (0.0, 1.0)
                         ) -> Optional[List[float]]:
    """[lo, hi] bootstrap-t interval of the rate sum(errors) / sum(trials) (per unit, [U]) from the
    resampling `weights` and the resamples' exact rates `replicates`, clipped to `bounds`; None
    when it does not apply (no rate, errors in fewer than MIN_ERROR_UNITS units, no spread, or more
    than half of the pivots undefined). The paired difference of two models' FNMR on the same
    genuine pairs is such a ratio too: `errors` the per-unit differences (any sign), `bounds`
    (-1, 1), and then "units with errors" are those where the two models differ."""
    errors = np.asarray(errors, dtype=np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    if rate is None or not np.isfinite(rate) or np.count_nonzero(errors) < MIN_ERROR_UNITS:
        return None
    ones = np.ones((1, len(errors)))
    se = float(_standard_errors(ones, unit_groups, errors, trials, np.array([rate]))[0])
    if not se > 0:
        return None
    replicates = np.asarray(replicates, dtype=np.float64)
    finite = np.isfinite(replicates)
    rates = np.where(finite, replicates, 0.0)
    se_star = _standard_errors(weights, unit_groups, errors, trials, rates)
    with np.errstate(divide="ignore", invalid="ignore"):
        pivots = (rates - rate) / se_star
    pivots = np.where(finite, pivots, np.nan)
    quantiles = percentile_interval(pivots, level)
    if quantiles is None:
        return None
    low, high = rate - quantiles[1] * se, rate - quantiles[0] * se
    return [float(min(bounds[1], max(bounds[0], end))) for end in (low, high)]
