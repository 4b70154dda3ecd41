"""Exact 1:1 verification at one global threshold, per group (the view of NIST FRVT's demographic
reports), computed in blocks of the similarity matrix like core/recall.py.

Definitions:
* Pairs: every unordered pair {i, j}, i != j, of eval images, scored by the cosine similarity of
  the L2-normalised float32 embeddings (the same block products as core/recall.py; the score of
  {i, j}, i < j, is entry (i, j) of the upper block triangle). Genuine: same label. Impostor:
  different labels.
* Scopes: "overall" holds every pair; group g holds the pairs with BOTH images in g. Pairs across
  groups count only overall.
* `threshold` = the k-th largest impostor score overall, k = ceil(target_fmr x impostor pairs).
  A pair matches when its score is >= the threshold. FMR = impostor pairs scoring >= threshold /
  impostor pairs; FNMR = genuine pairs scoring < threshold / genuine pairs. Ties at the threshold
  therefore count as matches, so the realised overall FMR is >= target_fmr (above it by the
  rounding of k and by impostor pairs tied with the k-th). No impostor pair: no threshold, and
  every rate is None; no genuine (impostor) pair in a scope: its FNMR (FMR) is None.
* `tar@far=<f>` of a scope: the scope's own threshold, the k_f-th largest impostor score of the
  scope with k_f = ceil(f x the scope's impostor pairs), and TAR = genuine pairs of the scope
  scoring >= it / genuine pairs. Reported only when k_f >= MIN_FALSE_ACCEPTS, i.e. the scope has at
  least MIN_FALSE_ACCEPTS / f impostor pairs (a threshold set by fewer impostor scores is one or
  two extreme scores); otherwise None.
* `fmr_differential` = max over groups of FMR_g / target_fmr (groups whose FMR is defined).
  `skewed_error_ratio` = max over groups of FNMR_g / min over groups of FNMR_g (groups whose FNMR is
  defined); 1.0 when every such FNMR is 0, None ("unbounded") when the minimum is 0 and the maximum
  is not. Both None with fewer than one group.
* `det` of a scope: (fmr, fnmr) points of its DET curve, at thresholds equal to the scope's own
  impostor scores: exact for FMRs up to the kept fraction (all impostor pairs when there are at
  most DET_MIN_KEPT, else at least the largest FAR of `fars`), never extrapolated.

Exactness without the N x N matrix, in one of two ways, both exact:
* Running selection (one pass; when the kept scores fit the budget, KEPT_PER_IMAGE x N plus
  DET_MIN_KEPT per scope): the impostor scores at and above the thresholds are kept
  (`_TopScores`: the largest K scores, where K = ceil(largest rate x impostor pairs) or
  DET_MIN_KEPT; each block only contributes its scores at or above the current K-th largest), ties
  at the cut kept as counts. K grows with N^2 x the largest rate, hence the budget.
* Radix selection (three passes; beyond the budget, e.g. N above about 51,000 with a FAR of 1e-2):
  float32 scores map to uint32 keys of the same order. Pass 1 counts impostor keys per scope by
  their top 16 bits (65,536 bins; genuine pairs are subtracted, their scores being known), which
  places every k-th largest score in one bin; pass 2 counts the low 16 bits inside those bins only,
  which gives each k-th largest score exactly; pass 3 counts, per identity and group, the impostor
  pairs at or above the global threshold. Extra memory is one block and a few 65,536-bin
  histograms per scope, whatever N is; the DET points then sit at the bins' lower edges (each point
  exact at its threshold; 128 bins per octave of the score).
Genuine scores are kept one per genuine pair (at most N x (m - 1) / 2 for m images per identity:
O(chunk x N) while no identity has more than `chunk` images). Either way the extra memory is
O(chunk x N): one block and its mask (O(chunk^2)) plus at most the budget.

Bootstrap (core/intervals.py): for each scope, per unit (identity within group) counts of genuine
pairs, false non-matches, impostor pairs and false matches at the threshold. A pair is attributed
to the units of both its images (a genuine pair of one unit counts twice for it, which leaves its
ratios unchanged); weighting a pair by w_a + w_b is the first-order form of the product weight
w_a x w_b that resampling identities gives it. The threshold is held fixed: the intervals cover
the sampling noise of the error rates at the operating point, not that of the threshold.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from core import recall
from core.features import OVERALL
from core.intervals import identity_units

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
SUMMARY_KEYS = ("target_fmr", "threshold", "fmr_differential", "skewed_error_ratio")


def far_key(far: float) -> str:
    """1e-3 -> "tar@far=1e-3"."""
    return "tar@far=" + re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{far:.0e}").replace("e+", "e")


@dataclasses.dataclass
class VerificationResult:
    """`summary`: the JSON-ready figures (see the module docstring), {"target_fmr", "threshold",
    "fmr_differential", "skewed_error_ratio", <scope>: {"n_genuine", "n_impostor", "fnmr", "fmr",
    "tar@far=..."..., "det": {"fmr": [...], "fnmr": [...]}}}. `unit_counts`: per scope, float64
    arrays over units ("genuine", "false_non_match", "impostor", "false_match") for the bootstrap.
    `unit_groups`: each unit's group code (core.intervals.identity_units)."""
    summary: Dict
    unit_counts: Dict[str, Dict[str, np.ndarray]]
    unit_groups: np.ndarray


def verification(embeddings, labels, groups=None, target_fmr: float = DEFAULT_TARGET_FMR,
                 fars: Sequence[float] = DEFAULT_FARS,
                 chunk_size: Optional[int] = None) -> VerificationResult:
    """The 1:1 figures alone (one blocked pass over the upper block triangle; three beyond the
    selection budget)."""
    unit, labels, groups, _ = recall.checked_inputs(embeddings, labels, groups, (1,))
    counter = _counter(labels, groups, target_fmr, fars, recall._chunk_size(chunk_size), unit)
    for i0, j0, sims in recall.similarity_blocks(unit, counter.chunk):
        counter.visit(i0, j0, sims)
    return _complete(counter, unit).finish()


def ranks_and_verification(embeddings, labels, groups=None, ks: Sequence[int] = (1,),
                           target_fmr: float = DEFAULT_TARGET_FMR,
                           fars: Sequence[float] = DEFAULT_FARS, chunk_size: Optional[int] = None
                           ) -> Tuple[recall.QueryRanks, VerificationResult]:
    """Recall ranks (core.recall.first_hit_ranks) and the 1:1 figures from ONE pass over the whole
    gallery's similarity blocks (plus the within-group passes of the ranks, and the two radix passes
    beyond the selection budget)."""
    unit, labels, groups, ks = recall.checked_inputs(embeddings, labels, groups, ks)
    counter = _counter(labels, groups, target_fmr, fars, recall._chunk_size(chunk_size), unit)
    ranks = recall.first_hit_ranks(unit, labels, groups, max(ks), counter.chunk, counter.visit)
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
    for i0, j0, sims in recall.similarity_blocks(unit, again.chunk):
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

    def pair_counts_at_least(self, threshold: float, n_groups: int):
        """(per-unit pairs >= threshold, the same for same-group pairs, same-group pairs per group)."""
        values, firsts, seconds = self._concatenated()
        n_units = len(self.tie_units)
        units_all, units_same = np.zeros(n_units), np.zeros(n_units)
        groups = np.zeros(n_groups, dtype=np.int64)
        sel = values >= threshold
        _count_pairs(self.units, self.group_codes, firsts[sel], seconds[sel], units_all, units_same,
                     groups)
        if self.tie_value >= threshold:
            units_all += self.tie_units
            units_same += self.tie_units_same
            groups += self.tie_groups
        return units_all, units_same, groups


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

        # Genuine pairs (i < j), ordered by the block that holds them.
        first, second = _genuine_pairs(self.label_codes)
        n_blocks = max(1, -(-n // self.chunk))
        keys = (first // self.chunk) * n_blocks + second // self.chunk
        order = np.argsort(keys, kind="stable")
        self.genuine_first, self.genuine_second = first[order], second[order]
        self.genuine_keys, self.n_blocks = keys[order], n_blocks
        self.genuine_scores = np.full(len(first), np.nan, dtype=np.float32)
        side = min(self.chunk, max(n, 1))
        self.mask_buf = recall.mask_buffer(side * side)

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

    def _impostors_at_least(self, i0: int, j0: int, sims: np.ndarray, floor: float):
        """(scores, first, second) of the block's impostor pairs (i < j) scoring >= floor."""
        mask = self.mask_buf[:sims.size].reshape(sims.shape)
        np.greater_equal(sims, floor, out=mask)
        rows, cols = recall.nonzero_positions(self.mask_buf, sims.size, sims.shape[1])
        if i0 == j0:                     # a diagonal block: each pair once, as (lower, higher)
            upper = rows < cols
            rows, cols = rows[upper], cols[upper]
        values = sims[rows, cols]
        first, second = rows + i0, cols + j0
        impostor = self.label_codes[first] != self.label_codes[second]
        return values[impostor], first[impostor], second[impostor]

    # The impostor side, per way of selecting.
    def complete(self, unit: np.ndarray) -> bool:
        raise NotImplementedError

    def _scope_threshold(self, g: Optional[int], k: int) -> float:
        """The k-th largest impostor score of the scope (g None: overall)."""
        raise NotImplementedError

    def _false_matches(self, threshold: float):
        """(per-unit impostor pairs >= threshold, the same for same-group pairs, same-group pairs
        >= threshold per group, all pairs >= threshold)."""
        raise NotImplementedError

    def _det_points(self, g: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
        """(thresholds, impostor pairs of the scope >= each), thresholds descending."""
        raise NotImplementedError

    def finish(self) -> VerificationResult:
        if np.isnan(self.genuine_scores).any():
            raise AssertionError("a genuine pair was not scored (blocks and pairs disagree)")
        n_groups = self.n_groups
        threshold = None
        if self.n_impostor:
            threshold = self._scope_threshold(None, math.ceil(self.target_fmr * self.n_impostor))
        genuine_groups = self.group_codes[self.genuine_first]
        genuine_same = genuine_groups == self.group_codes[self.genuine_second]
        genuine_ends = np.concatenate([self.units[self.genuine_first], self.units[self.genuine_second]])

        if threshold is not None:
            fm_units, fm_units_same, fm_groups, overall_false_matches = self._false_matches(threshold)
            non_match = self.genuine_scores < threshold
        else:
            fm_units, fm_units_same = np.zeros(self.n_units), np.zeros(self.n_units)
            fm_groups, overall_false_matches = np.zeros(n_groups, dtype=np.int64), 0
            non_match = np.zeros(len(self.genuine_scores), dtype=bool)
        twice = np.concatenate([non_match, non_match])

        summary = {"target_fmr": self.target_fmr, "threshold": threshold}
        unit_counts = {}
        scopes = [(OVERALL, None)] + [(name, g) for g, name in enumerate(self.group_names)]
        for name, g in scopes:
            if g is None:
                genuine_sel = np.ones(len(self.genuine_scores), dtype=bool)
                n_genuine, n_false_match = self.n_genuine, overall_false_matches
                in_scope = np.ones(self.n_units, dtype=bool)
                impostor_units, fm = self.unit_impostor, fm_units
            else:
                genuine_sel = genuine_same & (genuine_groups == g)
                n_genuine, n_false_match = int(self.group_genuine[g]), int(fm_groups[g])
                in_scope = self.unit_groups == g
                impostor_units, fm = self.unit_impostor_group, fm_units_same
            n_impostor = self.scope_impostors(g)
            scores = np.sort(self.genuine_scores[genuine_sel].astype(np.float64))
            n_false_non_match = int(non_match[genuine_sel].sum())
            entry = {"n_genuine": n_genuine, "n_impostor": n_impostor,
                     "fnmr": (n_false_non_match / n_genuine
                              if threshold is not None and n_genuine else None),
                     "fmr": n_false_match / n_impostor if threshold is not None and n_impostor else None}
            for far in self.fars:
                k = math.ceil(far * n_impostor)
                entry[far_key(far)] = (
                    float((len(scores) - np.searchsorted(scores, self._scope_threshold(g, k), "left"))
                          / len(scores))
                    if k >= MIN_FALSE_ACCEPTS and len(scores) else None)
            entry["det"] = self._det(g, scores, n_impostor)
            summary[name] = entry
            both = np.concatenate([genuine_sel, genuine_sel])
            unit_counts[name] = {
                "genuine": np.bincount(genuine_ends[both], minlength=self.n_units).astype(np.float64),
                "false_non_match": np.bincount(genuine_ends[both & twice],
                                               minlength=self.n_units).astype(np.float64),
                "impostor": np.where(in_scope, impostor_units, 0.0),
                "false_match": np.where(in_scope, fm, 0.0)}
        groups = [summary[name] for name in self.group_names]
        summary["fmr_differential"] = fmr_differential([e["fmr"] for e in groups], self.target_fmr)
        summary["skewed_error_ratio"] = skewed_error_ratio([e["fnmr"] for e in groups])
        return VerificationResult(summary, unit_counts, self.unit_groups)

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

    def visit(self, i0: int, j0: int, sims: np.ndarray):
        self._visit_genuine(i0, j0, sims)
        shared = self.block_groups[i0 // self.chunk] & self.block_groups[j0 // self.chunk]
        floor = min([self.overall.floor] + [s.floor for g, s in enumerate(self.by_group) if shared[g]])
        values, first, second = self._impostors_at_least(i0, j0, sims, floor)
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
        units_all, units_same, groups = self.overall.pair_counts_at_least(threshold, self.n_groups)
        return units_all, units_same, groups, int(self.overall.count_at_least([threshold])[0])

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

    def visit(self, i0: int, j0: int, sims: np.ndarray):
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
            wanted.add((0, math.ceil(self.target_fmr * self.n_impostor)))
        for g in [None] + list(range(len(self.group_names))):
            for far in self.fars:
                k = math.ceil(far * self.scope_impostors(g))
                if k >= MIN_FALSE_ACCEPTS:
                    wanted.add((0 if g is None else g + 1, k))
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
            for i0, j0, sims in recall.similarity_blocks(unit, self.chunk):
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
        # Pass 3: the pairs at or above the global threshold, per unit and group.
        self.false_matches = None
        if self.n_impostor:
            threshold = self.kth[0, math.ceil(self.target_fmr * self.n_impostor)]
            units_all, units_same = np.zeros(self.n_units), np.zeros(self.n_units)
            groups, total = np.zeros(self.n_groups, dtype=np.int64), 0
            for i0, j0, sims in recall.similarity_blocks(unit, self.chunk):
                _, first, second = self._impostors_at_least(i0, j0, sims, np.float32(threshold))
                _count_pairs(self.units, self.group_codes, first, second, units_all, units_same, groups)
                total += len(first)
            self.false_matches = (units_all, units_same, groups, total)
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
        return self.false_matches

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
    """max FNMR_g / min FNMR_g over the defined values: 1.0 when all are 0, None when the minimum
    is 0 and the maximum is not (unbounded) or nothing is defined."""
    defined = [f for f in fnmrs if f is not None and np.isfinite(f)]
    if not defined:
        return None
    low, high = min(defined), max(defined)
    if low == 0:
        return 1.0 if high == 0 else None
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
    scores = unit[rows] @ unit[members].T
    impostor = label_codes[rows][:, None] != label_codes[members][None, :]
    scores = scores[impostor]
    fraction = 2.0 * size / n_pairs
    if len(scores) * fraction < 200:          # too few sampled scores above the floor
        return -np.inf
    return float(np.quantile(scores, 1.0 - fraction))


def _kept(n_impostor: int, largest_rate: float) -> int:
    return int(min(n_impostor, max(math.ceil(largest_rate * n_impostor), DET_MIN_KEPT)))


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
