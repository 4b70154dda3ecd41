"""Exact Recall@K of embeddings under cosine similarity, computed in blocks of the similarity matrix.

Definitions (all three functions below follow them):
* Similarity is cosine: each row is L2-normalised in float32. An all-zero row stays zero (its norm is
  guarded by a tiny minimum), so its similarity to every image is 0, never NaN.
* For query i the gallery is every OTHER image: all of them for the "overall" entry, those of the
  same group for a group entry. The query itself is never in its gallery.
* A query whose identity has no other image in its gallery cannot be answered: it is skipped and
  counted in `n_skipped`, not in `n_queries`.
* The gallery is ranked by similarity, highest first; exact ties are broken by index (position in
  the input arrays): the image with the LOWER index ranks first. Recall@k of a query is 1 if one of
  the first k gallery images has the query's label, else 0. A k above the gallery size means the
  whole gallery.

"Exact" means no approximation: `recall_at_k` returns what a full sort of every row of the float32
similarity matrix under (-similarity, index) returns. The float32 products come from BLAS; a product
computed inside a block could in principle differ in its last bit from the same product computed in
a full-matrix call, so two gallery images whose similarities differ by ~1e-7 could swap against
another implementation. Exact duplicates (the ties that happen in practice) tie in both.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, Iterable, Iterator, Optional, Sequence, Tuple

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


def recall_at_k(embeddings, labels, groups=None, ks: Sequence[int] = (1,),
                chunk_size: Optional[int] = None) -> Dict[str, Dict]:
    """Recall@k for each k in `ks`, overall and (when `groups` is given) per group.

    embeddings [N, D] float, labels [N] int, groups [N] str or None. Returns
    {"overall": {"n_queries", "n_skipped", "recall@<k>"...}, "<group>": {...}, ...} with plain Python
    numbers; recall values are None when no query can be answered.

    The similarity matrix is symmetric, so only the blocks on and above the block diagonal are
    multiplied; block (i, j) updates the running top-k of the rows of block i and, read column-wise,
    of the rows of block j. Extra memory is O(chunk_size * N): one chunk x chunk block, its mask and
    the [N, k] running lists, never N x N.
    """
    unit, labels, groups, ks = _checked_inputs(embeddings, labels, groups, ks)
    chunk = DEFAULT_CHUNK_SIZE if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")

    def entry(rows, row_labels):
        top_sims, top_idx = _chunked_top_k(rows, max(ks), chunk)
        return _summary(row_labels, top_sims, top_idx, ks)

    return _entries(unit, labels, groups, entry)


def brute_force_recall_at_k(embeddings, labels, groups=None,
                            ks: Sequence[int] = (1,)) -> Dict[str, Dict]:
    """The straightforward reference: the full N x N similarity matrix, diagonal set to -inf, top-k of
    every row with np.argpartition. Same definitions and output as `recall_at_k`; group entries use
    each group's own sub-matrix."""
    unit, labels, groups, ks = _checked_inputs(embeddings, labels, groups, ks)

    def entry(rows, row_labels):
        top_sims, top_idx = _full_matrix_top_k(rows, max(ks))
        return _summary(row_labels, top_sims, top_idx, ks)

    return _entries(unit, labels, groups, entry)


def per_row_loop_recall_at_1(embeddings, labels) -> Dict[str, Dict]:
    """Recall@1 the way a plain evaluation script does it: one query at a time, similarity to all,
    exclude itself, argmax (which returns the lowest index among ties). Overall entry only; kept
    as the benchmark's point of comparison."""
    unit, labels, _, _ = _checked_inputs(embeddings, labels, None, (1,))
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

def _checked_inputs(embeddings, labels, groups, ks):
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


def _entries(unit, labels, groups, entry) -> Dict[str, Dict]:
    result = {OVERALL: entry(unit, labels)}
    if groups is not None:
        for name, members in _group_members(groups):
            # Members keep their input order, so "lower index wins" means the same inside a group.
            result[name] = entry(unit[members], labels[members])
    return result


def _group_members(groups: np.ndarray) -> Iterator[Tuple[str, np.ndarray]]:
    names, codes = np.unique(groups, return_inverse=True)
    by_code = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=len(names)))
    for name, members in zip(names, np.split(by_code, bounds[:-1])):
        yield str(name), members


def _summary(labels: np.ndarray, top_sims: np.ndarray, top_idx: np.ndarray, ks: Iterable[int]) -> Dict:
    """Recall from each query's ranked top list. Entries at -inf are padding or the query itself
    (only present when the gallery is smaller than k) and never count."""
    n = len(labels)
    _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    answerable = counts[codes.reshape(-1)] > 1 if n else np.zeros(0, bool)
    real = np.isfinite(top_sims)
    hit = real & (labels[np.where(real, top_idx, 0)] == labels[:, None])
    # Position of the first hit in the ranked list (k_max if none); recall@k is "first hit < k".
    first_hit = np.where(hit.any(axis=1), hit.argmax(axis=1), hit.shape[1])[answerable]
    n_queries = int(answerable.sum())
    out = {"n_queries": n_queries, "n_skipped": int(n - n_queries)}
    for k in ks:
        out[f"recall@{k}"] = float(np.count_nonzero(first_hit < k) / n_queries) if n_queries else None
    return out


# ----------------------------------------------------------------------------- chunked top-k

def _chunked_top_k(unit: np.ndarray, k: int, chunk: int) -> Tuple[np.ndarray, np.ndarray]:
    """For every row, its k most similar other rows as ([N, k] similarities, [N, k] indices), ranked by
    (-similarity, index). Missing entries (gallery smaller than k) are -inf."""
    n = len(unit)
    top_sims = np.full((n, k), -np.inf, dtype=np.float32)
    top_idx = np.full((n, k), n, dtype=np.int64)  # n sorts after every real index
    side = min(chunk, n)
    block_buf = np.empty(side * side, dtype=np.float32)
    mask_buf = np.zeros(-(-side * side // 8) * 8, dtype=bool)  # whole uint64 words, see _nonzero
    for i0 in range(0, n, chunk):
        rows_i = unit[i0:i0 + chunk]
        for j0 in range(i0, n, chunk):
            rows_j = unit[j0:j0 + chunk]
            sims = block_buf[:len(rows_i) * len(rows_j)].reshape(len(rows_i), len(rows_j))
            np.matmul(rows_i, rows_j.T, out=sims)
            if j0 == i0:
                np.fill_diagonal(sims, -np.inf)  # the query is not in its own gallery
            _merge_block(top_sims[i0:i0 + len(rows_i)], top_idx[i0:i0 + len(rows_i)],
                         sims, j0, True, mask_buf)
            if j0 != i0:  # the same block, read by columns, serves the rows of block j
                _merge_block(top_sims[j0:j0 + len(rows_j)], top_idx[j0:j0 + len(rows_j)],
                             sims, i0, False, mask_buf)
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
    rows, cols = _nonzero(mask_buf, sims.size, sims.shape[1])
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


def _nonzero(mask_buf: np.ndarray, size: int, n_cols: int) -> Tuple[np.ndarray, np.ndarray]:
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
