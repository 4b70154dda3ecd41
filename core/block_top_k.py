"""Running exact top-k lists fed from blocks of the similarity matrix (core/recall.py's ranking and
core/verification.py's pair counts share the blocks).

A top-k list is ranked by (-similarity, id): exact ties go to the lower id, the query's position in
the caller's input. A block is merged into the lists of its rows (`queries_are_rows`) or, read by
columns, of its columns; only entries that can still enter a list are looked at (those at or above
the query's current k-th best, ties included, so the id decides at the merge).

`BlockHits` are the entries of a block at or above one score F (the 1:1 selection's floor), found
once per block for every ranking of it (rows, columns, within-group rectangles) and the 1:1
counts. A query that has at least k entries >= F among its list and its hits ends with a list of
entries >= F only, and every such entry of the block is a hit: its hits alone are merged, exactly.
Only the other ("weak") queries scan their rows of the block (a few: F keeps about 2 % of a block).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, NamedTuple, Optional, Tuple

import numpy as np

# Each block's k-th largest similarity per query is bounded from below from this many slice maxima.
_BOUND_SLICES = 64
# Width of the packed sort keys in _merge_candidates (tests set it to 0 to exercise the lexsort path).
_KEY_BITS = 64
# Blocks of at least this many multiply-adds are computed one ahead in a helper thread (below it
# the thread's hand-over costs more than the overlap gains; tests set it to 0).
_PREFETCH_MIN_WORK = 2**24
# Shared hits are worth finding while at most this fraction of a block reaches the floor.
_HITS_MAX_FRACTION = 1 / 8


class BlockHits(NamedTuple):
    """Block positions (rows, cols; row-major order) and values of every entry >= floor."""
    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    floor: float

    def inside(self, rows: slice, cols: slice) -> "BlockHits":
        """The hits in the rectangle [rows] x [cols], with positions relative to it."""
        lo, hi = np.searchsorted(self.rows, [rows.start, rows.stop])
        c = self.cols[lo:hi]
        sel = (c >= cols.start) & (c < cols.stop)
        return BlockHits(self.rows[lo:hi][sel] - rows.start, c[sel] - cols.start,
                         self.values[lo:hi][sel], self.floor)

    def transposed(self) -> "BlockHits":
        """Rows and columns swapped (no longer in row-major order)."""
        return BlockHits(self.cols, self.rows, self.values, self.floor)


def similarity_blocks(unit: np.ndarray, chunk: int) -> Iterator[Tuple[int, int, np.ndarray]]:
    """(row offset, column offset, block) for every block on or above the block diagonal of
    unit @ unit.T, row blocks in order; the diagonal of a diagonal block is -inf. The block lives in
    a reused buffer: use it before asking for the next.

    Large blocks are computed one ahead in a helper thread, into a second buffer: the product
    (BLAS, which releases the GIL) of block b + 1 runs while the caller works on block b, which
    otherwise leaves a core idle. Each block is the same single matmul either way."""
    n = len(unit)
    side = min(chunk, n)
    offsets = [(i0, j0) for i0 in range(0, n, chunk) for j0 in range(i0, n, chunk)]
    buffers = [np.empty(side * side, dtype=np.float32) for _ in range(2 if len(offsets) > 1 else 1)]

    def product(index: int) -> np.ndarray:
        i0, j0 = offsets[index]
        rows_i, rows_j = unit[i0:i0 + chunk], unit[j0:j0 + chunk]
        sims = buffers[index % len(buffers)][:len(rows_i) * len(rows_j)].reshape(len(rows_i),
                                                                                 len(rows_j))
        np.matmul(rows_i, rows_j.T, out=sims)
        if j0 == i0:
            np.fill_diagonal(sims, -np.inf)  # the query is not in its own gallery
        return sims

    if len(offsets) < 2 or side * side * unit.shape[1] < _PREFETCH_MIN_WORK:
        for index, (i0, j0) in enumerate(offsets):
            yield i0, j0, product(index)
        return
    with ThreadPoolExecutor(max_workers=1) as ahead:
        pending = ahead.submit(product, 0)
        for index, (i0, j0) in enumerate(offsets):
            sims = pending.result()
            if index + 1 < len(offsets):    # into the other buffer, which the caller is done with
                pending = ahead.submit(product, index + 1)
            yield i0, j0, sims


def block_hits(sims: np.ndarray, floor: float, mask_buf: np.ndarray) -> Optional[BlockHits]:
    """The entries of the (contiguous) block >= floor, or None when more than _HITS_MAX_FRACTION of
    the block reaches it (a floor still at -inf, for one): then every query scans the block."""
    if floor == -np.inf:
        return None
    mask = mask_buf[:sims.size].reshape(sims.shape)
    np.greater_equal(sims, floor, out=mask)
    flat = np.flatnonzero(mask_buf[:sims.size])
    if len(flat) > _HITS_MAX_FRACTION * sims.size:
        return None
    rows, cols = np.divmod(flat, sims.shape[1])
    return BlockHits(rows, cols, sims.reshape(-1)[flat], float(floor))


def merge_queries(top_sims, top_idx, sims, gallery_ids, queries_are_rows, mask_buf,
                  hits: Optional[BlockHits] = None):
    """Merge a block (or a view of one) into the running top-k of its queries, its rows or columns.
    `gallery_ids`: the id of each gallery position (columns for row queries, rows for column
    queries). `hits` (positions as queries x gallery): the queries with k entries >= hits.floor
    among their list and hits take their candidates from them; the others scan their own rows."""
    if hits is None:
        _merge_block(top_sims, top_idx, sims, gallery_ids, queries_are_rows, mask_buf)
        return
    # A query with k entries >= the floor among its list and its hits keeps only such entries, all
    # of which it sees; only the others ("weak") scan their row of the block.
    k = top_sims.shape[1]
    kth = top_sims[:, -1]
    at_floor = np.count_nonzero(top_sims >= hits.floor, axis=1)
    weak = at_floor + np.bincount(hits.rows, minlength=len(kth)) < k
    keep = hits.values >= kth[hits.rows]
    weak_queries = np.flatnonzero(weak)
    if len(weak_queries):
        keep &= ~weak[hits.rows]
    queries, gallery, values = hits.rows[keep], hits.cols[keep], hits.values[keep]
    if len(weak_queries) == len(kth):
        _merge_block(top_sims, top_idx, sims, gallery_ids, queries_are_rows, mask_buf)
    elif len(weak_queries):
        sub_sims, sub_idx = top_sims[weak_queries], top_idx[weak_queries]
        part = sims[weak_queries] if queries_are_rows else sims[:, weak_queries]
        _merge_block(sub_sims, sub_idx, part, gallery_ids, queries_are_rows, mask_buf)
        top_sims[weak_queries], top_idx[weak_queries] = sub_sims, sub_idx
    if len(queries):
        _merge_candidates(top_sims, top_idx, queries, gallery_ids[gallery], values)


def _merge_block(top_sims, top_idx, sims, gallery_ids, queries_are_rows, mask_buf):
    """Merge one similarity block into the running top-k of its queries (rows or columns of `sims`).

    Only entries that can still enter a top-k are looked at: an entry below the query's current k-th
    best, or below a lower bound of the k-th best within this block, has k better entries already.
    Both comparisons keep equal values (>=), so ties reach the merge, where the id decides."""
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
    _merge_candidates(top_sims, top_idx, queries, gallery_ids[gallery], found_sims)


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
    """A bool buffer for the masks of blocks of up to `size` entries (`nonzero_positions`)."""
    return np.zeros(size, dtype=bool)


def nonzero_positions(mask_buf: np.ndarray, size: int, n_cols: int) -> Tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the True entries of the first `size` mask bytes, row-major order. The flat
    1-D scan and a divmod: 2-3x faster than np.nonzero on the 2-D mask, and than scanning it as
    uint64 words first, at every density a block's mask has (1e-4 to 2e-2)."""
    return np.divmod(np.flatnonzero(mask_buf[:size]), n_cols)


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
