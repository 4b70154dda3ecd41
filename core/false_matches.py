"""False matches per pair of identities (units), for the exact identity bootstrap of the FMR
(core/pair_counter.py's module docstring): sparse counts while there are at most EXACT_UNIT_PAIRS
pairs of units with a false match, else per-unit counts for the first-order weights."""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

# Unit pairs (of two identities) with a false match whose exact product weights the bootstrap may
# keep (about 24 B each as sparse counts, and resamples x pairs multiply-adds per statistic): beyond
# it the FMR bootstrap takes the first-order weights (the module docstring).
EXACT_UNIT_PAIRS = 2_000_000


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
