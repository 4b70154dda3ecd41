"""Exact Recall@K of embeddings under cosine similarity, computed in blocks of the similarity matrix.

Definitions (every function below follows them):
* Similarity is cosine: each row is L2-normalised in float32. An all-zero row stays zero (its norm is
  guarded by a tiny minimum), so its similarity to every image is 0, never NaN.
* Two galleries per query, the query itself never in either:
  - whole gallery ("mixed"): every other eval image, of every group. The `recall@k` of the overall
    entry AND of every group entry use it: a group's figure is the recall of that group's queries
    ranked against everyone, so confusions with other groups count against the group, and figures
    of groups of different sizes are comparable.
  - within group: the other images of the query's own group (the original's and RFW's protocol),
    reported as `recall@k_within`. For the overall entry both galleries are the same.
* A query whose identity has no other image in the gallery cannot be answered: it is skipped and
  counted in `n_skipped` (whole gallery), not in `n_queries` (`n_queries_within` for the group gallery).
  `n_identities` counts the identities with at least one answerable query.
* The gallery is ranked by similarity, highest first; exact ties are broken by index (position in
  the input arrays): the image with the LOWER index ranks first. Recall@k of a query is 1 if one of
  the first k gallery images has the query's label, else 0. A k above the gallery size means the
  whole gallery.

The per-query first-hit positions (`QueryRanks`) are computed once, by one blocked pass over the
upper block triangle of the similarity matrix (core/block_top_k.py) that serves both galleries: the
rows are taken in group order, so the within-group gallery of a block's rows is the rectangles where
rows and columns share a group (no second product), and ties are broken by the input index. Every
recall figure, and the bootstrap intervals (core/intervals.py), are derived from the ranks without
ranking again.

"Exact" means no approximation: `recall_at_k` returns what a full sort of every row of the float32
similarity matrix under (-similarity, index) returns. The float32 products come from BLAS; a product
computed inside a block could in principle differ in its last bit from the same product computed in
a full-matrix call, so two gallery images whose similarities differ by ~1e-7 could swap against
another implementation. Exact duplicates (the ties that happen in practice) tie in both.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from core.block_top_k import rank_block, similarity_blocks
from core.features import OVERALL

# 2048 x 2048 float32 similarities = 16 MiB per block: large enough for BLAS to run at full speed,
# small enough that a block stays cheap to scan.
DEFAULT_CHUNK_SIZE = 2048
# Row slices for the brute force's argpartition, so its int64 output is not a second N x N array.
_BRUTE_FORCE_ROWS = 1024


# Called after each block's ranking work with (row offset, column offset, block); the block may be
# modified by the callback (core/verification.py counts pair scores from the same blocks).
BlockVisitor = Callable[..., None]
# (row offset, column offset) -> the score below which the visitor needs no entry of that block.
BlockFloor = Callable[[int, int], Optional[float]]


@dataclasses.dataclass(frozen=True)
class QueryRanks:
    """Per-query ranking results, computed once and reused by every figure and resample.

    `mixed[i]` / `within[i]`: 0-based position of query i's first same-label image in its whole /
    within-group gallery ranking; `k_max` when it is not among the first `k_max`; -1 when the query
    cannot be answered in that gallery. Without groups `within` is `mixed`."""
    labels: np.ndarray
    groups: Optional[np.ndarray]
    k_max: int
    mixed: np.ndarray
    within: np.ndarray

    def scopes(self) -> List[Tuple[str, np.ndarray]]:
        """[(OVERALL, all indices), (group, its member indices)...], groups sorted by name."""
        scopes = [(OVERALL, np.arange(len(self.labels)))]
        if self.groups is not None:
            scopes += list(_group_members(self.groups))
        return scopes

    def summary(self, ks: Sequence[int]) -> Dict[str, Dict]:
        """{scope: {"n_queries", "n_skipped", "n_identities", "recall@<k>"..., "n_queries_within",
        "n_identities_within", "recall@<k>_within"...}} with plain Python numbers; a recall is None
        when its gallery answers no query of the scope."""
        ks = sorted({int(k) for k in ks})
        if ks[-1] > self.k_max:
            raise ValueError(f"k {ks[-1]} above the k_max {self.k_max} these ranks were computed for")
        result = {}
        for name, members in self.scopes():
            entry = {}
            # The overall scope's own "group" is the whole gallery: its two figures coincide.
            within = self.mixed if name == OVERALL else self.within
            for suffix, ranks in (("", self.mixed[members]), ("_within", within[members])):
                answerable = ranks >= 0
                n_queries = int(answerable.sum())
                if suffix:
                    entry["n_queries_within"] = n_queries
                else:
                    entry["n_queries"] = n_queries
                    entry["n_skipped"] = int(len(members) - n_queries)
                entry[f"n_identities{suffix}"] = int(len(np.unique(self.labels[members][answerable])))
                for k in ks:
                    hits = np.count_nonzero(answerable & (ranks < k))
                    entry[f"recall@{k}{suffix}"] = float(hits / n_queries) if n_queries else None
            result[name] = entry
        return result


def recall_at_k(embeddings, labels, groups=None, ks: Sequence[int] = (1,),
                chunk_size: Optional[int] = None) -> Dict[str, Dict]:
    """Recall@k for each k in `ks`, overall and (when `groups` is given) per group, whole-gallery
    (`recall@k`) and within-group (`recall@k_within`); see `QueryRanks.summary` for the keys.

    embeddings [N, D] float, labels [N] int, groups [N] str or None.

    The similarity matrix is symmetric, so only the blocks on and above the block diagonal are
    multiplied; block (i, j) updates the running top-k of the rows of block i and, read column-wise,
    of the rows of block j, and inside the rectangles where both lie in one group (the rows taken in
    group order), the within-group lists. Extra memory is O(chunk_size * N): one chunk x chunk
    block and the [N, k] running lists, never N x N (plus the float32 unit rows, N x D).
    """
    unit, labels, groups, ks, order = checked_inputs(embeddings, labels, groups, ks,
                                                     in_group_order=True)
    # The figures count queries per scope: the same in any row order.
    return first_hit_ranks(unit, labels, groups, max(ks), chunk_size, ids=order).summary(ks)


def first_hit_ranks(unit: np.ndarray, labels: np.ndarray, groups: Optional[np.ndarray], k_max: int,
                    chunk_size: Optional[int] = None, visit: Optional[BlockVisitor] = None,
                    floor: Optional[BlockFloor] = None,
                    ids: Optional[np.ndarray] = None) -> QueryRanks:
    """`QueryRanks` of inputs from `checked_inputs`, from ONE blocked pass over the upper block
    triangle: each block serves the whole gallery of its rows and columns and, read inside the
    rectangles where both lie in one group, the within-group gallery. That needs each group's rows
    contiguous, so rows not in group order (`group_order`) are ranked in that order and the ranks
    mapped back; a `visit` (which sees block offsets) then refuses them: its caller puts the rows
    in group order itself and passes `ids`, each row's position in the caller's input, by which
    ties are broken and which `ranks_in_input_order` maps the result back with.

    `floor(i0, j0)`, when given, is a score at or below which the visitor needs no entry of the
    block: its impostor entries at or above it are then found in the ranking's pass over the block
    (`BlockHits`) and go to `visit(i0, j0, block, hits)` (hits None when too many entries reach
    the floor); without it `visit(i0, j0, block)`."""
    chunk = _chunk_size(chunk_size)
    order = group_order(groups)
    if order is None:
        return ranked_pass(unit, labels, groups, k_max, chunk, visit, floor, ids)
    if visit is not None or ids is not None:   # block offsets or ids of rows we would reorder
        raise ValueError("a visited pass needs its rows in group order (core.recall.group_order)")
    return ranks_in_input_order(ranked_pass(unit[order], labels[order], groups[order], k_max, chunk,
                                            ids=order), order, labels, groups)


def group_order(groups: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """The stable permutation that makes each group's rows contiguous (groups by sorted name, input
    order inside a group); None when they already are (or there are no groups)."""
    if groups is None or len(groups) < 2:
        return None
    codes = np.unique(groups, return_inverse=True)[1].reshape(-1)
    if (codes[1:] >= codes[:-1]).all():
        return None
    return np.argsort(codes, kind="stable")


def ranks_in_input_order(ranks: QueryRanks, order: np.ndarray, labels: np.ndarray,
                         groups: Optional[np.ndarray]) -> QueryRanks:
    """`ranks` of the rows `order` of the input (row i is input row order[i]), for the input rows."""
    mixed, within = np.empty_like(ranks.mixed), np.empty_like(ranks.within)
    mixed[order], within[order] = ranks.mixed, ranks.within
    return QueryRanks(labels=labels, groups=groups, k_max=ranks.k_max, mixed=mixed, within=within)


def brute_force_recall_at_k(embeddings, labels, groups=None,
                            ks: Sequence[int] = (1,)) -> Dict[str, Dict]:
    """The straightforward reference: the full N x N similarity matrix, diagonal set to -inf, top-k of
    every row with np.argpartition. Same definitions and output as `recall_at_k`; within-group
    figures use each group's own sub-matrix."""
    unit, labels, groups, ks = checked_inputs(embeddings, labels, groups, ks)
    top_sims, top_idx = _full_matrix_top_k(unit, max(ks))
    mixed = _first_hits(labels, top_sims, top_idx)
    ranks = _with_within(labels, groups, max(ks), mixed,
                         lambda members: _full_matrix_top_k(unit[members], max(ks)))
    return ranks.summary(ks)


def per_row_loop_recall_at_1(embeddings, labels) -> Dict[str, Dict]:
    """Recall@1 the way a plain evaluation script does it: one query at a time, similarity to all,
    exclude itself, argmax (which returns the lowest index among ties). Overall entry only; kept
    as the benchmark's point of comparison."""
    unit, labels, _, _ = checked_inputs(embeddings, labels, None, (1,))
    images_per_label = Counter(labels.tolist())
    hits = skipped = 0
    for i in range(len(unit)):
        if images_per_label[labels[i].item()] < 2:
            skipped += 1
            continue
        sims = unit @ unit[i]
        sims[i] = -np.inf
        hits += int(labels[int(np.argmax(sims))] == labels[i])
    n_queries = len(unit) - skipped
    return {OVERALL: {"n_queries": n_queries, "n_skipped": skipped,
                       "recall@1": hits / n_queries if n_queries else None}}


# ----------------------------------------------------------------------------- inputs and output

def checked_inputs(embeddings, labels, groups, ks, in_group_order: bool = False):
    """(unit rows, labels, groups as str, sorted ks), or with `in_group_order` (unit rows, labels,
    groups, ks, order): the rows, labels and groups of the input rows `order` (`group_order`; None
    when already in group order), the rows gathered as they are copied."""
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {embeddings.shape}")
    if not (np.issubdtype(embeddings.dtype, np.floating) or np.issubdtype(embeddings.dtype, np.integer)):
        raise TypeError(f"embeddings must be real numbers, got dtype {embeddings.dtype}")
    n = len(embeddings)
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must be [N] = [{n}], got shape {labels.shape}")
    if groups is not None:
        groups = np.asarray(groups).astype(str)
        if groups.shape != (n,):
            raise ValueError(f"groups must be [N] = [{n}], got shape {groups.shape}")
        if OVERALL in groups:
            raise ValueError(f"no group may be named {OVERALL!r} (it would replace that entry)")
    if any(int(k) != k for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    if not in_group_order:
        return _unit_rows(embeddings), labels, groups, ks
    order = group_order(groups)
    if order is None:
        return _unit_rows(embeddings), labels, groups, ks, None
    return _unit_rows(embeddings, order), labels[order], groups[order], ks, order


def _unit_rows(embeddings: np.ndarray, order: Optional[np.ndarray] = None) -> np.ndarray:
    """float32 rows (the rows `order` when given) scaled to unit L2 norm; zero rows stay zero."""
    if order is None:
        unit = np.array(embeddings, dtype=np.float32, order="C", copy=True)
    else:
        unit = np.ascontiguousarray(embeddings[order], dtype=np.float32)   # one copy when float32
    if not np.isfinite(unit).all():
        raise ValueError("embeddings contain NaN or infinity (or values beyond float32 range)")
    # Norms in float64 so that large (but finite) values do not overflow when squared.
    norms = np.sqrt(np.einsum("ij,ij->i", unit, unit, dtype=np.float64))
    unit *= (1.0 / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32)[:, None]
    return unit


def _chunk_size(chunk_size: Optional[int]) -> int:
    chunk = DEFAULT_CHUNK_SIZE if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")
    return chunk


def _with_within(labels, groups, k_max, mixed, top_k_of) -> QueryRanks:
    within = mixed
    if groups is not None:
        within = np.full(len(labels), -1, dtype=np.int64)
        for _, members in _group_members(groups):
            # Members keep their input order, so "lower index wins" means the same inside a group.
            top_sims, top_idx = top_k_of(members)
            within[members] = _first_hits(labels[members], top_sims, top_idx)
    return QueryRanks(labels=labels, groups=groups, k_max=k_max, mixed=mixed, within=within)


def _group_members(groups: np.ndarray) -> Iterator[Tuple[str, np.ndarray]]:
    names, codes = np.unique(groups, return_inverse=True)
    by_code = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=len(names)))
    for name, members in zip(names, np.split(by_code, bounds[:-1])):
        yield str(name), members


def _first_hits(labels: np.ndarray, top_sims: np.ndarray, top_idx: np.ndarray,
                gallery_labels: Optional[np.ndarray] = None) -> np.ndarray:
    """Per query, the position of the first same-label image in its ranked top list (k_max if none),
    -1 if its identity has no other image in the gallery (`labels`: the queries' labels, which are
    the gallery's). `gallery_labels[id]`: the label of a listed id (default `labels`). Entries at
    -inf are padding or the query itself (only present when the gallery is smaller than k) and
    never count."""
    n = len(labels)
    _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    answerable = counts[codes.reshape(-1)] > 1 if n else np.zeros(0, bool)
    real = np.isfinite(top_sims)
    lookup = labels if gallery_labels is None else gallery_labels
    hit = real & (lookup[np.where(real, top_idx, 0)] == labels[:, None])
    first_hit = np.where(hit.any(axis=1), hit.argmax(axis=1), hit.shape[1])
    return np.where(answerable, first_hit, -1).astype(np.int64)


# ----------------------------------------------------------------------------- the blocked pass

def ranked_pass(unit: np.ndarray, labels: np.ndarray, groups: Optional[np.ndarray], k_max: int,
                chunk: int, visit: Optional[BlockVisitor] = None, floor: Optional[BlockFloor] = None,
                ids: Optional[np.ndarray] = None) -> QueryRanks:
    """`first_hit_ranks` of rows already in group order; the ranks are those of these rows, ties
    broken by `ids` (default: the row positions)."""
    n = len(unit)
    ids = np.arange(n) if ids is None else np.asarray(ids, dtype=np.int64)
    id_labels = np.empty_like(labels)
    id_labels[ids] = labels
    spans = _group_spans(groups)
    mixed_lists = _top_lists(n, k_max)
    within_lists = _top_lists(n, k_max) if spans else None
    group_bounds = _row_group_bounds(spans) if spans else None
    label_codes = np.unique(labels, return_inverse=True)[1].reshape(-1) if floor is not None else None
    for i0, j0, sims in similarity_blocks(unit, chunk):
        hits_floor = None if floor is None else floor(i0, j0)
        hits = rank_block(sims, i0, j0, ids, mixed_lists, within_lists, group_bounds, hits_floor,
                          label_codes)
        if visit is not None:
            if floor is None:
                visit(i0, j0, sims)
            else:
                visit(i0, j0, sims, hits)
    mixed = _first_hits(labels, *mixed_lists, gallery_labels=id_labels)
    within = mixed
    if spans:
        within = np.full(n, -1, dtype=np.int64)
        for start, stop in spans:
            part = slice(start, stop)
            within[part] = _first_hits(labels[part], within_lists[0][part], within_lists[1][part],
                                       gallery_labels=id_labels)
    return QueryRanks(labels=labels, groups=groups, k_max=k_max, mixed=mixed, within=within)


def _top_lists(n: int, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Empty running top-k lists: similarities -inf, ids n (after every real id)."""
    return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), n, dtype=np.int64)


def _group_spans(groups: Optional[np.ndarray]) -> List[Tuple[int, int]]:
    """[(start, stop)] of each group's rows (in group order); [] without groups."""
    if groups is None:
        return []
    sizes = np.unique(groups, return_counts=True)[1]
    stops = np.cumsum(sizes)
    return [(int(a), int(b)) for a, b in zip(stops - sizes, stops)]


def _row_group_bounds(spans: List[Tuple[int, int]]) -> Tuple[np.ndarray, np.ndarray]:
    """(start, stop) of each row's group span, per row (rows in group order)."""
    sizes = [stop - start for start, stop in spans]
    starts = np.repeat([start for start, _ in spans], sizes).astype(np.int64)
    stops = np.repeat([stop for _, stop in spans], sizes).astype(np.int64)
    return starts, stops


# ----------------------------------------------------------------------------- brute force

def _full_matrix_top_k(unit: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    n = len(unit)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    top_sims = np.full((n, k), -np.inf, dtype=np.float32)
    top_idx = np.full((n, k), n, dtype=np.int64)
    if n <= k + 1:  # too few columns to partition: rank whole rows (stable = lower index first)
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        top_sims[:, :order.shape[1]] = np.take_along_axis(sims, order, axis=1)
        top_idx[:, :order.shape[1]] = order
        return top_sims, top_idx
    kth = n - k - 1
    for r0 in range(0, n, _BRUTE_FORCE_ROWS):
        block = sims[r0:r0 + _BRUTE_FORCE_ROWS]
        # Columns: the (k+1)-th largest, then the k largest in no particular order.
        part = np.argpartition(block, kth, axis=1)[:, kth:]
        vals = np.take_along_axis(block, part, axis=1)
        idx = part[:, 1:]
        # argpartition splits ties at the top-k boundary arbitrarily; those rows are sorted whole.
        for r in np.flatnonzero(vals[:, 1:].min(axis=1) == vals[:, 0]):
            idx[r] = np.argsort(-block[r], kind="stable")[:k]
        vals = np.take_along_axis(block, idx, axis=1)
        order = np.lexsort((idx, -vals), axis=-1)
        top_sims[r0:r0 + len(block)] = np.take_along_axis(vals, order, axis=1)
        top_idx[r0:r0 + len(block)] = np.take_along_axis(idx, order, axis=1)
    return top_sims, top_idx
