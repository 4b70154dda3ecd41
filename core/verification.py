"""Exact 1:1 verification at one global threshold, per group (the view of NIST FRVT's demographic
reports), computed in blocks of the similarity matrix like core/recall.py.

Definitions:
* Pairs: every unordered pair {i, j}, i != j, of eval images, scored by the cosine similarity of
  the L2-normalised float32 embeddings (the same block products as core/recall.py; the score of
  {i, j}, i < j, is entry (i, j) of the upper block triangle). Genuine: same label. Impostor:
  different labels.
* Scopes: "overall" holds every pair; group g holds the pairs with BOTH images in g. Pairs across
  groups count only overall.
* A pair matches when its score is >= the threshold (ties at the threshold count as matches).
  FMR = impostor pairs scoring >= threshold / impostor pairs; FNMR = genuine pairs scoring <
  threshold / genuine pairs.
* `threshold`: the smallest threshold at which the overall FMR is <= target_fmr, so the realised
  FMR never exceeds the target. With I impostor pairs, a = floor(target_fmr x I) may match; let v
  be the (a + 1)-th largest impostor score (ties counted one by one): v and every score below it
  must be rejected, and every threshold above v admits at most a impostor pairs (those scoring
  above v). The threshold is placed midway between v and u, the smallest score of ANY pair
  (genuine or impostor) above v: every threshold in (v, u] counts the same pairs, and the midpoint
  is as far as possible from both, so recomputing the figures from the same embeddings with
  another blocking, BLAS or precision (scores moving in their last bits) counts the same pairs.
  No pair scores above v (e.g. all tied, or a = 0 with the largest impostor score also the
  largest score): u = max(1, v) + SCORE_CEILING_MARGIN, above any cosine similarity, and nothing
  at or below v matches. Internally a pair matches when its float32 score is > v, which is the
  same. No impostor pair: no threshold, and every rate is None; no genuine (impostor) pair in a
  scope: its FNMR (FMR) is None.
* `tar@far=<f>` of a scope: the same rule inside the scope at FAR f (a_f = floor(f x the scope's
  impostor pairs) may match: TAR = genuine pairs of the scope scoring above the scope's
  (a_f + 1)-th largest impostor score / genuine pairs, so the realised FAR is <= f). Reported only
  when a_f >= MIN_FALSE_ACCEPTS, i.e. the scope has at least MIN_FALSE_ACCEPTS / f impostor pairs
  (a threshold set by fewer impostor scores is one or two extreme scores); otherwise None.
* `fmr_differential` = max over groups of FMR_g / target_fmr (groups whose FMR is defined).
  `skewed_error_ratio` = max over groups of FNMR_g / min over groups of FNMR_g (groups whose FNMR is
  defined); 1.0 when every such FNMR is 0, +inf (unbounded: the worst value, failing any finite
  bar) when the minimum is 0 and the maximum is not. Both None with fewer than one group.
* `det` of a scope: (fmr, fnmr) points of its DET curve, at thresholds equal to the scope's own
  impostor scores: exact for FMRs up to the kept fraction (all impostor pairs when there are at
  most DET_MIN_KEPT, else at least the largest FAR of `fars`), never extrapolated.

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

from core import recall
from core.block_top_k import BlockHits, mask_buffer, nonzero_positions, similarity_blocks
from core.features import OVERALL
from core.intervals import UnitSums, identity_units

DEFAULT_TARGET_FMR = 1e-3
DEFAULT_FARS = (1e-2, 1e-3, 1e-4)
MIN_FALSE_ACCEPTS = 10
# Impostor scores kept per scope for its DET curve at least (all of them below this many pairs).
DET_MIN_KEPT = 100_000
DET_POINTS = 60
SAMPLED_ROWS = 128     # images whose scores against all others place each selection's starting floor
# Scores the one-pass selection may keep per eval image (20 B each, buffered twice: about 10 kB per
# image, five times a 512-d float32 embedding); a selection needing more takes the radix passes.
KEPT_PER_IMAGE = 256
# Unit pairs (of two identities) with a false match whose exact product weights the bootstrap may
# keep (about 24 B each as sparse counts, and resamples x pairs multiply-adds per statistic): beyond
# it the FMR bootstrap takes the first-order weights (the module docstring).
EXACT_UNIT_PAIRS = 2_000_000
# Above the largest score when no pair scores above the one that must be rejected: cosine
# similarities of unit vectors are at most 1 (plus float32 rounding, far below this margin).
SCORE_CEILING_MARGIN = 2.0 ** -8
SUMMARY_KEYS = ("target_fmr", "threshold", "fmr_differential", "skewed_error_ratio",
                "fmr_bootstrap")


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


def verification(embeddings, labels, groups=None, target_fmr: float = DEFAULT_TARGET_FMR,
                 fars: Sequence[float] = DEFAULT_FARS,
                 chunk_size: Optional[int] = None) -> VerificationResult:
    """The 1:1 figures alone (one blocked pass over the upper block triangle; three beyond the
    selection budget)."""
    unit, labels, groups, _ = recall.checked_inputs(embeddings, labels, groups, (1,))
    counter = _counter(labels, groups, target_fmr, fars, recall._chunk_size(chunk_size), unit)
    for i0, j0, sims in similarity_blocks(unit, counter.chunk):
        counter.visit(i0, j0, sims)
    return _complete(counter, unit).finish()


def ranks_and_verification(embeddings, labels, groups=None, ks: Sequence[int] = (1,),
                           target_fmr: float = DEFAULT_TARGET_FMR,
                           fars: Sequence[float] = DEFAULT_FARS, chunk_size: Optional[int] = None
                           ) -> Tuple[recall.QueryRanks, VerificationResult]:
    """Recall ranks (core.recall.first_hit_ranks) and the 1:1 figures from ONE pass over the
    similarity blocks (plus the two radix passes beyond the selection budget). The rows are taken in
    group order (the ranks mapped back; the 1:1 figures do not depend on the order), and each
    block's entries at or above the selection's floor are found once for both views."""
    unit, rows_labels, rows_groups, ks, order = recall.checked_inputs(embeddings, labels, groups, ks,
                                                                      in_group_order=True)
    counter = _counter(rows_labels, rows_groups, target_fmr, fars, recall._chunk_size(chunk_size),
                       unit)
    ranks = recall.first_hit_ranks(unit, rows_labels, rows_groups, max(ks), counter.chunk,
                                   counter.visit, counter.floor, ids=order)
    if order is not None:
        ranks = recall.ranks_in_input_order(ranks, order, np.asarray(labels),
                                            np.asarray(groups).astype(str))
    return ranks, _complete(counter, unit).finish()


def _counter(labels, groups, target_fmr, fars, chunk, unit) -> "_PairCounter":
    """The one-pass selection when its kept scores fit the budget, else the radix passes."""
    counter = _SelectionCounter(labels, groups, target_fmr, fars, chunk)
    if _selection_fits(counter.kept_sizes(), counter.n):
        counter.start(unit)
        return counter
    return _RadixCounter(labels, groups, target_fmr, fars, chunk)


def _selection_fits(kept_sizes: Sequence[int], n: int) -> bool:
    return sum(kept_sizes) <= KEPT_PER_IMAGE * n + DET_MIN_KEPT * len(kept_sizes)


def _complete(counter: "_PairCounter", unit: np.ndarray) -> "_PairCounter":
    """`counter` after its remaining passes: none for a selection whose sampled starting floors were
    low enough; a second, unseeded pass when one was too high (fewer impostor scores at or above it
    than a selection needs; practically never); the two radix passes for `_RadixCounter`."""
    if counter.complete(unit):
        return counter
    again = _SelectionCounter(counter.labels, counter.groups, counter.target_fmr, counter.fars,
                              counter.chunk)
    again.start(None)
    for i0, j0, sims in similarity_blocks(unit, again.chunk):
        again.visit(i0, j0, sims)
    again.complete(unit)
    return again


# ----------------------------------------------------------------------------- running selection

class _TopScores:
    """The `size` largest values of a stream, exactly. Values tied with the cut are kept as a count
    (and, with `pairs`, as per-unit and per-group counts), so equal scores never grow memory."""

    def __init__(self, size: int, units: Optional[np.ndarray] = None,
                 group_codes: Optional[np.ndarray] = None, n_units: int = 0, n_groups: int = 0):
        self.size = int(size)
        # Values below the floor can no longer be among the largest `size` (none can when size is 0).
        self.floor = -np.inf if self.size else np.inf
        self.units, self.group_codes = units, group_codes
        self.values: List[np.ndarray] = []
        self.firsts: List[np.ndarray] = []
        self.seconds: List[np.ndarray] = []
        self.n_buffered = 0
        self.seeded_floor = -np.inf
        self.tie_value, self.tie_count = -np.inf, 0
        if units is not None:
            self.tie_units = np.zeros(n_units)          # tied pairs per unit (both ends)
            self.tie_units_same = np.zeros(n_units)     # the same, same-group pairs only
            self.tie_groups = np.zeros(n_groups, dtype=np.int64)  # same-group tied pairs per group

    def seed_floor(self, floor: float):
        if self.size and floor > self.floor:
            self.floor = self.seeded_floor = floor

    def add(self, values, firsts=None, seconds=None):
        if not len(values):
            return
        self.values.append(values)
        if self.units is not None:
            self.firsts.append(firsts)
            self.seconds.append(seconds)
        self.n_buffered += len(values)
        if self.n_buffered > 2 * self.size + 1024:
            self._compact()

    def _concatenated(self):
        values = np.concatenate(self.values) if self.values else np.zeros(0, np.float32)
        if self.units is None:
            return values, None, None
        empty = np.zeros(0, np.int64)
        return (values, np.concatenate(self.firsts) if self.firsts else empty,
                np.concatenate(self.seconds) if self.seconds else empty)

    def _compact(self):
        values, firsts, seconds = self._concatenated()
        if self.size and len(values) >= self.size:
            cut = np.partition(values, len(values) - self.size)[len(values) - self.size]
            if cut > self.tie_value:     # the old ties fall below `size` larger values
                self.tie_value, self.tie_count = cut, 0
                if self.units is not None:
                    self.tie_units[:] = 0
                    self.tie_units_same[:] = 0
                    self.tie_groups[:] = 0
            tied = values == cut
            self.tie_count += int(tied.sum())
            if self.units is not None:
                _count_pairs(self.units, self.group_codes, firsts[tied], seconds[tied], self.tie_units,
                             self.tie_units_same, self.tie_groups)
            keep = values > cut
            values = values[keep]
            if self.units is not None:
                firsts, seconds = firsts[keep], seconds[keep]
            self.floor = cut
        self.values = [values]
        if self.units is not None:
            self.firsts, self.seconds = [firsts], [seconds]
        self.n_buffered = len(values)

    def finish(self):
        self._compact()
        self.sorted_values = np.sort(self._concatenated()[0])   # ascending; all >= tie_value

    def total(self) -> int:
        return len(self.sorted_values) + self.tie_count

    def kth_largest(self, ks: np.ndarray) -> np.ndarray:
        """The k-th largest kept value for each k in 1..total()."""
        ks = np.asarray(ks, dtype=np.int64)
        values = self.sorted_values
        above = values[values > self.tie_value] if self.tie_count else values
        result = np.full(len(ks), self.tie_value, dtype=np.float64)
        inside = ks <= len(above)
        result[inside] = above[len(above) - ks[inside]]
        return result

    def count_at_least(self, thresholds: np.ndarray) -> np.ndarray:
        thresholds = np.asarray(thresholds, dtype=np.float64)
        counts = len(self.sorted_values) - np.searchsorted(self.sorted_values, thresholds, "left")
        return counts + np.where(self.tie_value >= thresholds, self.tie_count, 0)

    def pair_counts_at_least(self, threshold: float, n_groups: int) -> "_FalseMatches":
        """The kept pairs scoring >= threshold, counted (`_FalseMatches`). Tied pairs are counts
        per unit only, so with ties at or above the threshold the unit pairs are unknown (None);
        the operating threshold lies above the tie value, so this does not happen there."""
        values, firsts, seconds = self._concatenated()
        found = _FalseMatches(len(self.tie_units), n_groups)
        sel = values >= threshold
        found.add(self.units, self.group_codes, firsts[sel], seconds[sel], values[sel])
        if self.tie_value >= threshold:
            found.units_all += self.tie_units
            found.units_same += self.tie_units_same
            found.groups += self.tie_groups
            found.total += self.tie_count
            found.lowest = min(found.lowest, float(self.tie_value))
            found.unit_pairs = None
        return found


# ----------------------------------------------------------------------------- the blocked passes

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
        `hits` (the block's entries >= a lower or equal floor) when given."""
        if hits is not None and hits.floor <= floor:
            sel = hits.values >= floor
            rows, cols, values = hits.rows[sel], hits.cols[sel], hits.values[sel]
        else:
            mask = self.mask_buf[:sims.size].reshape(sims.shape)
            np.greater_equal(sims, floor, out=mask)
            rows, cols = nonzero_positions(self.mask_buf, sims.size, sims.shape[1])
            values = sims[rows, cols]
        if i0 == j0:                     # a diagonal block: each pair once, as (lower, higher)
            upper = rows < cols
            rows, cols, values = rows[upper], cols[upper], values[upper]
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


class _SelectionCounter(_PairCounter):
    """The one-pass way: running selections. With `unit` rows, each selection starts from a floor
    estimated from a random sample of its impostor pairs (about twice the scores it needs lie above
    it), so blocks never hand over all their scores; `complete()` checks that the floor was low
    enough, which decides exactness: every score at or above it was seen."""

    def start(self, unit: Optional[np.ndarray]):
        sizes = self.kept_sizes()
        self.overall = _TopScores(sizes[0], self.units, self.group_codes, self.n_units, self.n_groups)
        self.by_group = [_TopScores(size) for size in sizes[1:]]
        if unit is not None:
            rng = np.random.default_rng(0)
            members = [np.arange(self.n)] + [np.flatnonzero(self.group_codes == g)
                                             for g in range(len(self.group_names))]
            for store, scope_members in zip([self.overall] + self.by_group, members):
                store.seed_floor(_sampled_floor(unit, self.label_codes, scope_members, store.size, rng))
        # Which groups have images in each row block: a group's floor only matters for blocks
        # holding pairs of that group (a group still filling its selection has floor -inf).
        block_of = np.arange(self.n) // self.chunk
        self.block_groups = np.zeros((self.n_blocks, self.n_groups), dtype=bool)
        self.block_groups[block_of, self.group_codes] = True

    def complete(self, unit: np.ndarray) -> bool:
        stores = [self.overall] + self.by_group
        for store in stores:
            store.finish()
        return all(store.seeded_floor == -np.inf or store.total() >= store.size for store in stores)

    def floor(self, i0: int, j0: int) -> float:
        """The lowest floor of the selections that block (i0, j0) has pairs for: overall, and the
        groups with images in both its rows and columns."""
        shared = self.block_groups[i0 // self.chunk] & self.block_groups[j0 // self.chunk]
        return min([self.overall.floor] + [s.floor for g, s in enumerate(self.by_group) if shared[g]])

    def visit(self, i0: int, j0: int, sims: np.ndarray, hits: Optional[BlockHits] = None):
        self._visit_genuine(i0, j0, sims)
        values, first, second = self._impostors_at_least(i0, j0, sims, self.floor(i0, j0), hits)
        sel = values >= self.overall.floor
        self.overall.add(values[sel], first[sel], second[sel])
        if self.by_group:
            first_groups = self.group_codes[first]
            same = first_groups == self.group_codes[second]
            for g, store in enumerate(self.by_group):
                store.add(values[same & (first_groups == g) & (values >= store.floor)])

    def _store(self, g: Optional[int]) -> "_TopScores":
        return self.overall if g is None else self.by_group[g]

    def _scope_threshold(self, g, k):
        return float(self._store(g).kth_largest([k])[0])

    def _false_matches(self, threshold):
        return self.overall.pair_counts_at_least(threshold, self.n_groups)

    def _det_points(self, g):
        """At thresholds t_k = the k-th largest impostor score, k log-spaced from 1 to the kept
        count."""
        store = self._store(g)
        if not store.total():
            return np.zeros(0), np.zeros(0)
        ks = np.unique(np.geomspace(1, store.total(), DET_POINTS).round().astype(np.int64))
        thresholds = store.kth_largest(ks)
        return thresholds, store.count_at_least(thresholds)


class _RadixCounter(_PairCounter):
    """The bounded-memory way: three passes over the blocks (the module docstring). Pass 1 is
    `visit` (it can ride on the recall pass); `complete` runs passes 2 and 3."""

    def __init__(self, *args):
        super().__init__(*args)
        self.n_scopes = 1 + len(self.group_names)     # 0: pairs across groups, g + 1: inside group g
        self.top_bins = np.zeros(self.n_scopes * _BINS, dtype=np.int64)
        self.triu = {}

    def _block_pairs(self, i0: int, j0: int, sims: np.ndarray):
        """(scores, scope codes) of the block's pairs i < j, flat: code g + 1 when both images are in
        group g, else 0."""
        height, width = sims.shape
        codes = None
        if self.group_names:
            rows = self.group_codes[i0:i0 + height].astype(np.int32)
            same = rows[:, None] == self.group_codes[j0:j0 + width].astype(np.int32)[None, :]
            codes = np.where(same, rows[:, None] + 1, 0).astype(np.int32)
        if i0 == j0:
            if height not in self.triu:
                self.triu[height] = np.triu_indices(height, 1)
            upper = self.triu[height]
            return sims[upper], (codes[upper] if codes is not None else None)
        return sims.reshape(-1), (codes.reshape(-1) if codes is not None else None)

    def visit(self, i0: int, j0: int, sims: np.ndarray, hits: Optional[BlockHits] = None):
        """Pass 1: every pair's key prefix per scope (genuine pairs included; taken out in
        `_impostor_top_bins`)."""
        self._visit_genuine(i0, j0, sims)
        values, codes = self._block_pairs(i0, j0, sims)
        index = (sortable_keys(values) >> 16).astype(np.int64)
        if codes is not None:
            index += codes.astype(np.int64) * _BINS
        self.top_bins += np.bincount(index, minlength=self.top_bins.size)

    def _genuine_scopes(self) -> Tuple[np.ndarray, np.ndarray]:
        codes = self.group_codes[self.genuine_first]
        same = codes == self.group_codes[self.genuine_second]
        scopes = np.where(same, codes + 1, 0) if self.group_names else np.zeros_like(codes)
        return sortable_keys(self.genuine_scores), scopes

    def _impostor_top_bins(self) -> np.ndarray:
        """[1 + groups, 65,536] impostor pairs per key prefix: row 0 overall, row g + 1 group g."""
        keys, codes = self._genuine_scopes()
        counts = self.top_bins.reshape(self.n_scopes, _BINS).copy()
        np.subtract.at(counts, (codes, keys >> 16), 1)
        counts[0] = counts.sum(axis=0)       # overall: pairs across groups plus every group's
        return counts

    def complete(self, unit: np.ndarray) -> bool:
        top = self._impostor_top_bins()
        self.det_bins = top
        # Every k-th largest score any figure needs: the threshold, each scope's FARs.
        wanted = set()
        if self.n_impostor:
            wanted.add((0, _rank(self.target_fmr, self.n_impostor)))
        for g in [None] + list(range(len(self.group_names))):
            for far in self.fars:
                if _allowed(far, self.scope_impostors(g)) >= MIN_FALSE_ACCEPTS:
                    wanted.add((0 if g is None else g + 1, _rank(far, self.scope_impostors(g))))
        # Pass 2: each wanted rank lies in one prefix bin; count the low 16 bits inside it.
        above = np.cumsum(top[:, ::-1], axis=1)[:, ::-1] - top     # pairs in higher bins
        places = {}
        for scope, k in wanted:
            prefix = int(np.flatnonzero(above[scope] < k)[0])
            places[scope, k] = (prefix, k - int(above[scope, prefix]))
        slots = {key: i for i, key in enumerate(sorted({(s, p) for (s, _), (p, _) in places.items()}))}
        table = np.full((self.n_scopes, _BINS), -1, dtype=np.int64)
        for (scope, prefix), slot in slots.items():
            table[scope, prefix] = slot
        low_bins = np.zeros(max(1, len(slots)) * _BINS, dtype=np.int64)
        if slots:
            for i0, j0, sims in similarity_blocks(unit, self.chunk):
                values, codes = self._block_pairs(i0, j0, sims)
                keys = sortable_keys(values)
                low_bins += self._low_counts(table, keys, codes, low_bins.size)
            keys, codes = self._genuine_scopes()
            low_bins -= self._low_counts(table, keys, codes, low_bins.size)
        low_bins = low_bins.reshape(-1, _BINS)
        self.kth = {}
        for (scope, k), (prefix, rank) in places.items():
            from_top = np.cumsum(low_bins[slots[scope, prefix], ::-1])
            low = _BINS - 1 - int(np.flatnonzero(from_top >= rank)[0])
            self.kth[scope, k] = key_value((prefix << 16) | low)
        # Pass 3: the pairs above the score that must be rejected, per unit, unit pair and group.
        self.false_matches = _FalseMatches(self.n_units, self.n_groups)
        if self.n_impostor:
            cut = np.float32(_just_above(self.kth[0, _rank(self.target_fmr, self.n_impostor)]))
            for i0, j0, sims in similarity_blocks(unit, self.chunk):
                values, first, second = self._impostors_at_least(i0, j0, sims, cut)
                self.false_matches.add(self.units, self.group_codes, first, second, values)
        return True

    @staticmethod
    def _low_counts(table, keys, codes, size) -> np.ndarray:
        """Counts of the low 16 bits of the keys whose (scope, prefix) has a slot, overall and
        inside their group."""
        prefixes = (keys >> 16).astype(np.int64)
        counts = np.zeros(size, dtype=np.int64)
        scope_codes = [np.zeros(len(keys), dtype=np.int64)]
        if codes is not None and table.shape[0] > 1:
            scope_codes.append(codes.astype(np.int64))
        for scope_code in scope_codes:
            slot = table[scope_code, prefixes]
            if scope_code is not scope_codes[0]:
                slot[scope_code == 0] = -1
            hit = slot >= 0
            if hit.any():
                counts += np.bincount(slot[hit] * _BINS + (keys[hit] & 0xFFFF).astype(np.int64),
                                      minlength=size)
        return counts

    def _scope_threshold(self, g, k):
        return self.kth[0 if g is None else g + 1, k]

    def _false_matches(self, threshold):
        return self.false_matches      # counted in pass 3, at the same cut

    def _det_points(self, g):
        """At the lower edges of the prefix bins whose pair counts above them are nearest to ranks
        log-spaced from 1 to the kept count of the one-pass way: exact rates at those thresholds."""
        counts = self.det_bins[0 if g is None else g + 1]
        at_least = np.cumsum(counts[::-1])[::-1]               # pairs with prefix >= p
        total = int(at_least[0]) if len(at_least) else 0
        if not total:
            return np.zeros(0), np.zeros(0)
        sizes = self.kept_sizes()
        ks = np.unique(np.geomspace(1, min(total, sizes[0 if g is None else g + 1]), DET_POINTS)
                       .round().astype(np.int64))
        # The highest prefix with at least k pairs at or above its lower edge.
        occupied = np.flatnonzero(counts)
        prefixes = np.unique([occupied[at_least[occupied] >= k].max() for k in ks])[::-1]
        thresholds = np.array([key_value(int(p) << 16) for p in prefixes])
        return thresholds, at_least[prefixes].astype(np.float64)


_BINS = 1 << 16


def sortable_keys(scores: np.ndarray) -> np.ndarray:
    """uint32 keys in the order of the float32 scores (-0.0 taken as 0.0): the sign bit flipped
    for positive scores, every bit for negative ones."""
    bits = np.add(np.asarray(scores, dtype=np.float32), np.float32(0.0)).view(np.uint32)
    return np.where(bits >> 31 == 1, ~bits, bits | np.uint32(0x80000000))


def key_value(key: int) -> float:
    """The float32 score of a key (the inverse of `sortable_keys`), as a Python float."""
    key = np.uint32(key)
    bits = key ^ np.uint32(0x80000000) if key >> np.uint32(31) else ~key
    return float(np.array(bits, dtype=np.uint32).view(np.float32))


class _FalseMatches:
    """Impostor pairs at or above the operating threshold, as the bootstrap needs them: per unit
    (both ends), per unit for same-group pairs, per group, in all, the lowest of their scores, and
    per unit pair (a < b) as sparse counts while there are at most EXACT_UNIT_PAIRS of them (None
    beyond: the first-order bootstrap)."""

    def __init__(self, n_units: int, n_groups: int):
        self.n_units = n_units
        self.units_all, self.units_same = np.zeros(n_units), np.zeros(n_units)
        self.groups = np.zeros(n_groups, dtype=np.int64)
        self.total, self.lowest = 0, np.inf
        self.unit_pairs: Optional[Tuple[np.ndarray, np.ndarray]] = (np.zeros(0, np.int64),
                                                                     np.zeros(0, np.int64))
        self.pending: List[np.ndarray] = []
        self.n_pending = 0

    def add(self, units, group_codes, firsts, seconds, values):
        if not len(firsts):
            return
        _count_pairs(units, group_codes, firsts, seconds, self.units_all, self.units_same,
                     self.groups)
        self.total += len(firsts)
        self.lowest = min(self.lowest, float(np.min(values)))
        if self.unit_pairs is None:
            return
        a, b = units[firsts], units[seconds]
        self.pending.append(np.minimum(a, b) * self.n_units + np.maximum(a, b))
        self.n_pending += len(a)
        if self.n_pending > EXACT_UNIT_PAIRS:
            self._merge()

    def _merge(self):
        if self.unit_pairs is None or not self.pending:
            return
        keys, counts = self.unit_pairs
        repeated = np.concatenate([keys] + self.pending)
        weights = np.concatenate([counts, np.ones(self.n_pending, np.int64)])
        keys, inverse = np.unique(repeated, return_inverse=True)
        counts = np.bincount(inverse.reshape(-1), weights=weights, minlength=len(keys)).astype(np.int64)
        self.pending, self.n_pending = [], 0
        self.unit_pairs = (keys, counts) if len(keys) <= EXACT_UNIT_PAIRS else None

    def pairs(self) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(unit a, unit b, false matches) with a < b, or None beyond the budget."""
        self._merge()
        if self.unit_pairs is None:
            return None
        keys, counts = self.unit_pairs
        return keys // self.n_units, keys % self.n_units, counts.astype(np.float64)


def _count_pairs(units, group_codes, firsts, seconds, units_all, units_same, groups):
    """Adds pairs (firsts[i], seconds[i]) to the per-unit counts (both ends), the per-unit counts of
    same-group pairs and the same-group pairs per group."""
    n_units = len(units_all)
    units_all += np.bincount(np.concatenate([units[firsts], units[seconds]]), minlength=n_units)
    first_groups = group_codes[firsts]
    same = first_groups == group_codes[seconds]
    units_same += np.bincount(np.concatenate([units[firsts[same]], units[seconds[same]]]),
                              minlength=n_units)
    groups += np.bincount(first_groups[same], minlength=len(groups))


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


def _sampled_floor(unit, label_codes, members, size, rng) -> float:
    """A score with about 2 x `size` of the scope's impostor pairs at or above it, estimated from
    the scores of SAMPLED_ROWS random members against every member; -inf when the sample cannot
    place it reliably (then nothing is pruned before the selection fills)."""
    n_members = len(members)
    n_pairs = n_members * (n_members - 1) // 2
    rows = members[rng.choice(n_members, size=min(n_members, SAMPLED_ROWS), replace=False)]
    if n_pairs < 4 * size or n_members < 4 * len(rows):
        return -np.inf
    contiguous = members[-1] - members[0] + 1 == n_members    # a group's rows in group order
    gallery = unit[members[0]:members[-1] + 1] if contiguous else unit[members]
    scores = unit[rows] @ gallery.T
    impostor = label_codes[rows][:, None] != label_codes[members][None, :]
    scores = scores[impostor]
    fraction = 2.0 * size / n_pairs
    if len(scores) * fraction < 200:          # too few sampled scores above the floor
        return -np.inf
    return float(np.quantile(scores, 1.0 - fraction))


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
