"""The error gallery's pairs: over all images and per group, the k highest-scoring impostor pairs
(the false matches a deployment would make first) and the k lowest-scoring genuine pairs (the users
it would reject first), from the embeddings the evaluation already has (no second embedding pass).

Pairs and scores are core/verification.py's: unordered pairs {i, j}, scored by the cosine of the
L2-normalised float32 embeddings in the same blocks (core.recall.similarity_blocks); a group's
pairs have both images in the group, the overall scope's (core.features.OVERALL, as the overall
FMR counts them) any two images, so its impostor pairs include those across groups: the people of
two groups a model confuses. Ties are broken by (i, j), so the selection is deterministic. One pass
over the upper block triangle; memory is one block plus 2 k pairs per scope.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from core import recall
from core.features import OVERALL

IMPOSTOR, GENUINE = "impostor", "genuine"
Pair = Tuple[float, int, int]    # (score, i, j), i < j


def _best_index(values: np.ndarray, k: int, highest: bool) -> np.ndarray:
    """Indices of the k highest (or lowest) `values`, every tie at the k-th included (at most k
    values: all of them), by partition: no sort of the whole array."""
    if len(values) <= k:
        return np.arange(len(values))
    if highest:
        return np.flatnonzero(values >= np.partition(values, len(values) - k)[len(values) - k])
    return np.flatnonzero(values <= np.partition(values, k - 1)[k - 1])


def _keep(best: List[Pair], scores: np.ndarray, rows: np.ndarray, cols: np.ndarray, k: int,
          highest: bool) -> List[Pair]:
    """The k best of `best` and the candidates: highest (or lowest) score, then (i, j)."""
    if len(scores) > k:      # only the block's own k best can enter
        near = _best_index(scores, k, highest)
        key = -scores[near] if highest else scores[near]
        order = near[np.lexsort((cols[near], rows[near], key))][:k]
        scores, rows, cols = scores[order], rows[order], cols[order]
    merged = best + [(float(s), int(i), int(j)) for s, i, j in zip(scores, rows, cols)]
    merged.sort(key=lambda p: (-p[0] if highest else p[0], p[1], p[2]))
    return merged[:k]


def _block_best(sims: np.ndarray, mask: np.ndarray, k: int, highest: bool):
    """(scores, rows, cols) of the block's k best pairs under `mask` (ties at the k-th all kept),
    found on one masked copy of the block without listing every pair under the mask (all the
    block's impostor pairs would take 16 bytes each)."""
    values = np.where(mask, sims, -np.inf if highest else np.inf).ravel()
    index = (_best_index(values, k, highest) if np.count_nonzero(mask) > k
             else np.flatnonzero(mask.ravel()))
    rows, cols = np.divmod(index, sims.shape[1])
    return values[index].astype(np.float64), rows, cols


def error_pairs(embeddings, labels, groups, k: int,
                chunk_size: Optional[int] = None) -> Dict[str, Dict[str, List[Pair]]]:
    """{scope: {"impostor": [(score, i, j)] highest first, "genuine": [...] lowest first}}, at
    most k each, the overall scope first, then every group; {} when k is 0."""
    if k <= 0:
        return {}
    unit, labels, groups, _ = recall.checked_inputs(embeddings, labels, groups, (1,))
    names, codes = np.unique(np.asarray(groups), return_inverse=True)
    scopes = [OVERALL] + list(range(len(names)))
    best = {(scope, kind): [] for scope in scopes for kind in (IMPOSTOR, GENUINE)}
    for i0, j0, sims in recall.similarity_blocks(unit, recall._chunk_size(chunk_size)):
        rows = np.arange(i0, i0 + sims.shape[0])[:, None]
        cols = np.arange(j0, j0 + sims.shape[1])[None, :]
        upper = cols > rows
        genuine = labels[rows] == labels[cols]
        scores, r, c = _block_best(sims, upper & ~genuine, k, True)
        best[(OVERALL, IMPOSTOR)] = _keep(best[(OVERALL, IMPOSTOR)], scores, r + i0, c + j0, k,
                                          True)
        same_group = codes[rows] == codes[cols]
        for kind, highest, mask in ((IMPOSTOR, True, upper & same_group & ~genuine),
                                    (GENUINE, False, upper & genuine)):
            r, c = np.nonzero(mask)
            if not len(r):
                continue
            r_abs, c_abs = r + i0, c + j0
            scores = sims[r, c].astype(np.float64)
            if kind == GENUINE:      # few: every genuine pair is listed anyway
                best[(OVERALL, kind)] = _keep(best[(OVERALL, kind)], scores, r_abs, c_abs, k,
                                              highest)
            group_of = np.where(codes[r_abs] == codes[c_abs], codes[r_abs], -1)
            for g in np.unique(group_of[group_of >= 0]):
                sel = group_of == g
                best[(g, kind)] = _keep(best[(g, kind)], scores[sel], r_abs[sel], c_abs[sel], k,
                                        highest)
    return {(OVERALL if scope == OVERALL else str(names[scope])):
            {kind: best[(scope, kind)] for kind in (IMPOSTOR, GENUINE)} for scope in scopes}
