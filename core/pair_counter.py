"""The 1:1 counting engine of core/verification.py: pairs, false (non-)matches and the
bootstrap's per-unit sums, whichever way the impostor scores at the thresholds are selected
(core/pair_selection.py).

Exactness without the N x N matrix, in one of two ways, both exact:
* Running selection (one pass; when the kept scores fit the budget, KEPT_PER_IMAGE x N plus
  DET_MIN_KEPT per scope): the impostor scores at and above the thresholds are kept
  (`_TopScores`: the largest K scores, where K = floor(largest rate x impostor pairs) + 1 or
  DET_MIN_KEPT; each block only contributes its scores at or above the current K-th largest), ties
  at the cut kept as counts. K grows with N^2 x the largest rate, hence the budget.
* Radix selection (three passes; beyond the budget, e.g. N above about 51,000 with a FAR of 1e-2):
  float32 scores map to uint32 keys of the same order. Pass 1 counts impostor keys per scope by
  their top 16 bits (65,536 bins; genuine pairs are subtracted, their scores being known), which
  places every k-th largest score in one bin; pass 2 counts the low 16 bits inside those bins only,
  which gives each k-th largest score exactly; pass 3 counts the impostor pairs above the
  rejected score v, per identity, per pair of identities and per group. Extra memory is one block
  and a few 65,536-bin histograms per scope, whatever N is; the DET points then sit at the bins'
  lower edges (each point exact at its threshold; 128 bins per octave of the score).
Genuine scores are kept one per genuine pair (at most N x (m - 1) / 2 for m images per identity:
O(chunk x N) while no identity has more than `chunk` images). Either way the extra memory is
O(chunk x N): one block and its mask (O(chunk^2)) plus at most the budget.

Bootstrap (core/intervals.py): a resample draws identities (units: identity within group) with
replacement within their group, with weights w. In the eval set rebuilt from the drawn identities,
a pair of two different units a, b occurs w_a x w_b times, a genuine pair inside unit a w_a times,
and copies of one unit are never paired with each other (`unit_sums`, core.intervals.UnitSums):
* FNMR: genuine pairs and false non-matches inside a unit are per-unit counts (linear in w); a
  genuine pair of two units of one label (an identity in two groups, overall only) counts
  w_a x w_b, from the sparse list of such unit pairs (few, always kept).
* FMR, exact: impostor pairs in closed form, sum over pairs of distinct units of the scope of
  w_a w_b n_a n_b (n = images per unit; two matrix products per block of resamples), less the
  pairs of two units of one label (genuine, not impostor); false matches from the sparse counts of
  the unit pairs that have any (kept in `_FalseMatches` by the one-pass selection and by radix
  pass 3) while there are at most EXACT_UNIT_PAIRS of them.
* FMR, first order (beyond EXACT_UNIT_PAIRS pairs of identities with a false match: at FMR 1e-3
  from about N = 63,000 images, 2 M false-matching image pairs, up, depending on how many of them
  share a pair of identities; the exact sums cost resamples x those pairs): both counts
  weight a pair w_a + w_b - 1, the first-order form of w_a x w_b (NOT w_a + w_b, which adds an
  unperturbed copy of the data to every resample and halves the interval). `fmr_bootstrap` in the
  summary says which was used.
Every resample's figures equal those recounted on the rebuilt eval set (tests/literal_bootstrap.py
and tests/test_bootstrap_1to1.py). The threshold is held fixed: the intervals cover the sampling
noise of the error rates at the operating point, not that of the threshold.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from core.block_top_k import BlockHits, mask_buffer, nonzero_positions
from core.false_matches import _FalseMatches
from core.features import OVERALL
from core.intervals import UnitSums, identity_units

SUMMARY_KEYS = ("target_fmr", "threshold", "fmr_differential", "skewed_error_ratio",
                "fmr_bootstrap")

MIN_FALSE_ACCEPTS = 10


# Impostor scores kept per scope for its DET curve at least (all of them below this many pairs).
DET_MIN_KEPT = 100_000


DET_POINTS = 60


SAMPLED_ROWS = 128     # images whose scores against all others place each selection's starting floor


# Scores the one-pass selection may keep per eval image (20 B each, buffered twice: about 10 kB per
# image, five times a 512-d float32 embedding); a selection needing more takes the radix passes.
KEPT_PER_IMAGE = 256




# Above the largest score when no pair scores above the one that must be rejected: cosine
# similarities of unit vectors are at most 1 (plus float32 rounding, far below this margin).
SCORE_CEILING_MARGIN = 2.0 ** -8


def far_key(far: float) -> str:
    """1e-3 -> "tar@far=1e-3"."""
    return "tar@far=" + re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{far:.0e}").replace("e+", "e")


@dataclasses.dataclass
class VerificationResult:
    """`summary`: the JSON-ready figures (see the module docstring), {"target_fmr", "threshold",
    "fmr_differential", "skewed_error_ratio", <scope>: {"n_genuine", "n_impostor", "fnmr", "fmr",
    "tar@far=..."..., "det": {"fmr": [...], "fnmr": [...]}}, "fmr_bootstrap": "exact" |
    "first_order"}. `unit_sums`: per scope, {"fnmr": (false non-matches, genuine pairs), "fmr":
    (false matches, impostor pairs)} as core.intervals.UnitSums of the unit weights, for the
    bootstrap. `unit_groups`: each unit's group code (core.intervals.identity_units)."""
    summary: Dict
    unit_sums: Dict[str, Dict[str, Tuple[UnitSums, UnitSums]]]
    unit_groups: np.ndarray


class _PairCounter:
    """What both ways share: pair counts in closed form, the genuine scores (taken from the blocks
    that hold them) and the summary. Subclasses give the impostor side through `_scope_threshold`,
    `_false_matches` and `_det_points`."""

    def __init__(self, labels, groups, target_fmr, fars, chunk):
        self.labels, self.groups = labels, groups
        if not 0.0 < float(target_fmr) < 1.0:
            raise ValueError(f"target_fmr must be in (0, 1), got {target_fmr!r}")
        fars = sorted({float(f) for f in fars}, reverse=True)
        if any(not 0.0 < f < 1.0 for f in fars):
            raise ValueError(f"fars must be in (0, 1), got {fars!r}")
        if groups is not None:
            clash = sorted(set(SUMMARY_KEYS) & set(np.unique(groups).tolist()))
            if clash:
                raise ValueError(f"no group may be named {clash[0]!r} (a key of the verification summary)")
        self.target_fmr, self.fars, self.chunk = float(target_fmr), fars, int(chunk)
        n = len(labels)
        self.n = n
        _, label_codes = np.unique(labels, return_inverse=True)
        self.label_codes = label_codes.reshape(-1).astype(np.int64)
        if groups is None:
            self.group_names, self.group_codes = [], np.zeros(n, dtype=np.int64)
        else:
            names, codes = np.unique(groups, return_inverse=True)
            self.group_names, self.group_codes = [str(g) for g in names], codes.reshape(-1)
        self.units, self.unit_groups = identity_units(labels, groups)
        self.n_units = len(self.unit_groups)
        self.n_groups = max(1, len(self.group_names))

        # Pair counts in closed form.
        self.unit_sizes = np.bincount(self.units, minlength=self.n_units).astype(np.float64)
        label_sizes = np.bincount(self.label_codes).astype(np.float64) if n else np.zeros(0)
        group_sizes = np.bincount(self.group_codes, minlength=self.n_groups).astype(np.float64)
        self.unit_labels = np.zeros(self.n_units, dtype=np.int64)
        self.unit_labels[self.units] = self.label_codes
        self.n_genuine = int((label_sizes * (label_sizes - 1) / 2).sum())
        self.n_impostor = n * (n - 1) // 2 - self.n_genuine
        unit_pairs = self.unit_sizes * (self.unit_sizes - 1) / 2
        self.group_genuine = np.bincount(self.unit_groups, weights=unit_pairs, minlength=self.n_groups)
        self.group_impostor = group_sizes * (group_sizes - 1) / 2 - self.group_genuine
        # Impostor pairs per unit (each pair counted at both ends), overall and in the unit's group.
        self.unit_impostor = self.unit_sizes * (n - label_sizes[self.unit_labels]) if n else self.unit_sizes
        self.unit_impostor_group = self.unit_sizes * (group_sizes[self.unit_groups] - self.unit_sizes)
        # Pairs of distinct units with one label (an identity in two groups): genuine, not impostor.
        self.same_label_units = _same_label_unit_pairs(self.unit_labels)

        # Genuine pairs (i < j), ordered by the block that holds them.
        first, second = _genuine_pairs(self.label_codes)
        n_blocks = max(1, -(-n // self.chunk))
        keys = (first // self.chunk) * n_blocks + second // self.chunk
        order = np.argsort(keys, kind="stable")
        self.genuine_first, self.genuine_second = first[order], second[order]
        self.genuine_keys, self.n_blocks = keys[order], n_blocks
        self.genuine_scores = np.full(len(first), np.nan, dtype=np.float32)
        side = min(self.chunk, max(n, 1))
        self.mask_buf = mask_buffer(side * side)

    def scope_impostors(self, g: Optional[int]) -> int:
        return self.n_impostor if g is None else int(self.group_impostor[g])

    def kept_sizes(self) -> List[int]:
        """Scores the one-pass selection keeps per scope (overall first)."""
        largest_far = max(self.fars) if self.fars else 0.0
        return ([_kept(self.n_impostor, max(self.fars + [self.target_fmr]))]
                + [_kept(self.scope_impostors(g), largest_far) for g in range(len(self.group_names))])

    def _visit_genuine(self, i0: int, j0: int, sims: np.ndarray):
        key = (i0 // self.chunk) * self.n_blocks + j0 // self.chunk
        lo, hi = np.searchsorted(self.genuine_keys, [key, key + 1])
        if hi > lo:
            self.genuine_scores[lo:hi] = sims[self.genuine_first[lo:hi] - i0,
                                              self.genuine_second[lo:hi] - j0]

    def floor(self, i0: int, j0: int) -> Optional[float]:
        """The score below which no entry of block (i0, j0) is needed (None: every entry is)."""
        return None

    def _impostors_at_least(self, i0: int, j0: int, sims: np.ndarray, floor: float,
                            hits: Optional[BlockHits] = None):
        """(scores, first, second) of the block's impostor pairs (i < j) scoring >= floor; from
        `hits` (the block's impostor entries >= a lower or equal floor) when given."""
        if hits is not None and hits.floor <= floor:
            if hits.floor == floor:
                return hits.values, hits.rows, hits.cols
            sel = hits.values >= floor
            return hits.values[sel], hits.rows[sel], hits.cols[sel]
        mask = self.mask_buf[:sims.size].reshape(sims.shape)
        np.greater_equal(sims, floor, out=mask)
        rows, cols = nonzero_positions(self.mask_buf, sims.size, sims.shape[1])
        if i0 == j0:                     # a diagonal block: each pair once, above its diagonal
            upper = rows < cols
            rows, cols = rows[upper], cols[upper]
        values = sims[rows, cols]
        first, second = rows + i0, cols + j0
        impostor = self.label_codes[first] != self.label_codes[second]
        # Image indices as int32 while they fit: the selection buffers millions of them.
        index_type = np.int32 if self.n < 2**31 else np.int64
        return (values[impostor], first[impostor].astype(index_type),
                second[impostor].astype(index_type))

    # The impostor side, per way of selecting.
    def complete(self, unit: np.ndarray) -> bool:
        raise NotImplementedError

    def _scope_threshold(self, g: Optional[int], k: int) -> float:
        """The k-th largest impostor score of the scope (g None: overall)."""
        raise NotImplementedError

    def _false_matches(self, threshold: float) -> "_FalseMatches":
        """The impostor pairs scoring >= threshold (a float32 value), counted."""
        raise NotImplementedError

    def _det_points(self, g: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
        """(thresholds, impostor pairs of the scope >= each), thresholds descending."""
        raise NotImplementedError

    def finish(self) -> VerificationResult:
        if np.isnan(self.genuine_scores).any():
            raise AssertionError("a genuine pair was not scored (blocks and pairs disagree)")
        threshold = None
        found = _FalseMatches(self.n_units, self.n_groups)
        if self.n_impostor:
            # The score that must be rejected, the float32 cut just above it, and the threshold
            # midway to the next score of any pair (the module docstring).
            rejected = self._scope_threshold(None, _rank(self.target_fmr, self.n_impostor))
            cut = _just_above(rejected)
            found = self._false_matches(cut)
            genuine_above = self.genuine_scores[self.genuine_scores >= cut]
            upper = min(found.lowest, float(genuine_above.min()) if len(genuine_above) else np.inf)
            if not np.isfinite(upper):
                upper = max(1.0, rejected) + SCORE_CEILING_MARGIN
            threshold = (rejected + upper) / 2
            non_match = self.genuine_scores < cut
        else:
            non_match = np.zeros(len(self.genuine_scores), dtype=bool)
        genuine_groups = self.group_codes[self.genuine_first]
        genuine_same = genuine_groups == self.group_codes[self.genuine_second]
        first_units, second_units = self.units[self.genuine_first], self.units[self.genuine_second]
        inside = first_units == second_units           # a genuine pair inside one unit
        false_match_pairs = found.pairs()

        summary = {"target_fmr": self.target_fmr, "threshold": threshold,
                   "fmr_bootstrap": "exact" if false_match_pairs is not None else "first_order"}
        unit_sums = {}
        scopes = [(OVERALL, None)] + [(name, g) for g, name in enumerate(self.group_names)]
        for name, g in scopes:
            if g is None:
                genuine_sel = np.ones(len(self.genuine_scores), dtype=bool)
                n_genuine, n_false_match = self.n_genuine, found.total
                in_scope = np.ones(self.n_units, dtype=bool)
            else:
                genuine_sel = genuine_same & (genuine_groups == g)
                n_genuine, n_false_match = int(self.group_genuine[g]), int(found.groups[g])
                in_scope = self.unit_groups == g
            n_impostor = self.scope_impostors(g)
            scores = np.sort(self.genuine_scores[genuine_sel].astype(np.float64))
            n_false_non_match = int(non_match[genuine_sel].sum())
            entry = {"n_genuine": n_genuine, "n_impostor": n_impostor,
                     "fnmr": (n_false_non_match / n_genuine
                              if threshold is not None and n_genuine else None),
                     "fmr": n_false_match / n_impostor if threshold is not None and n_impostor else None}
            for far in self.fars:
                entry[far_key(far)] = (
                    float((len(scores) - np.searchsorted(
                        scores, self._scope_threshold(g, _rank(far, n_impostor)), "right"))
                          / len(scores))
                    if _allowed(far, n_impostor) >= MIN_FALSE_ACCEPTS and len(scores) else None)
            entry["det"] = self._det(g, scores, n_impostor)
            summary[name] = entry
            unit_sums[name] = {
                "fnmr": self._genuine_sums(genuine_sel, non_match, inside, first_units, second_units),
                "fmr": self._impostor_sums(g, found, false_match_pairs, in_scope)}
        groups = [summary[name] for name in self.group_names]
        summary["fmr_differential"] = fmr_differential([e["fmr"] for e in groups], self.target_fmr)
        summary["skewed_error_ratio"] = skewed_error_ratio([e["fnmr"] for e in groups])
        return VerificationResult(summary, unit_sums, self.unit_groups)

    def _genuine_sums(self, genuine_sel, non_match, inside, first_units, second_units
                      ) -> Tuple[UnitSums, UnitSums]:
        """(false non-matches, genuine pairs) of a scope as functions of the unit weights: a pair
        inside unit a counts w_a times; a pair of two units of one label (an identity in two groups,
        overall only) w_a x w_b times, its copies being different identities' copies."""
        n_units = self.n_units
        own = genuine_sel & inside
        genuine = np.bincount(first_units[own], minlength=n_units).astype(np.float64)
        misses = np.bincount(first_units[own & non_match], minlength=n_units).astype(np.float64)
        across = genuine_sel & ~inside
        pairs_genuine = pairs_misses = None
        if across.any():
            a = np.minimum(first_units[across], second_units[across])
            b = np.maximum(first_units[across], second_units[across])
            keys, inverse = np.unique(a * n_units + b, return_inverse=True)
            inverse = inverse.reshape(-1)
            column = np.zeros(len(keys), np.int64)
            pairs_genuine = (keys // n_units, keys % n_units,
                             np.bincount(inverse, minlength=len(keys)).astype(np.float64), column)
            pairs_misses = (keys // n_units, keys % n_units,
                            np.bincount(inverse, weights=non_match[across].astype(np.float64),
                                        minlength=len(keys)), column)
        return UnitSums(misses, pairs=pairs_misses), UnitSums(genuine, pairs=pairs_genuine)

    def _impostor_sums(self, g, found: "_FalseMatches", false_match_pairs, in_scope
                       ) -> Tuple[UnitSums, UnitSums]:
        """(false matches, impostor pairs) of a scope as functions of the unit weights. Exact: a
        pair of units a != b counts w_a x w_b times; impostor pairs in closed form (every pair of
        distinct units of the scope, v = images per unit, less the pairs of two units of one label,
        which are genuine); false matches from the sparse unit-pair counts. First-order (beyond
        EXACT_UNIT_PAIRS): w_a + w_b - 1 for both, i.e. per-unit counts at both ends less the
        total."""
        scope_sizes = np.where(in_scope, self.unit_sizes, 0.0)
        if false_match_pairs is None:
            if g is None:
                return (UnitSums(found.units_all, constant=[-found.total]),
                        UnitSums(self.unit_impostor, constant=[-self.n_impostor]))
            return (UnitSums(np.where(in_scope, found.units_same, 0.0), constant=[-found.groups[g]]),
                    UnitSums(np.where(in_scope, self.unit_impostor_group, 0.0),
                             constant=[-self.group_impostor[g]]))
        a, b, counts = false_match_pairs
        keep = slice(None) if g is None else (self.unit_groups[a] == g) & (self.unit_groups[b] == g)
        zeros = np.zeros(self.n_units)
        false_matches = UnitSums(zeros, pairs=(a[keep], b[keep], counts[keep],
                                               np.zeros(len(a[keep]), np.int64)))
        same_label = None
        if g is None and len(self.same_label_units[0]):
            sa, sb = self.same_label_units
            same_label = (sa, sb, -self.unit_sizes[sa] * self.unit_sizes[sb], np.zeros(len(sa), np.int64))
        return false_matches, UnitSums(zeros, products=scope_sizes, pairs=same_label)

    def _det(self, g: Optional[int], genuine_sorted: np.ndarray, n_impostor: int) -> Dict[str, List[float]]:
        """DET points (FMR = impostors >= t / impostors, FNMR = genuine < t / genuine) at the
        thresholds t of `_det_points`."""
        if not n_impostor or not len(genuine_sorted):
            return {"fmr": [], "fnmr": []}
        thresholds, counts = self._det_points(g)
        fmr = counts / n_impostor
        fnmr = np.searchsorted(genuine_sorted, thresholds, "left") / len(genuine_sorted)
        return {"fmr": [float(x) for x in fmr], "fnmr": [float(x) for x in fnmr]}


def fmr_differential(fmrs: Sequence[Optional[float]], target_fmr: float) -> Optional[float]:
    """max FMR_g / target_fmr over the defined values; None without any."""
    defined = [f for f in fmrs if f is not None and np.isfinite(f)]
    return float(max(defined) / target_fmr) if defined else None


def skewed_error_ratio(fnmrs: Sequence[Optional[float]]) -> Optional[float]:
    """max FNMR_g / min FNMR_g over the defined values: 1.0 when all are 0 (no group is worse than
    another), +inf when the minimum is 0 and the maximum is not (unbounded: the worst value, which
    fails any finite bar), None when nothing is defined."""
    defined = [f for f in fnmrs if f is not None and np.isfinite(f)]
    if not defined:
        return None
    low, high = min(defined), max(defined)
    if low == 0:
        return 1.0 if high == 0 else float("inf")
    return float(high / low)


def _kept(n_impostor: int, largest_rate: float) -> int:
    return int(min(n_impostor, max(_rank(largest_rate, n_impostor), DET_MIN_KEPT)))


def _allowed(rate: float, n_pairs: int) -> int:
    """Impostor pairs allowed to match at `rate`: floor(rate x pairs) (rounded to 1e-6 first, so
    that 0.29 x 100 is 29, not 28)."""
    return int(math.floor(round(rate * n_pairs, 6)))


def _rank(rate: float, n_pairs: int) -> int:
    """Rank (from the top) of the largest impostor score that must be rejected at `rate`."""
    return min(int(n_pairs), _allowed(rate, n_pairs) + 1)


def _just_above(score: float) -> float:
    """The next float32 above a float32 score: for float32 scores s, s >= it exactly when s > score,
    in float32 and float64 comparisons alike."""
    return float(np.nextafter(np.float32(score), np.float32(np.inf)))


def _same_label_unit_pairs(unit_labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(a, b), a < b, for every two units of one label."""
    order = np.argsort(unit_labels, kind="stable")
    sizes = np.bincount(unit_labels) if len(unit_labels) else np.zeros(0, np.int64)
    starts = np.cumsum(sizes) - sizes
    firsts, seconds = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for size in np.unique(sizes[sizes >= 2]):
        i, j = np.triu_indices(int(size), 1)
        base = starts[sizes == size][:, None]
        firsts.append(order[base + i].ravel())
        seconds.append(order[base + j].ravel())
    a, b = np.concatenate(firsts), np.concatenate(seconds)
    return np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)


def _genuine_pairs(label_codes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Every (i, j), i < j, of images with the same label."""
    if not len(label_codes):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(label_codes, kind="stable")      # each label's images in index order
    counts = np.bincount(label_codes)
    starts = np.cumsum(counts) - counts
    firsts, seconds = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for size in np.unique(counts[counts >= 2]):
        a, b = np.triu_indices(int(size), 1)
        base = starts[counts == size][:, None]
        firsts.append(order[base + a].ravel())
        seconds.append(order[base + b].ravel())
    return np.concatenate(firsts).astype(np.int64), np.concatenate(seconds).astype(np.int64)
