"""The two ways core/pair_counter.py's counts find the impostor scores at the thresholds: a
running selection of the largest scores (one pass, within a memory budget) and radix selection
over the float32 score keys (three passes, any N). The module docstring of core/pair_counter.py
says when each is used."""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from core.block_top_k import BlockHits, similarities, similarity_blocks
from core.false_matches import _count_pairs, _FalseMatches
from core.pair_counter import (
    DET_POINTS,
    MIN_FALSE_ACCEPTS,
    SAMPLED_ROWS,
    _allowed,
    _just_above,
    _PairCounter,
    _rank,
)


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
    scores = similarities(unit[rows], gallery)
    impostor = label_codes[rows][:, None] != label_codes[members][None, :]
    scores = scores[impostor]
    fraction = 2.0 * size / n_pairs
    if len(scores) * fraction < 200:          # too few sampled scores above the floor
        return -np.inf
    return float(np.quantile(scores, 1.0 - fraction))
