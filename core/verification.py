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

How the pairs are counted without the N x N matrix, and the bootstrap's sums:
core/pair_counter.py (the counts) and core/pair_selection.py (the two ways to select the
impostor scores at the thresholds).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from core import pair_counter, recall
from core.block_top_k import similarity_blocks
from core.false_matches import EXACT_UNIT_PAIRS  # noqa: F401 (the exact bootstrap's budget)
from core.pair_counter import (  # noqa: F401
    SUMMARY_KEYS,
    VerificationResult,
    _PairCounter,
    far_key,
    fmr_differential,
    skewed_error_ratio,
)
from core.pair_selection import _RadixCounter, _SelectionCounter

DEFAULT_TARGET_FMR = 1e-3
DEFAULT_FARS = (1e-2, 1e-3, 1e-4)




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
    return sum(kept_sizes) <= (pair_counter.KEPT_PER_IMAGE * n
                               + pair_counter.DET_MIN_KEPT * len(kept_sizes))


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
