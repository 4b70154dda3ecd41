"""Bootstrap confidence intervals over identities, and the paired bootstrap of a difference.

Why identities: the images of one identity are not independent (its queries tend to hit or miss
together, its pairs match or not together), so resampling images would understate the noise. The
resampling unit is an identity within a group (`identity_units`); units are resampled with
replacement within their group (stratified: every resample has as many units of each group as the
eval set), which keeps group figures defined and the overall figure's group mix fixed.

Resampling never ranks or scores again. A resample is a vector w of unit weights (how often each
unit was drawn), and every statistic is a ratio of two `UnitSums`, sums over the drawn eval set in
closed form:
* per-unit terms (a query, or a genuine pair inside one unit) count w_u times: `linear`;
* a pair between two DIFFERENT units a and b counts w_a x w_b times (each copy of a with each copy
  of b), while copies of one unit are never paired with each other (that pair does not exist in
  the drawn eval set): `pairs` (sparse: (a, b, count) for the unit pairs that have any) and
  `products` (every pair of distinct units, Sum_{a<b} w_a w_b v_a v_b, from two matrix products:
  ((W v)^2 - W^2 v^2) / 2, e.g. impostor pairs with v = images per unit);
* a `constant`.
This is exactly the statistic of the literal resample (the eval set rebuilt from the drawn
identities, copies keeping their label). Recall (hits / queries) and within-unit pairs are linear;
1:1 pairs of two identities are products (core/verification.py).

Paired bootstrap: the candidate and the baseline model are evaluated on the same images, so their
difference is resampled with the SAME weights for both: the identities that are hard for both
models cancel, and the interval of the difference is much narrower than two separate intervals
would suggest.

Intervals here are percentile intervals (the 2.5th and 97.5th percentile of the resampled
statistic for 95 %); what the evaluator publishes widens them where they fall short (few errors,
skewed errors, maxima over groups: core.rate_intervals, core.studentized, core.bias_corrected).
A resampled ratio whose denominator is 0 is +inf when its numerator is not (e.g. a maximum over a
minimum that is 0 in that resample): the worst value, kept in the percentiles, so an interval may
end at +inf. 0 / 0 is undefined (NaN) and left out; the interval is None when more
than half of the resamples are undefined.

Memory: the weights are [resamples, units] float64 (8 bytes each: 1.6 GB at 1,000 resamples x
200,000 identities), built a block of resamples at a time (`WEIGHT_BLOCK_FRACTION`), so building
them needs at most 1.25 x that matrix; replicates are computed a block of resamples at a time too.
"""
from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Tuple, Union

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95
# Temporaries of one block of resamples (int64 draws and counts) stay within this fraction of the
# weight matrix: 2 x 8 bytes x block x units <= 0.125 x 8 bytes x resamples x units.
WEIGHT_BLOCK_FRACTION = 1 / 16
# Elements of one [resamples block, units] temporary when computing replicates (32 MB; two blocks
# are computed at a time).
PAIR_BLOCK_ELEMENTS = 1 << 22
# Blocks of resamples computed at the same time by `ratio_replicates`.
REPLICATE_THREADS = 2


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


def group_members(unit_groups: np.ndarray) -> List[Union[slice, np.ndarray]]:
    """Each group's units, in group code order: a slice when they are contiguous (as
    `identity_units` numbers them), so that a group's columns of the weights are a view, not a
    copy of [resamples, units]; else their indices."""
    unit_groups = np.asarray(unit_groups)
    result: List[Union[slice, np.ndarray]] = []
    for group in np.unique(unit_groups):
        members = np.flatnonzero(unit_groups == group)
        contiguous = members[-1] - members[0] + 1 == len(members)
        result.append(slice(members[0], members[-1] + 1) if contiguous else members)
    return result


def resample_weights(unit_groups: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES,
                     seed: int = DEFAULT_SEED) -> np.ndarray:
    """[n_resamples, U] float64: how often each unit is drawn when each group's units are drawn
    with replacement, as many as the group has. Deterministic for a given seed, resample count and
    unit layout. Built a block of resamples at a time: the int64 draws and counts of a block are a
    small fraction of the result (peak about 1.2 x the result, tests/test_intervals.py)."""
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples!r}")
    unit_groups = np.asarray(unit_groups)
    n_resamples = int(n_resamples)
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_resamples, len(unit_groups)), dtype=np.float64)
    members_of = group_members(unit_groups)
    block = max(1, int(n_resamples * WEIGHT_BLOCK_FRACTION))
    for r0 in range(0, n_resamples, block):
        height = min(block, n_resamples - r0)
        offsets = np.arange(height, dtype=np.int64)[:, None]
        for members in members_of:
            size = (members.stop - members.start) if isinstance(members, slice) else len(members)
            # Draw `size` units with replacement per resample; count the draws of each (a
            # multinomial): one bincount over the block, each resample's draws offset by its row.
            draws = rng.integers(0, size, size=(height, size))
            draws += offsets * size
            counts = np.bincount(draws.ravel(), minlength=height * size)
            del draws
            weights[r0:r0 + height, members] = counts.reshape(height, size)
    return weights


@dataclasses.dataclass
class UnitSums:
    """M sums over a resampled eval set as functions of the unit weights w (module docstring):

        sum_u w_u linear[u, m] + sum_{a<b} w_a w_b products[a, m] products[b, m]
        + sum_p count_p w_{a_p} w_{b_p} [column_p == m] + constant[m].

    `pairs` = (a, b, count, column) arrays, a != b (a pair of one unit with itself does not exist
    in a resample: its copies are not paired)."""
    linear: np.ndarray
    products: Optional[np.ndarray] = None
    pairs: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = None
    constant: Optional[np.ndarray] = None

    def __post_init__(self):
        self.linear = np.asarray(self.linear, dtype=np.float64)
        if self.linear.ndim == 1:
            self.linear = self.linear[:, None]
        width = self.linear.shape[1]
        if self.products is not None:
            self.products = np.asarray(self.products, dtype=np.float64).reshape(len(self.linear), width)
        if self.constant is not None:
            self.constant = np.asarray(self.constant, dtype=np.float64).reshape(width)
        if self.pairs is not None:
            a, b, count, column = (np.asarray(x) for x in self.pairs)
            if np.any(a == b):
                raise ValueError("a unit is never paired with itself in a resample")
            order = np.argsort(column, kind="stable")
            self.pairs = (a[order].astype(np.int64), b[order].astype(np.int64),
                          count[order].astype(np.float64), column[order].astype(np.int64))
        self._pair_matrices = None

    def _matrices(self):
        """Per column with pairs: (units with pairs, CSR [those units, U] of the counts)."""
        if self._pair_matrices is None:
            import scipy.sparse

            a, b, count, column = self.pairs
            built = []
            for m in np.unique(column):
                sel = column == m
                rows, local = np.unique(a[sel], return_inverse=True)
                matrix = scipy.sparse.csr_matrix((count[sel], (local.reshape(-1), b[sel])),
                                                 shape=(len(rows), len(self.linear)))
                built.append((int(m), rows, matrix))
            self._pair_matrices = built     # whole or not at all: blocks are summed in threads
        return self._pair_matrices

    @property
    def width(self) -> int:
        return self.linear.shape[1]

    @staticmethod
    def columns(sums: List["UnitSums"]) -> "UnitSums":
        """The columns of several UnitSums side by side."""
        n_units = len(sums[0].linear)
        widths = np.cumsum([0] + [s.width for s in sums])
        products = None
        if any(s.products is not None for s in sums):
            products = np.concatenate([s.products if s.products is not None
                                       else np.zeros((n_units, s.width)) for s in sums], axis=1)
        pairs = None
        if any(s.pairs is not None for s in sums):
            parts = [(s.pairs[0], s.pairs[1], s.pairs[2], s.pairs[3] + start)
                     for s, start in zip(sums, widths) if s.pairs is not None]
            pairs = tuple(np.concatenate([p[i] for p in parts]) for i in range(4))
        constant = np.concatenate([s.constant if s.constant is not None else np.zeros(s.width)
                                   for s in sums])
        return UnitSums(np.concatenate([s.linear for s in sums], axis=1), products, pairs, constant)

    def of(self, weights: np.ndarray) -> np.ndarray:
        """[resamples, M] sums for weights [resamples, U]."""
        result = weights @ self.linear
        if self.constant is not None:
            result += self.constant
        if self.products is not None:
            with_weights = weights @ self.products
            result += (with_weights * with_weights - (weights * weights) @ (self.products ** 2)) / 2
        if self.pairs is not None and len(self.pairs[0]):
            # sum_(a,b) count_ab w_a w_b = sum_a w_a (sum_b count_ab w_b): one sparse product per
            # column over the units' weights as rows ([U, resamples], contiguous per unit).
            by_unit = np.ascontiguousarray(weights.T)
            for m, rows, matrix in self._matrices():
                partners = matrix @ by_unit                 # [units with pairs, resamples]
                result[:, m] += np.einsum("ur,ur->r", by_unit[rows], partners)
        return result


Sums = Union[np.ndarray, UnitSums]


def _as_sums(sums: Sums) -> UnitSums:
    return sums if isinstance(sums, UnitSums) else UnitSums(sums)


def ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """top / bottom elementwise, with the conventions of the module docstring: +inf where only the
    denominator is 0, NaN (undefined) where both are."""
    top, bottom = np.asarray(top, dtype=np.float64), np.asarray(bottom, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = top / np.where(bottom > 0, bottom, 1.0)
    return np.where(bottom > 0, value, np.where(top > 0, np.inf, np.nan))


def ratio_replicates(weights: np.ndarray, numerators: Sums, denominators: Sums,
                     block: int = 256) -> np.ndarray:
    """Resampled ratios numerator(w) / denominator(w): [resamples] for [U] array inputs,
    [resamples, M] for [U, M] arrays or UnitSums of M columns (M statistics at once). Sums are
    counts: a first-order sum below 0 counts as 0. +inf where only the denominator is 0, NaN where
    both are. Computed `block` resamples at a time."""
    flat = not isinstance(numerators, UnitSums) and np.ndim(numerators) == 1
    top_sums, bottom_sums = _as_sums(numerators), _as_sums(denominators)
    result = np.empty((len(weights), top_sums.width))
    # Temporaries of a block ([block, U] squares and transposes) stay near PAIR_BLOCK_ELEMENTS.
    block = max(1, min(int(block), PAIR_BLOCK_ELEMENTS // max(1, weights.shape[1])))
    def fill(r0):
        rows = weights[r0:r0 + block]
        result[r0:r0 + block] = ratio(np.maximum(top_sums.of(rows), 0.0),
                                      np.maximum(bottom_sums.of(rows), 0.0))

    starts = range(0, len(weights), block)
    for sums in (top_sums, bottom_sums):
        if sums.pairs is not None and len(sums.pairs[0]):
            sums._matrices()            # built once, before the threads share them
    if len(starts) < 2:
        for r0 in starts:
            fill(r0)
    else:
        # Blocks are independent (each fills its own rows) and their sparse and dense products
        # release the GIL: two at a time, the same numbers in the same places.
        with ThreadPoolExecutor(max_workers=REPLICATE_THREADS) as pool:
            list(pool.map(fill, starts))
    return result[:, 0] if flat else result


def percentile_interval(replicates: np.ndarray,
                        level: float = DEFAULT_LEVEL) -> Optional[List[float]]:
    """[lo, hi], the percentiles (linear interpolation) of the defined resamples, +inf ones
    included (an end may be +inf); None when more than half are undefined (NaN)."""
    replicates = np.asarray(replicates, dtype=np.float64)
    defined = np.sort(replicates[~np.isnan(replicates)])
    if len(defined) == 0 or len(defined) * 2 < len(replicates):
        return None
    tail = (1.0 - level) / 2.0
    ends = []
    for q in (tail, 1.0 - tail):
        position = q * (len(defined) - 1)
        below = int(np.floor(position))
        above = min(below + 1, len(defined) - 1)
        low, high, fraction = defined[below], defined[above], position - below
        # Interpolating towards an infinite neighbour is infinite; equal neighbours need no sum
        # (inf - inf would be NaN).
        ends.append(float(low if fraction == 0 or low == high else low + fraction * (high - low)))
    return ends


def percentile_intervals(replicates: np.ndarray,
                         level: float = DEFAULT_LEVEL) -> List[Optional[List[float]]]:
    """`percentile_interval` of every column of [resamples, M]."""
    return [percentile_interval(replicates[:, m], level) for m in range(replicates.shape[1])]


def ratio_interval(weights, numerators: Sums, denominators: Sums,
                   level: float = DEFAULT_LEVEL) -> Optional[List[float]]:
    """Interval of one ratio statistic from its per-unit sums."""
    return percentile_interval(ratio_replicates(weights, numerators, denominators), level)


def paired_difference_interval(weights, candidate: Tuple[Sums, Sums], baseline: Tuple[Sums, Sums],
                               level: float = DEFAULT_LEVEL) -> Optional[List[float]]:
    """Interval of candidate ratio - baseline ratio, both resampled with the same weights.
    `candidate` and `baseline` are (numerators, denominators)."""
    difference = ratio_replicates(weights, *candidate) - ratio_replicates(weights, *baseline)
    return percentile_interval(difference, level)
