"""The compiled block merge (core/block_top_k.py `rank_block`) against a literal sort.

A symmetric matrix of a few distinct values (heavy exact ties everywhere, so the id decides most
places in a list), ids a permutation (a tie goes to the lower id, not the lower position), groups
contiguous and of sizes that cut across the blocks. Its upper block triangle goes through
`rank_block` as core/recall.py feeds it (a diagonal block defined above its diagonal only: +inf on
and below it here, which no list may take); every list, the whole gallery's and the within-group one,
must equal the first k of its gallery sorted by (-similarity, id): rows of a block, columns read
off the block diagonal, and the rectangles where rows and columns share a group alike."""
import os

import numpy as np
import pytest

from core import block_top_k
from core.block_top_k import rank_block


def tied_matrix(seed, n, levels):
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.integers(0, levels, size=(n, n)).astype(np.float32) / levels, 1)
    sims = upper + upper.T
    np.fill_diagonal(sims, -np.inf)
    return sims


def literal_top_k(sims, ids, gallery, query, k):
    ranked = sorted(((float(sims[query, j]), int(ids[j])) for j in gallery if j != query),
                    key=lambda pair: (-pair[0], pair[1]))
    return ranked[:k]


def listed(lists, query):
    return [(float(s), int(i)) for s, i in zip(lists[0][query], lists[1][query]) if np.isfinite(s)]


@pytest.mark.parametrize("seed, n, chunk, k, levels", [
    (0, 61, 16, 4, 3), (1, 80, 80, 5, 2), (2, 97, 7, 3, 5), (3, 50, 13, 20, 4), (4, 120, 32, 1, 2)])
def test_lists_equal_a_literal_sort_with_heavy_ties(seed, n, chunk, k, levels):
    sims = tied_matrix(seed, n, levels)
    rng = np.random.default_rng(seed + 100)
    ids = rng.permutation(n).astype(np.int64)
    sizes = rng.integers(1, n // 3, size=n)
    stops = np.minimum(np.cumsum(sizes), n)
    spans = [(int(a), int(b)) for a, b in zip(np.concatenate([[0], stops[:-1]]), stops) if a < b]
    start = np.concatenate([[a] * (b - a) for a, b in spans]).astype(np.int64)
    stop = np.concatenate([[b] * (b - a) for a, b in spans]).astype(np.int64)
    lists = (np.full((n, k), -np.inf, np.float32), np.full((n, k), n, np.int64))
    within = (np.full((n, k), -np.inf, np.float32), np.full((n, k), n, np.int64))
    for i0 in range(0, n, chunk):
        for j0 in range(i0, n, chunk):
            block = np.array(sims[i0:i0 + chunk, j0:j0 + chunk], order="C")     # a copy
            if i0 == j0:
                block[np.tril_indices(len(block))] = np.inf
            assert rank_block(block, i0, j0, ids, lists, within, (start, stop)) is None
    for query in range(n):
        assert listed(lists, query) == literal_top_k(sims, ids, range(n), query, k), query
        group = range(start[query], stop[query])
        assert listed(within, query) == literal_top_k(sims, ids, group, query, k), query


@pytest.mark.parametrize("floor, fraction", [(0.5, 1.0), (0.75, 0.5), (0.25, 1 / 8), (-np.inf, 1.0)])
@pytest.mark.parametrize("j0", [0, 16])
def test_hits_are_every_impostor_entry_at_or_above_the_floor_or_none_when_too_many(monkeypatch, floor,
                                                                                   fraction, j0):
    # Off the block diagonal every entry is a pair; on it only those above the diagonal (+inf on
    # and below here, never a hit). A hit's row and column differ in label; positions are the
    # matrix's, row-major.
    monkeypatch.setattr(block_top_k, "_HITS_MAX_FRACTION", fraction)
    n, k = 40, 3
    sims = tied_matrix(7, n, 4)
    labels = np.random.default_rng(8).integers(0, 6, size=n)
    lists = (np.full((n, k), -np.inf, np.float32), np.full((n, k), n, np.int64))
    block = np.array(sims[:16, j0:j0 + 16], order="C")
    if j0 == 0:
        block[np.tril_indices(16)] = np.inf
    hits = rank_block(block, 0, j0, np.arange(n), lists, floor=floor, label_codes=labels)
    entries = [(r, j0 + c) for r, c in np.argwhere(block >= np.float32(floor)) if j0 + c > r]
    expected = [(r, c) for r, c in entries if labels[r] != labels[c]]
    if floor == -np.inf or len(expected) > int(fraction * block.size):
        assert hits is None
        return
    assert hits.floor == floor
    assert [(int(r), int(c)) for r, c in zip(hits.rows, hits.cols)] == expected
    assert np.array_equal(hits.values, sims[hits.rows, hits.cols])


def test_hits_need_the_rows_labels():
    lists = (np.full((4, 1), -np.inf, np.float32), np.full((4, 1), 4, np.int64))
    with pytest.raises(ValueError, match="label codes"):
        rank_block(np.zeros((2, 2), np.float32), 0, 2, np.arange(4), lists, floor=0.5)


def test_without_a_writable_cache_the_kernel_is_compiled_per_process_not_an_import_error():
    # numba raises at decoration when no cache location is writable (a read-only installation and
    # home directory); the module then compiles without a cache. Simulated by leaving numba no
    # cache locator (numba's internal list of them, at the pinned version), in a process of its own
    # (the module is not yet imported there).
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from numba.core import caching\n"
        "caching.CacheImpl._locator_classes = []\n"
        "from core import block_top_k\n"
        "sims = np.array([[-np.inf, 0.5, 0.2], [0.5, -np.inf, 0.9], [0.2, 0.9, -np.inf]], np.float32)\n"
        "lists = (np.full((3, 1), -np.inf, np.float32), np.full((3, 1), 3, np.int64))\n"
        "block_top_k.rank_block(sims, 0, 0, np.arange(3), lists)\n"
        "print(lists[1].ravel().tolist())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[1,", "2,", "1]"]


def test_compile_ahead_leaves_the_kernel_in_the_cache_and_the_image_build_calls_it(tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", "from core import block_top_k; "
                           "block_top_k.compile_ahead()"], capture_output=True, text=True,
                          timeout=300, cwd=root, env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    cached = {p.name.split(".")[1].split("-")[0] for p in tmp_path.rglob("*.nbi")}
    assert {"_rank_block", "_flag", "_offer", "_before", "_column_tails"} <= cached
    with open(os.path.join(root, "Dockerfile")) as f:
        dockerfile = f.read()
    assert ('RUN python -c "from core import block_top_k; block_top_k.compile_ahead()"'
            in dockerfile)
    assert dockerfile.index("block_top_k.compile_ahead()") > dockerfile.index("'.[kfp]'")


def test_similarities_are_the_row_products_in_c_order_empty_sides_included():
    rng = np.random.default_rng(5)
    rows, others = rng.standard_normal((7, 5)), rng.standard_normal((11, 5))
    products = block_top_k.similarities(rows, others)
    assert products.dtype == np.float32 and products.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(products, rows @ others.T, rtol=1e-5, atol=1e-5)
    assert block_top_k.similarities(rows[:0], others).shape == (0, 11)
