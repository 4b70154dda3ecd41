"""The error gallery's pairs: per group, the k highest-scoring impostor pairs (the false matches
a deployment would make first) and the k lowest-scoring genuine pairs (the users it would reject
first), from the embeddings the evaluation already has (no second embedding pass).

Pairs and scores are core/verification.py's: unordered pairs {i, j} with both images in the group,
scored by the cosine of the L2-normalised float32 embeddings in the same blocks
(core.recall.similarity_blocks). Ties are broken by (i, j), so the selection is deterministic.
One pass over the upper block triangle; memory is one block plus 2 k pairs per group.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from core import recall

IMPOSTOR, GENUINE = "impostor", "genuine"
Pair = Tuple[float, int, int]    # (score, i, j), i < j


def _keep(best: List[Pair], scores: np.ndarray, rows: np.ndarray, cols: np.ndarray, k: int,
          highest: bool) -> List[Pair]:
    """The k best of `best` and the candidates: highest (or lowest) score, then (i, j)."""
    if len(scores) > k:      # only the block's own k best can enter
        order = np.lexsort((cols, rows, -scores if highest else scores))[:k]
        scores, rows, cols = scores[order], rows[order], cols[order]
    merged = best + [(float(s), int(i), int(j)) for s, i, j in zip(scores, rows, cols)]
    merged.sort(key=lambda p: (-p[0] if highest else p[0], p[1], p[2]))
    return merged[:k]


def error_pairs(embeddings, labels, groups, k: int,
                chunk_size: Optional[int] = None) -> Dict[str, Dict[str, List[Pair]]]:
    """{group: {"impostor": [(score, i, j)] highest first, "genuine": [...] lowest first}}, at
    most k each; {} when k is 0."""
    if k <= 0:
        return {}
    unit, labels, groups, _ = recall.checked_inputs(embeddings, labels, groups, (1,))
    names, codes = np.unique(np.asarray(groups), return_inverse=True)
    best = {(g, kind): [] for g in range(len(names)) for kind in (IMPOSTOR, GENUINE)}
    for i0, j0, sims in recall.similarity_blocks(unit, recall._chunk_size(chunk_size)):
        rows = np.arange(i0, i0 + sims.shape[0])[:, None]
        cols = np.arange(j0, j0 + sims.shape[1])[None, :]
        upper = cols > rows
        same_group = codes[rows] == codes[cols]
        genuine = labels[rows] == labels[cols]
        for kind, highest, mask in ((IMPOSTOR, True, upper & same_group & ~genuine),
                                    (GENUINE, False, upper & same_group & genuine)):
            r, c = np.nonzero(mask)
            if not len(r):
                continue
            r_abs, c_abs = r + i0, c + j0
            group_of = codes[r_abs]
            for g in np.unique(group_of):
                sel = group_of == g
                best[(g, kind)] = _keep(best[(g, kind)], sims[r[sel], c[sel]].astype(np.float64),
                                        r_abs[sel], c_abs[sel], k, highest)
    return {str(names[g]): {kind: best[(g, kind)] for kind in (IMPOSTOR, GENUINE)}
            for g in range(len(names))}
