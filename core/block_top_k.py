"""Running exact top-k lists fed from blocks of the similarity matrix (core/recall.py's ranking and
core/verification.py's pair counts share the blocks).

A top-k list is ranked by (-similarity, id): exact ties go to the lower id, the query's position in
the caller's input. `rank_block` merges a block of the upper block triangle into the lists of its
rows and, off the block diagonal, read by columns, into those of its columns; inside the
rectangles where rows and columns share a group (the rows in group order), also into their
within-group lists. Only entries that can still enter a list are looked at: those at or above the
row's or the column's current k-th best, ties included, so the id decides in the list.

`BlockHits` are the entries of a block at or above one score F (the 1:1 selection's floor), found
in the same pass and handed to the 1:1 counts (core/pair_counter.py).

The pass is compiled (numba), one pass over each block. In NumPy each ranking of a block took
several passes over it (masks against the rows' and the columns' k-th bests, their positions, a sort
of the candidates with the old lists, for the rows, the columns and every group rectangle, plus the
hits' own mask), and that work, not the block products, set the evaluator's time. Most of what is
left is inserting into lists that are still filling (the columns' first block, a group's first
rectangle) and looking at the hits. The kernel releases the GIL (nogil), so the next block's product
runs beside it. It is compiled at its first call in a process and cached next to this module
(cache=True; numba falls back to a user cache directory when that is read-only, NUMBA_CACHE_DIR
names another, and without any writable place it is compiled in every process instead of failing
at import): later processes load it. Costs: benchmarks/results.md ("Recall evaluation").
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, NamedTuple, Optional, Tuple

import numpy as np
from numba import njit
from scipy.linalg import blas


def _compiled(function):
    """`function` compiled without the GIL, its machine code cached where numba can write it, and
    compiled per process where it cannot (a read-only installation and home directory)."""
    try:
        return njit(nogil=True, cache=True)(function)
    except RuntimeError:        # "no locator available": nowhere to write the cache
        return njit(nogil=True)(function)

# Blocks of at least this many multiply-adds are computed one ahead in a helper thread (below it
# the thread's hand-over costs more than the overlap gains; tests set it to 0).
_PREFETCH_MIN_WORK = 2**24
# Hits are handed over while at most this fraction of a block reaches the floor.
_HITS_MAX_FRACTION = 1 / 8


class BlockHits(NamedTuple):
    """Matrix rows and columns (absolute, row < column; row-major order within the block) and values
    of every impostor entry >= floor."""
    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    floor: float


TopLists = Tuple[np.ndarray, np.ndarray]   # [N, k] float32 similarities, [N, k] int64 ids


def similarity_blocks(unit: np.ndarray, chunk: int) -> Iterator[Tuple[int, int, np.ndarray]]:
    """(row offset, column offset, block) for every block on or above the block diagonal of
    unit @ unit.T, row blocks in order. A diagonal block holds its entries strictly above its
    diagonal only (each pair once; on and below the diagonal it is undefined): it is computed by
    SYRK, half the multiply-adds of a product; the others by SGEMM. The block lives in a reused
    buffer: use it before asking for the next.

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
        # Into the block's Fortran-order transpose (the same memory); the lower triangle of a
        # Fortran-order result is the upper one of the C-order block. Both through SciPy's BLAS:
        # one BLAS library for the whole pass, as two libraries' thread pools alternating (NumPy's
        # matmul, SciPy's SYRK) slowed each other's calls by up to 3x (benchmarks/results.md).
        if j0 != i0:
            result = blas.sgemm(1.0, rows_j.T, rows_i.T, beta=0.0, c=sims.T, trans_a=1, overwrite_c=1)
        else:
            result = blas.ssyrk(1.0, rows_i.T, beta=0.0, c=sims.T, trans=1, lower=1, overwrite_c=1)
        if result.ctypes.data != sims.ctypes.data:      # a copy after all: into the buffer
            sims.T[...] = result
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


def similarities(rows: np.ndarray, others: np.ndarray) -> np.ndarray:
    """rows @ others.T (float32, C order) through the BLAS the blocked pass uses (SciPy's): a
    product just before the pass through NumPy's would leave NumPy's BLAS threads spinning beside
    the pass's first blocks."""
    rows, others = np.ascontiguousarray(rows, np.float32), np.ascontiguousarray(others, np.float32)
    if not len(rows) or not len(others):
        return np.zeros((len(rows), len(others)), np.float32)
    return blas.sgemm(1.0, others.T, rows.T, trans_a=1).T


def rank_block(sims: np.ndarray, i0: int, j0: int, ids: np.ndarray, lists: TopLists,
               within: Optional[TopLists] = None,
               group_bounds: Optional[Tuple[np.ndarray, np.ndarray]] = None,
               floor: Optional[float] = None,
               label_codes: Optional[np.ndarray] = None) -> Optional[BlockHits]:
    """Merge block (i0, j0) of the upper block triangle (rows i0.., columns j0..; on the block
    diagonal its entries above the diagonal) into `lists`: those of its rows and of its columns.
    `ids[i]`: the id of matrix row (and column) i. With `within`, the block's entries whose row and
    column share a group, `group_bounds[0][i] <= column < group_bounds[1][i]` for row i, are also
    merged into the `within` lists the same way.

    Returns the block's `BlockHits` at `floor`, the entries whose row and column differ in
    `label_codes` (the matrix rows' labels as integers): None without a floor, at a floor of -inf,
    or when more than _HITS_MAX_FRACTION of the block reaches it (every such entry is still
    ranked). The comparison with the floor is in float32, like the block's."""
    record = floor is not None and floor != -np.inf
    if record and label_codes is None:
        raise ValueError("hits at a floor need the rows' label codes")
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    codes = (np.ascontiguousarray(label_codes, dtype=np.int64) if record
             else np.empty(0, dtype=np.int64))
    capacity = int(_HITS_MAX_FRACTION * sims.size) if record else 0
    # Matrix positions as int32 while they fit: the 1:1 selection buffers millions of them.
    index_type = np.int32 if len(ids) < 2**31 else np.int64
    hit_rows, hit_cols = np.empty(capacity, dtype=index_type), np.empty(capacity, dtype=index_type)
    hit_values = np.empty(capacity, dtype=np.float32)
    k = lists[0].shape[1]
    if within is None:
        within = (np.empty((0, k), dtype=np.float32), np.empty((0, k), dtype=np.int64))
        group_bounds = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))
    n_hits = _rank_block(sims, i0, j0, ids, lists[0], lists[1], within[0], within[1],
                         group_bounds[0], group_bounds[1], np.float32(floor if record else np.inf),
                         codes, hit_rows, hit_cols, hit_values)
    if not record or n_hits > capacity:
        return None
    return BlockHits(hit_rows[:n_hits], hit_cols[:n_hits], hit_values[:n_hits], float(floor))


@_compiled
def _rank_block(sims, i0, j0, ids, top_sims, top_idx, within_sims, within_idx, group_start,
                group_stop, floor, label_codes, hit_rows, hit_cols, hit_values):
    """`rank_block`'s pass; returns the number of impostor entries >= floor (recorded up to the hit
    arrays' length).

    Row by row (on the block diagonal, from the entry after the diagonal): first a flag per entry
    that may matter, set when it reaches the row's k-th best (inside the row's group: the lower of
    its two lists') or its column's limit: the lower of the floor and the column's k-th best
    (inside the group, also its within-group one). That test is branch-free and vectorises; the
    flagged entries (a few percent) are then found 8 flags at a time and offered to each list,
    which checks its own k-th best exactly. Limits only rise (and are updated as a column's list
    changes), so no entry that can enter a list or is a hit is left unflagged. On the block
    diagonal a column's list is also a later row's: the rows above it only offer to it, and it is
    read as a row (its k-th best then current) only after them."""
    height, width = sims.shape
    last = top_sims.shape[1] - 1
    diagonal = i0 == j0
    grouped = within_sims.shape[0] > 0
    tail, tail_id, tail_within, tail_within_id = _column_tails(top_sims, top_idx, within_sims,
                                                               within_idx, j0, width)
    limit = np.minimum(tail, floor)
    limit_within = np.minimum(limit, tail_within)
    n_words = (width + 7) // 8
    flags = np.zeros(n_words * 8, dtype=np.uint8)
    words = flags.view(np.uint64)
    n_hits = 0
    capacity = hit_rows.shape[0]
    for r in range(height):
        row = i0 + r
        row_id = ids[row]
        values = sims[r]
        start = 0
        if diagonal:
            start = min(r + 1, width)
            flags[r] = 0                       # flagged for the row before, whose first it was
        lo = hi = start
        if grouped:
            lo = min(max(group_start[row] - j0, start), width)
            hi = min(max(group_stop[row] - j0, lo), width)
        threshold = top_sims[row, last]
        _flag(values[start:lo], limit[start:lo], threshold, flags[start:lo])
        if hi > lo:
            _flag(values[lo:hi], limit_within[lo:hi], min(threshold, within_sims[row, last]),
                  flags[lo:hi])
        _flag(values[hi:], limit[hi:], threshold, flags[hi:width])
        for w in range(start // 8, n_words):
            word = words[w]
            while word:
                low = word & (~word + np.uint64(1))        # the lowest flag: byte i holds 1
                word ^= low
                c = w * 8 + int((low * np.uint64(0x0001020304050607)) >> np.uint64(56))
                value = values[c]
                col = j0 + c
                if value >= floor and label_codes[row] != label_codes[col]:
                    if n_hits < capacity:
                        hit_rows[n_hits], hit_cols[n_hits], hit_values[n_hits] = row, col, value
                    n_hits += 1
                col_id = ids[col]
                _offer(top_sims, top_idx, row, value, col_id)
                if _before(value, row_id, tail[c], tail_id[c]):
                    _offer(top_sims, top_idx, col, value, row_id)
                    tail[c], tail_id[c] = top_sims[col, last], top_idx[col, last]
                    limit[c] = min(tail[c], floor)
                    limit_within[c] = min(limit[c], tail_within[c])
                if lo <= c < hi:
                    _offer(within_sims, within_idx, row, value, col_id)
                    if _before(value, row_id, tail_within[c], tail_within_id[c]):
                        _offer(within_sims, within_idx, col, value, row_id)
                        tail_within[c] = within_sims[col, last]
                        tail_within_id[c] = within_idx[col, last]
                        limit_within[c] = min(limit[c], tail_within[c])
    return n_hits


@_compiled
def _column_tails(top_sims, top_idx, within_sims, within_idx, j0, width):
    """The k-th best (value, id) of each column's list and within-group list. Kept apart from the
    lists, which are touched only when an entry enters them: the block streaming through the cache
    evicts them in between."""
    last = top_sims.shape[1] - 1
    tail, tail_id = top_sims[j0:j0 + width, last].copy(), top_idx[j0:j0 + width, last].copy()
    tail_within = np.full(width, np.inf, dtype=np.float32)
    tail_within_id = np.full(width, -1, dtype=np.int64)
    if within_sims.shape[0] > 0:
        tail_within[:] = within_sims[j0:j0 + width, last]
        tail_within_id[:] = within_idx[j0:j0 + width, last]
    return tail, tail_id, tail_within, tail_within_id


@_compiled
def _flag(values, limits, threshold, flags):
    # Views from 0, not a (start, stop) range: a start LLVM cannot prove non-negative keeps the
    # negative-index check in the loop, which then does not vectorise (10x slower).
    for c in range(len(flags)):
        flags[c] = (values[c] >= threshold) | (values[c] >= limits[c])


@_compiled
def _offer(top_sims, top_idx, query, value, gallery_id) -> bool:
    """Insert (value, gallery_id) into the query's list if it ranks before the list's last entry
    under (-similarity, id); True if it did. The list stays sorted; its last entry drops out."""
    sims, idx = top_sims[query], top_idx[query]
    pos = len(sims) - 1
    if not _before(value, gallery_id, sims[pos], idx[pos]):
        return False
    while pos > 0 and _before(value, gallery_id, sims[pos - 1], idx[pos - 1]):
        sims[pos], idx[pos] = sims[pos - 1], idx[pos - 1]
        pos -= 1
    sims[pos], idx[pos] = value, gallery_id
    return True


@_compiled
def _before(value, gallery_id, other_value, other_id) -> bool:
    return value > other_value or (value == other_value and gallery_id < other_id)


def compile_ahead():
    """Compile (or load from the cache) the kernel now, on a tiny block: the Kubeflow image's build
    calls it, so that its machine code is cached beside this module in the image and no pipeline
    step compiles it."""
    sims = np.full((2, 2), -np.inf, dtype=np.float32)
    lists = (np.full((2, 1), -np.inf, dtype=np.float32), np.full((2, 1), 2, dtype=np.int64))
    rank_block(sims, 0, 0, np.arange(2), lists, lists, (np.zeros(2, np.int64), np.full(2, 2)), 0.0,
               np.arange(2))


def mask_buffer(size: int) -> np.ndarray:
    """A bool buffer for the masks of blocks of up to `size` entries (`nonzero_positions`)."""
    return np.zeros(size, dtype=bool)


def nonzero_positions(mask_buf: np.ndarray, size: int, n_cols: int) -> Tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the True entries of the first `size` mask bytes, row-major order. The flat
    1-D scan and a divmod: 2-3x faster than np.nonzero on the 2-D mask, and than scanning it as
    uint64 words first, at every density a block's mask has (1e-4 to 2e-2)."""
    return np.divmod(np.flatnonzero(mask_buf[:size]), n_cols)
