"""A literal identity bootstrap of the 1:1 figures, written from the definition and independent of
core/intervals.py's closed forms: for each resample, the eval set is REBUILT from the drawn units
(unit = identity within group, core.intervals.identity_units), unit u appearing w_u times (each
copy keeps the unit's images, label and group), and the figures are recounted by brute force on the
pairwise score matrix at the same threshold.

Which pairs the rebuilt set holds: two different images of one copy (a genuine pair of the unit);
an image of one copy with an image of a copy of ANOTHER unit (genuine when the two units share a
label, i.e. one identity in two groups, else impostor). Two copies of one unit are not paired
with each other: in a real eval set that identity appears once, so a pair of an image with its own
duplicate does not exist.

Shared by the interval tests (tests/test_bootstrap_1to1.py) and the coverage simulation.
"""
from typing import Dict, Optional

import numpy as np


def pair_scores(embeddings) -> np.ndarray:
    """The full float64 cosine similarity matrix (zero rows stay zero)."""
    x = np.asarray(embeddings, dtype=np.float64)
    unit = x / np.maximum(np.linalg.norm(x, axis=1), np.finfo(np.float32).tiny)[:, None]
    return unit @ unit.T


def rebuilt_counts(scores, labels, groups, units, weights, threshold) -> Dict[str, Dict[str, int]]:
    """{scope: {"genuine", "false_non_match", "impostor", "false_match"}} of the eval set rebuilt
    from one resample's unit weights [U]; scope "overall" and every group name. A pair matches when
    its score is >= threshold."""
    labels, units = np.asarray(labels), np.asarray(units)
    counts = np.asarray(weights).astype(int)
    # Entries of the rebuilt set: (image, copy) for each copy of the image's unit.
    image = np.concatenate([np.full(counts[units[i]], i) for i in range(len(labels))]).astype(int)
    copy = np.concatenate([np.arange(counts[units[i]]) for i in range(len(labels))]).astype(int)
    first, second = np.triu_indices(len(image), 1)
    a, b = image[first], image[second]
    unit_a, unit_b = units[a], units[b]
    exists = ~((unit_a == unit_b) & (copy[first] != copy[second]))     # no cross-copy pairs
    exists &= a != b
    a, b = a[exists], b[exists]
    genuine = labels[a] == labels[b]
    match = scores[a, b] >= threshold
    result = {}
    groups = np.asarray(groups) if groups is not None else None
    for name in ["overall"] + (sorted(set(groups.tolist())) if groups is not None else []):
        scope = np.ones(len(a), bool) if name == "overall" else (groups[a] == name) & (groups[b] == name)
        result[name] = {"genuine": int((scope & genuine).sum()),
                        "false_non_match": int((scope & genuine & ~match).sum()),
                        "impostor": int((scope & ~genuine).sum()),
                        "false_match": int((scope & ~genuine & match).sum())}
    return result


def _rate(top: int, bottom: int) -> float:
    return top / bottom if bottom else np.nan


def literal_replicates(scores, labels, groups, units, weights, threshold
                       ) -> Dict[str, Dict[str, np.ndarray]]:
    """{scope: {"fnmr": [R], "fmr": [R]}} over the resamples (rows of `weights`); NaN where a
    resample has no pair of that kind in the scope."""
    result: Dict[str, Dict[str, list]] = {}
    for row in weights:
        for scope, c in rebuilt_counts(scores, labels, groups, units, row, threshold).items():
            entry = result.setdefault(scope, {"fnmr": [], "fmr": []})
            entry["fnmr"].append(_rate(c["false_non_match"], c["genuine"]))
            entry["fmr"].append(_rate(c["false_match"], c["impostor"]))
    return {scope: {k: np.array(v) for k, v in entry.items()} for scope, entry in result.items()}


def fmr_differential(replicates, group_names, target_fmr) -> np.ndarray:
    """Per resample, max over the groups' defined FMRs / target_fmr (NaN when none is defined)."""
    values = np.stack([replicates[g]["fmr"] for g in group_names], axis=1)
    out = np.full(len(values), np.nan)
    for r, row in enumerate(values):
        defined = row[~np.isnan(row)]
        if len(defined):
            out[r] = defined.max() / target_fmr
    return out


def skewed_error_ratio(replicates, group_names) -> np.ndarray:
    """Per resample, max / min over the groups' defined FNMRs: 1 when both are 0, +inf when only
    the minimum is, NaN when none is defined."""
    values = np.stack([replicates[g]["fnmr"] for g in group_names], axis=1)
    out = np.full(len(values), np.nan)
    for r, row in enumerate(values):
        defined = row[~np.isnan(row)]
        if not len(defined):
            continue
        low, high = defined.min(), defined.max()
        out[r] = (1.0 if high == 0 else np.inf) if low == 0 else high / low
    return out


def percentile(values, level: float = 0.95) -> Optional[list]:
    """The percentile interval by NumPy's own percentile, +inf kept: NaN left out, None when more
    than half are NaN. (NumPy's interpolation towards +inf gives +inf or NaN; NaN here means an
    end at +inf.)"""
    values = np.asarray(values, dtype=np.float64)
    defined = values[~np.isnan(values)]
    if not len(defined) or 2 * len(defined) < len(values):
        return None
    tail = 100 * (1 - level) / 2
    with np.errstate(invalid="ignore"):
        ends = np.percentile(defined, [tail, 100 - tail])
    return [float(e) if not np.isnan(e) else np.inf for e in ends]


def bias_corrected(values, estimate, level: float = 0.95) -> Optional[list]:
    """Efron's bias-corrected (BC) percentile interval written out from the textbook (Efron &
    Tibshirani 1993, 14.3 with acceleration 0): z0 = Phi^-1(share of resamples below the estimate,
    ties half), ends at the Phi(2 z0 +- z) percentiles (NumPy's, +inf kept as in `percentile`)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    defined = values[~np.isnan(values)]
    if not len(defined) or 2 * len(defined) < len(values):
        return None
    if not np.isfinite(estimate):
        return percentile(values, level)
    share = (np.sum(defined < estimate) + 0.5 * np.sum(defined == estimate)) / len(defined)
    share = min(max(share, 0.5 / len(defined)), 1 - 0.5 / len(defined))
    z0 = float(np.clip(stats.norm.ppf(share), -1.5, 1.5))
    z = stats.norm.ppf(0.5 + level / 2)
    qs = 100 * stats.norm.cdf([2 * z0 - z, 2 * z0 + z])
    with np.errstate(invalid="ignore"):
        ends = np.percentile(defined, qs)
    return [float(e) if not np.isnan(e) else np.inf for e in ends]
