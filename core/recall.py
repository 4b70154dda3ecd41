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
whole gallery and one per group for the within-group gallery; every recall figure, and the bootstrap
intervals (core/intervals.py), are derived from them without ranking again.

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

from core.features import OVERALL

# 2048 x 2048 float32 similarities = 16 MiB per block: large enough for BLAS to run at full speed,
# small enough that the block and its candidate mask stay cheap to scan.
DEFAULT_CHUNK_SIZE = 2048
# Each block's k-th largest similarity per query is bounded from below from this many slice maxima.
_BOUND_SLICES = 64
# Row slices for the brute force's argpartition, so its int64 output is not a second N x N array.
_BRUTE_FORCE_ROWS = 1024
# Width of the packed sort keys in _merge_candidates (tests set it to 0 to exercise the lexsort path).
_KEY_BITS = 64


# Called after each block's ranking work with (row offset, column offset, block); the block may be
# modified by the callback (core/verification.py counts pair scores from the same blocks).
BlockVisitor = Callable[[int, int, np.ndarray], None]


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
    of the rows of block j. Extra memory is O(chunk_size * N): one chunk x chunk block, its mask and
    the [N, k] running lists, never N x N.
    """
    unit, labels, groups, ks = checked_inputs(embeddings, labels, groups, ks)
    return first_hit_ranks(unit, labels, groups, max(ks), chunk_size).summary(ks)


def first_hit_ranks(unit: np.ndarray, labels: np.ndarray, groups: Optional[np.ndarray], k_max: int,
                    chunk_size: Optional[int] = None,
                    visit: Optional[BlockVisitor] = None) -> QueryRanks:
    """`QueryRanks` of inputs from `checked_inputs`: one blocked pass over the whole gallery (its
    blocks also go to `visit`), then one per group for the within-group gallery."""
    chunk = _chunk_size(chunk_size)
    top_sims, top_idx = _chunked_top_k(unit, k_max, chunk, visit)
    mixed = _first_hits(labels, top_sims, top_idx)
    return _with_within(labels, groups, k_max, mixed,
                        lambda members: _chunked_top_k(unit[members], k_max, chunk))


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

def checked_inputs(embeddings, labels, groups, ks):
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
    return _unit_rows(embeddings), labels, groups, ks


def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit L2 norm; zero rows stay zero."""
    unit = np.array(embeddings, dtype=np.float32, order="C", copy=True)
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


def _first_hits(labels: np.ndarray, top_sims: np.ndarray, top_idx: np.ndarray) -> np.ndarray:
    """Per query, the position of the first same-label image in its ranked top list (k_max if none),
    -1 if its identity has no other image in the gallery. Entries at -inf are padding or the query
    itself (only present when the gallery is smaller than k) and never count."""
    n = len(labels)
    _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    answerable = counts[codes.reshape(-1)] > 1 if n else np.zeros(0, bool)
    real = np.isfinite(top_sims)
    hit = real & (labels[np.where(real, top_idx, 0)] == labels[:, None])
    first_hit = np.where(hit.any(axis=1), hit.argmax(axis=1), hit.shape[1])
    return np.where(answerable, first_hit, -1).astype(np.int64)


# ----------------------------------------------------------------------------- chunked top-k

def similarity_blocks(unit: np.ndarray, chunk: int) -> Iterator[Tuple[int, int, np.ndarray]]:
    """(row offset, column offset, block) for every block on or above the block diagonal of
    unit @ unit.T, row blocks in order; the diagonal of a diagonal block is -inf. The block lives in
    one reused buffer: use it before asking for the next."""
    n = len(unit)
    side = min(chunk, n)
    block_buf = np.empty(side * side, dtype=np.float32)
    for i0 in range(0, n, chunk):
        rows_i = unit[i0:i0 + chunk]
        for j0 in range(i0, n, chunk):
            rows_j = unit[j0:j0 + chunk]
            sims = block_buf[:len(rows_i) * len(rows_j)].reshape(len(rows_i), len(rows_j))
            np.matmul(rows_i, rows_j.T, out=sims)
            if j0 == i0:
                np.fill_diagonal(sims, -np.inf)  # the query is not in its own gallery
            yield i0, j0, sims


def _chunked_top_k(unit: np.ndarray, k: int, chunk: int,
                   visit: Optional[BlockVisitor] = None) -> Tuple[np.ndarray, np.ndarray]:
    """For every row, its k most similar other rows as ([N, k] similarities, [N, k] indices), ranked by
    (-similarity, index). Missing entries (gallery smaller than k) are -inf. Each block is handed
    to `visit` once its ranking work is done."""
    n = len(unit)
    top_sims = np.full((n, k), -np.inf, dtype=np.float32)
    top_idx = np.full((n, k), n, dtype=np.int64)  # n sorts after every real index
    side = min(chunk, n)
    mask_buf = mask_buffer(side * side)
    for i0, j0, sims in similarity_blocks(unit, chunk):
        rows_i, rows_j = slice(i0, i0 + sims.shape[0]), slice(j0, j0 + sims.shape[1])
        _merge_block(top_sims[rows_i], top_idx[rows_i], sims, j0, True, mask_buf)
        if j0 != i0:  # the same block, read by columns, serves the rows of block j
            _merge_block(top_sims[rows_j], top_idx[rows_j], sims, i0, False, mask_buf)
        if visit is not None:
            visit(i0, j0, sims)
    return top_sims, top_idx


def _merge_block(top_sims, top_idx, sims, gallery_offset, queries_are_rows, mask_buf):
    """Merge one similarity block into the running top-k of its queries (rows or columns of `sims`).

    Only entries that can still enter a top-k are looked at: an entry below the query's current k-th
    best, or below a lower bound of the k-th best within this block, has k better entries already.
    Both comparisons keep equal values (>=), so ties reach the merge, where the index decides."""
    k = top_sims.shape[1]
    mask = mask_buf[:sims.size].reshape(sims.shape)

    def select(threshold):
        np.greater_equal(sims, threshold[:, None] if queries_are_rows else threshold[None, :], out=mask)
        return np.count_nonzero(mask)

    # After a query's first block its running k-th best prunes almost everything (~k/b candidates
    # per query in its b-th block); only while it is weak (-inf at first) is the block bound worth it.
    if select(top_sims[:, -1]) > 2 * k * len(top_sims):
        select(np.maximum(top_sims[:, -1], _kth_largest_lower_bound(sims, k, queries_are_rows)))
    rows, cols = nonzero_positions(mask_buf, sims.size, sims.shape[1])
    if rows.size == 0:
        return
    found_sims = sims[rows, cols]
    queries, gallery = (rows, cols) if queries_are_rows else (cols, rows)
    _merge_candidates(top_sims, top_idx, queries, gallery + gallery_offset, found_sims)


def _kth_largest_lower_bound(sims, k, queries_are_rows) -> np.ndarray:
    """Per query, a value <= its k-th largest similarity in this block, from the maxima of disjoint
    slices of the block: if k slices each have a maximum >= v, the block holds k entries >= v. Costs
    one vectorised max over the block, a fraction of a partition of the block."""
    n_queries, gallery_len = sims.shape if queries_are_rows else sims.shape[::-1]
    n_slices = min(_BOUND_SLICES, gallery_len)
    if n_slices < k:
        return np.full(n_queries, -np.inf, dtype=np.float32)
    slice_len = gallery_len // n_slices
    used = n_slices * slice_len
    # Slice s takes gallery positions s, s + n_slices, ...: then the max is an elementwise maximum of
    # contiguous runs of memory, which NumPy vectorises well in both orientations.
    if queries_are_rows:
        slice_max = sims[:, :used].reshape(n_queries, slice_len, n_slices).max(axis=1)
    else:
        slice_max = sims[:used].reshape(slice_len, n_slices, n_queries).max(axis=0).T
    return np.partition(slice_max, n_slices - k, axis=1)[:, n_slices - k]


def mask_buffer(size: int) -> np.ndarray:
    """A bool buffer for `nonzero_positions`: whole uint64 words."""
    return np.zeros(-(-size // 8) * 8, dtype=bool)


def nonzero_positions(mask_buf: np.ndarray, size: int, n_cols: int) -> Tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the True entries of the first `size` mask bytes, row-major order. The mask is
    sparse, so scan it as uint64 words (8 entries each) first: ~5x faster than np.nonzero on it."""
    padded = mask_buf[:-(-size // 8) * 8]
    padded[size:] = False  # bytes past this block may hold a previous, larger block's mask
    words = np.flatnonzero(padded.view(np.uint64))
    word_of, byte_of = np.nonzero(padded.reshape(-1, 8)[words])
    return np.divmod(words[word_of] * 8 + byte_of, n_cols)


def _merge_candidates(top_sims, top_idx, queries, gallery, found_sims):
    """Replace the top-k of every query that has candidates by the best k of (old list + candidates)
    under (-similarity, index). Every (query, gallery) pair is seen exactly once, so no duplicates."""
    k = top_sims.shape[1]
    per_query = np.bincount(queries, minlength=len(top_sims))
    touched = np.flatnonzero(per_query)
    q = np.concatenate([np.repeat(touched, k), queries])
    s = np.concatenate([top_sims[touched].ravel(), found_sims])
    g = np.concatenate([top_idx[touched].ravel(), gallery])
    sizes = per_query[touched] + k
    keep = (np.cumsum(sizes) - sizes)[:, None] + np.arange(k)  # first k of each query once sorted
    index_bits = int(g.max()).bit_length()
    if int(touched[-1]).bit_length() + 32 + index_bits <= _KEY_BITS:
        # Pack (query, similarity descending, index) into one uint64 and sort that: the same order
        # as the 3-key lexsort below, ~6x faster. Keys are unique, so any sort algorithm will do.
        keys = np.sort((q.astype(np.uint64) << np.uint64(32 + index_bits))
                       | (_descending_keys(s).astype(np.uint64) << np.uint64(index_bits))
                       | g.astype(np.uint64))[keep]
        top_idx[touched] = (keys & np.uint64((1 << index_bits) - 1)).astype(np.int64)
        top_sims[touched] = _from_descending_keys((keys >> np.uint64(index_bits)).astype(np.uint32))
    else:  # indices too large to pack (N beyond ~2**21 with the default chunk)
        order = np.lexsort((g, -s, q))[keep]  # last key first: query, similarity descending, index
        top_sims[touched] = s[order]
        top_idx[touched] = g[order]


def _descending_keys(sims: np.ndarray) -> np.ndarray:
    """float32 -> uint32 whose unsigned order is the floats' DESCENDING order. -0.0 is turned into
    0.0 first (they compare equal, so they must tie). Inverse: `_from_descending_keys`."""
    return _flip_non_negative((sims + np.float32(0)).view(np.uint32))


def _from_descending_keys(keys: np.ndarray) -> np.ndarray:
    return _flip_non_negative(keys).view(np.float32)


def _flip_non_negative(bits: np.ndarray) -> np.ndarray:
    # Negative floats keep their bits (larger magnitude = larger bits = later); for the others every
    # bit but the sign is inverted (larger value = smaller key, all below the negatives' keys).
    return np.where(bits >> np.uint32(31), bits, ~bits & np.uint32(0x7FFFFFFF))


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
