"""Exact Recall@K (components/recall_evaluator/recall.py).

Expected values come from reasoning (hand-made cases) or from `reference_recall` below, written from
the definition (rank each query's gallery by (-similarity, index), look at the first k), never from
the functions under test. Random cases use vectors whose cosine similarities are exact in float32
and float64 alike (±1 entries on 1, 4 or 16 coordinates, scaled by powers of two), so there are many
exact ties and no rounding can make the implementation and the reference disagree.
"""
import json
import math
import tracemalloc

import numpy as np
import pytest

from core import block_top_k
from core import recall as recall_module
from core.recall import brute_force_recall_at_k, per_row_loop_recall_at_1, recall_at_k


def at_angles(degrees):
    """Unit 2-D vectors at the given angles: similarity is the cosine of the angle between them."""
    radians = np.radians(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


def both(embeddings, labels, groups=None, ks=(1,), chunk_sizes=(None, 1, 2)):
    """recall_at_k with several chunk sizes plus the brute force; asserts they agree, returns one."""
    results = [recall_at_k(embeddings, labels, groups, ks=ks, chunk_size=c) for c in chunk_sizes]
    results.append(brute_force_recall_at_k(embeddings, labels, groups, ks=ks))
    for other in results[1:]:
        assert other == results[0]
    return results[0]


def entry(n_queries, n_skipped, n_identities, within=None, **recalls):
    """entry(4, 0, 2, r1=0.5, r5=1.0): one scope's summary whose within-group figures equal the
    whole-gallery ones; within=(n_queries, n_identities, {"r1": ...}) gives them separately."""
    mixed = {f"recall@{name[1:]}": value for name, value in recalls.items()}
    w_queries, w_identities, w_recalls = within if within else (n_queries, n_identities, recalls)
    return {"n_queries": n_queries, "n_skipped": n_skipped, "n_identities": n_identities, **mixed,
            "n_queries_within": w_queries, "n_identities_within": w_identities,
            **{f"recall@{name[1:]}_within": value for name, value in w_recalls.items()}}


# ----------------------------------------------------------------------------- hand-made cases

def test_group_figures_rank_against_the_whole_gallery_and_within_the_group_separately():
    #   index:    0    1    2    3
    #   angle:    0°   5°   40°  90°
    #   label:    A    B    A    B
    #   group:    g1   g2   g1   g2
    # Whole gallery, every query's nearest image has the other label: 0 -> 1 (5°), 1 -> 0 (5°),
    # 2 -> 1 (35°), 3 -> 2 (50°). Second nearest: 0 -> 2 (A, hit), 1 -> 2 (A, miss; 3 is 85° away),
    # 2 -> 0 (A, hit), 3 -> 1 (B, hit). So g1's queries (0, 2) hit at rank 2, g2's query 1 only at
    # rank 3 and query 3 at rank 2. Inside a group the only other image has the same label.
    result = both(at_angles([0, 5, 40, 90]), [0, 1, 0, 1], ["g1", "g2", "g1", "g2"], ks=(1, 2))
    assert result == {
        "overall": entry(4, 0, 2, r1=0.0, r2=0.75),
        "g1": entry(2, 0, 1, within=(2, 1, {"r1": 1.0, "r2": 1.0}), r1=0.0, r2=1.0),
        "g2": entry(2, 0, 1, within=(2, 1, {"r1": 1.0, "r2": 1.0}), r1=0.0, r2=0.5),
    }


def test_identities_without_another_image_in_the_gallery_are_skipped_and_counted():
    #   index:  0    1    2    3     4
    #   angle:  0°   10°  100°  95°  20°
    #   label:  A    A    B     C    C
    #   group:  x    x    x     x    y
    # Whole gallery: B (one image) is skipped: queries 0 -> 1 (A, hit), 1 -> 0 (A, 10°; 4 is 10°
    # too but 4 > 0, hit), 3 -> 2 (B at 5°, miss), 4 -> 1 (A at 10°, miss). Group x holds 0..3: B
    # is skipped, C's image 3 is answerable against the whole gallery (4 is C) but not within x.
    # Group y: its only image 4 is answerable against the whole gallery only.
    result = both(at_angles([0, 10, 100, 95, 20]), [0, 0, 1, 2, 2], ["x", "x", "x", "x", "y"])
    assert result == {
        "overall": entry(4, 1, 2, r1=0.5),
        "x": entry(3, 1, 2, within=(2, 1, {"r1": 1.0}), r1=2 / 3),
        "y": entry(1, 0, 1, within=(0, 0, {"r1": None}), r1=0.0),
    }


@pytest.mark.parametrize("duplicate_labels, expected_recall", [((1, 0), 0.0), ((0, 1), 0.5)])
def test_exact_ties_go_to_the_lower_index(duplicate_labels, expected_recall):
    # Images 1 and 2 are the same vector (30°). Query 0 (label 0, at 0°) ties between them: the
    # lower index, 1, ranks first. Labels (1, 0): 1 is another identity -> miss; image 2 (label 0)
    # has image 1 (identical, label 1) nearest -> miss; image 1 is alone -> skipped. Recall 0.
    # Labels (0, 1): query 0 hits image 1; image 1 (label 0) has image 2 (label 1) nearest -> miss;
    # image 2 is alone. Recall 1/2. Only the tie rule separates the two.
    embeddings = at_angles([0, 30, 30])
    labels = [0, *duplicate_labels]
    result = both(embeddings, labels, ks=(1, 2))
    assert result == {"overall": entry(2, 1, 1, r1=expected_recall, r2=1.0)}
    assert per_row_loop_recall_at_1(embeddings, labels)["overall"]["recall@1"] == expected_recall


def test_many_exact_ties_across_block_boundaries():
    # 25 identical images: index 0 and 24 have label 0, indices 1..23 label 1. Every gallery is one
    # big tie, ranked by index. Query 0: 1..23 (label 1) come first, its hit (24) is 24th.
    # Query 24: index 0 (label 0) is first: hit at 1. Queries 1..23: index 0 (label 0) first, then
    # the lowest other label-1 index: hit at 2.
    embeddings = np.ones((25, 3))
    labels = [0] + [1] * 23 + [0]
    result = both(embeddings, labels, ks=(1, 2, 23, 24), chunk_sizes=(None, 1, 5, 7, 24))
    assert result == {"overall": entry(25, 0, 2, r1=1 / 25, r2=24 / 25, r23=24 / 25, r24=1.0)}


def test_k_larger_than_the_gallery_uses_the_whole_gallery():
    #   index:  0    1    2    (group g: all three; group h: empty of pairs)
    #   angle:  0°   10°  80°
    #   label:  A    B    A
    # Query 0: 1 (B) nearest, 2 (A) second: miss at 1, hit at 2 and at 5 (gallery of 2).
    # Query 2: 1 (B, 70°) nearest, then 0 (A, 80°): the same. Image 1 (B) is alone: skipped.
    result = both(at_angles([0, 10, 80]), [0, 1, 0], ["g", "g", "g"], ks=(1, 5, 1000))
    expected = entry(2, 1, 1, r1=0.0, r5=1.0, r1000=1.0)
    assert result == {"overall": expected, "g": expected}


def test_zero_embedding_row_has_similarity_zero_to_everything_and_no_nan():
    #   index:  0       1        2       3
    #   vector: (0,0)   (1,0)    (0,1)   (-1,0)
    #   label:  A       B        A       B
    # Similarities: 0 with 1, 2, 3: all 0. 1 with 2: 0, 1 with 3: -1. 2 with 3: 0.
    # Query 0: ties 1, 2, 3 -> order 1 (B), 2 (A): hit at 2.   Query 1: 0 (A) and 2 (A) tie at 0,
    # then 3 (B): hit at 3.   Query 2: all three tie: 0 (A) first: hit at 1.
    # Query 3: 0 (A) and 2 (A) tie at 0, 1 (B) at -1: hit at 3.
    embeddings = np.array([[0, 0], [1, 0], [0, 1], [-1, 0]], dtype=np.float32)
    result = both(embeddings, [0, 1, 0, 1], ks=(1, 2, 3))
    assert result == {"overall": entry(4, 0, 2, r1=0.25, r2=0.5, r3=1.0)}
    assert per_row_loop_recall_at_1(embeddings, [0, 1, 0, 1])["overall"]["recall@1"] == 0.25


def test_no_images_and_a_single_image():
    for n in (0, 1):
        result = both(np.ones((n, 4)), np.zeros(n, dtype=int), ["g"] * n, ks=(1, 5))
        expected = {"overall": entry(0, n, 0, r1=None, r5=None)}
        if n:
            expected["g"] = expected["overall"]
        assert result == expected


def test_output_is_plain_json_serialisable_python():
    rng = np.random.default_rng(3)
    result = recall_at_k(rng.standard_normal((30, 4)), np.arange(30) % 7, np.array(["a", "b"] * 15),
                         ks=[5, 1, 5])
    assert list(result) == ["overall", "a", "b"]
    for value in result.values():
        assert list(value) == ["n_queries", "n_skipped", "n_identities", "recall@1", "recall@5",
                               "n_queries_within", "n_identities_within", "recall@1_within",
                               "recall@5_within"]
        assert all(type(value[key]) is int for key in value if key.startswith("n_"))
        assert all(type(value[key]) is float for key in value if key.startswith("recall@"))
    assert json.loads(json.dumps(result)) == result


def test_input_dtypes_and_row_scale_do_not_matter():
    rng = np.random.default_rng(4)
    base = rng.integers(-3, 4, size=(40, 6))
    labels = rng.integers(0, 8, size=40)
    expected = recall_at_k(base.astype(np.float32), labels, ks=(1, 3))
    scales = 2.0 ** rng.integers(-4, 5, size=(40, 1))  # exact: rows scaled by powers of two
    for variant in (base, base.astype(np.float16), base.astype(np.float64) * scales):
        assert recall_at_k(variant, labels, ks=(1, 3), chunk_size=9) == expected


@pytest.mark.parametrize("call, message", [
    (lambda: recall_at_k(np.ones((3, 2)), [0, 0]), "labels"),
    (lambda: recall_at_k(np.ones(3), [0, 0, 0]), "embeddings"),
    (lambda: recall_at_k(np.ones((2, 2)), [0, 0], ["a"]), "groups"),
    (lambda: recall_at_k(np.ones((2, 2)), [0, 0], ["overall", "a"]), "overall"),
    (lambda: recall_at_k(np.ones((2, 2)), [0, 0], ks=(0, 1)), "ks"),
    (lambda: recall_at_k(np.ones((2, 2)), [0, 0], ks=()), "ks"),
    (lambda: recall_at_k(np.ones((2, 2)), [0, 0], ks=(1.5,)), "ks"),
    (lambda: recall_at_k(np.ones((2, 2)), [0, 0], chunk_size=0), "chunk_size"),
    (lambda: recall_at_k(np.array([[1.0, np.nan], [1, 0]]), [0, 0]), "NaN"),
    (lambda: brute_force_recall_at_k(np.array([[1.0, np.inf], [1, 0]]), [0, 0]), "NaN"),
])
def test_bad_input_is_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----------------------------------------------------------------------------- random cases

def reference_recall(embeddings, labels, groups, ks):
    """Recall@k straight from the definition: for each query sort its gallery (every other image,
    or the other images of its group) by (-similarity, index) in float64, hit if a first-k image
    has its label. Also returns, per entry, how many queries are "fragile" in either gallery: their
    best same-label image is within 1e-5 of another gallery image, so float32 rounding could decide
    them differently (never the case for the exact random data)."""
    x = np.asarray(embeddings, dtype=np.float64)
    norms = np.sqrt((x * x).sum(axis=1))
    unit = x / np.maximum(norms, np.finfo(np.float32).tiny)[:, None]
    sims = unit @ unit.T
    labels = [int(label) for label in labels]
    n = len(labels)

    def first_hit(i, gallery):
        """(0-based rank of the first same-label image or None if there is none, fragile)."""
        gallery = sorted((j for j in gallery if j != i), key=lambda j: (-sims[i, j], j))
        rank = next((r for r, j in enumerate(gallery) if labels[j] == labels[i]), None)
        if rank is None:
            return None, False
        best = sims[i, gallery[rank]]
        return rank, sum(abs(sims[i, j] - best) < 1e-5 for j in gallery) > 1

    whole = [first_hit(i, range(n)) for i in range(n)]
    within = whole if groups is None else [
        first_hit(i, [j for j in range(n) if groups[j] == groups[i]]) for i in range(n)]

    def one_entry(members, own_group=within):
        result, fragile = {}, 0
        for suffix, ranks in (("", whole), ("_within", own_group)):
            answered = [i for i in members if ranks[i][0] is not None]
            if suffix:
                result["n_queries_within"] = len(answered)
            else:
                result["n_queries"] = len(answered)
                result["n_skipped"] = len(members) - len(answered)
            result[f"n_identities{suffix}"] = len({labels[i] for i in answered})
            for k in ks:
                hits = sum(ranks[i][0] < k for i in answered)
                result[f"recall@{k}{suffix}"] = hits / len(answered) if answered else None
            fragile += sum(ranks[i][1] for i in answered)
        return result, fragile

    entries = {"overall": one_entry(list(range(n)), whole)}  # overall's "group" is everyone
    if groups is not None:
        for name in sorted(set(groups)):
            entries[name] = one_entry([i for i in range(n) if groups[i] == name])
    # Key order as the implementation's (n_identities comes before the recalls).
    order = lambda e: {key: e[key] for key in entry(0, 0, 0, **{f"r{k}": 0 for k in ks})}  # noqa: E731
    return ({name: order(value[0]) for name, value in entries.items()},
            {name: value[1] for name, value in entries.items()})


def exact_random_data(seed, n, dim):
    """Identities of ~2-6 images. Each identity has a prototype with ±1 on 1, 4 or 16 coordinates
    (norm 1, 2 or 4); its images flip a few signs (norm unchanged). Some images are exact copies of
    another identity's image, a few are zero, rows are scaled by powers of two: cosine similarities
    are multiples of 1/16, exact in float32, with many ties."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    label = 0
    while len(rows) < n:
        nonzeros = rng.choice([m for m in (1, 4, 16) if m <= dim])
        prototype = np.zeros(dim)
        positions = rng.choice(dim, size=nonzeros, replace=False)
        prototype[positions] = rng.choice([-1.0, 1.0], size=nonzeros)
        for _ in range(rng.integers(1, 7)):
            image = prototype.copy()
            flips = rng.choice(positions, size=rng.integers(0, max(1, nonzeros // 2) + 1), replace=False)
            image[flips] *= -1
            rows.append(image)
            labels.append(label)
        label += 1
    embeddings = np.array(rows[:n])
    labels = np.array(labels[:n])
    copies = rng.choice(n, size=n // 10, replace=False)
    embeddings[copies] = embeddings[rng.choice(n, size=len(copies))]  # exact duplicates
    embeddings[rng.choice(n, size=2, replace=False)] = 0.0
    embeddings *= 2.0 ** rng.integers(-3, 4, size=(n, 1))
    order = rng.permutation(n)  # identities' images spread over the index range
    groups = np.array(["north", "south", "east"])[rng.integers(0, 3, size=n)]
    return embeddings[order], labels[order], groups


RANDOM_CASES = [(seed, n, dim) for seed, n, dim in [
    (0, 50, 8), (1, 97, 16), (2, 150, 32), (3, 211, 8), (4, 300, 16), (5, 64, 32)]]


@pytest.mark.parametrize("seed, n, dim", RANDOM_CASES)
def test_random_exact_data_matches_the_definition_at_every_chunk_size(seed, n, dim):
    embeddings, labels, groups = exact_random_data(seed, n, dim)
    ks = (1, 2, 5, 10)
    expected, fragile = reference_recall(embeddings, labels, groups, ks)
    chunk_sizes = [7, n - 1, n, n + 13, None] + ([1] if n <= 100 else [])
    for chunk_size in chunk_sizes:
        assert recall_at_k(embeddings, labels, groups, ks, chunk_size) == expected, chunk_size
    assert brute_force_recall_at_k(embeddings, labels, groups, ks) == expected
    assert per_row_loop_recall_at_1(embeddings, labels)["overall"] == {
        key: expected["overall"][key] for key in ("n_queries", "n_skipped", "recall@1")}
    # The data really does test ties (at similarity 1 from duplicates, and between queries' bests).
    assert fragile["overall"] > 0


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_random_gaussian_data_matches_the_definition(seed):
    # Continuous embeddings: identity centres + noise, in float64 like a model's output.
    rng = np.random.default_rng(seed)
    n, dim = 240, 24
    labels = rng.integers(0, 60, size=n)
    embeddings = rng.standard_normal((60, dim))[labels] + 0.9 * rng.standard_normal((n, dim))
    groups = np.array(["a", "b", "c", "d"])[labels % 4]
    ks = (1, 5)
    expected, fragile = reference_recall(embeddings, labels, groups, ks)
    brute = brute_force_recall_at_k(embeddings, labels, groups, ks)
    for chunk_size in (7, n - 1, n, 1000, None) + ((1,) if seed == 10 else ()):
        result = recall_at_k(embeddings, labels, groups, ks, chunk_size)
        assert result == brute
        for name, value in expected.items():
            for key in [f"recall@{k}{suffix}" for k in ks for suffix in ("", "_within")]:
                # float32 vs float64 may only differ on near-tied queries
                assert (math.isclose(result[name][key], value[key])
                        or abs(result[name][key] - value[key]) * value["n_queries"]
                        <= fragile[name] + 1e-9), (name, key)
            assert result[name]["n_queries"] == value["n_queries"]
            assert result[name]["n_queries_within"] == value["n_queries_within"]
    assert 0.2 < expected["overall"]["recall@1"] < 0.95  # neither trivial nor hopeless


def test_extra_memory_is_blocks_not_the_full_matrix():
    rng = np.random.default_rng(5)
    n, dim, chunk = 3000, 16, 256
    embeddings = rng.standard_normal((n, dim)).astype(np.float32)
    labels = rng.integers(0, 600, size=n)
    tracemalloc.start()
    try:
        recall_at_k(embeddings, labels, ks=(1, 5), chunk_size=chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    full_matrix = n * n * 4  # 36 MB; one block is 0.26 MB
    assert peak < full_matrix / 8, peak


@pytest.mark.parametrize("seed, n, dim", RANDOM_CASES[:3])
def test_per_query_first_hit_ranks_match_the_definition(seed, n, dim):
    # The ranks every figure and every bootstrap resample are derived from, query by query.
    embeddings, labels, groups = exact_random_data(seed, n, dim)
    unit = np.asarray(embeddings, dtype=np.float64)
    unit = unit / np.maximum(np.linalg.norm(unit, axis=1), np.finfo(np.float32).tiny)[:, None]
    sims = unit @ unit.T
    k_max = 4

    def expected(i, gallery):
        ranked = sorted((j for j in gallery if j != i), key=lambda j: (-sims[i, j], j))
        same = [r for r, j in enumerate(ranked) if labels[j] == labels[i]]
        return -1 if not same else min(same[0], k_max)

    unit_rows, checked_labels, checked_groups, _ = recall_module.checked_inputs(
        embeddings, labels, groups, (1,))
    for chunk_size in (7, None):
        ranks = recall_module.first_hit_ranks(unit_rows, checked_labels, checked_groups, k_max,
                                              chunk_size)
        assert ranks.mixed.tolist() == [expected(i, range(n)) for i in range(n)]
        assert ranks.within.tolist() == [expected(i, np.flatnonzero(groups == groups[i]))
                                         for i in range(n)]


def test_every_upper_block_is_visited_once_after_its_ranking():
    rng = np.random.default_rng(8)
    embeddings, labels = rng.standard_normal((23, 5)), rng.integers(0, 6, 23)
    seen = np.zeros((23, 23), dtype=int)

    def visit(i0, j0, sims):
        seen[i0:i0 + sims.shape[0], j0:j0 + sims.shape[1]] += 1
        sims[:] = np.nan     # a visitor may scribble on the block: ranking is already done

    unit, checked, _, _ = recall_module.checked_inputs(embeddings, labels, None, (1,))
    ranks = recall_module.first_hit_ranks(unit, checked, None, 3, chunk_size=5, visit=visit)
    blocks = np.arange(23) // 5
    assert (seen == (blocks[:, None] <= blocks[None, :])).all()
    assert ranks.summary((1, 3)) == recall_at_k(embeddings, labels, ks=(1, 3), chunk_size=5)


@pytest.mark.parametrize("seed, n, dim", RANDOM_CASES[:4])
@pytest.mark.parametrize("level", [0.0, 0.25, 0.6])
def test_ranks_from_shared_block_hits_match_the_definition(monkeypatch, seed, n, dim, level):
    # The 1:1 view's floor makes the ranking's pass hand over each block's entries >= floor, while
    # it ranks rows, columns and the within-group rectangles; the floor also lowers the columns'
    # limits of what is looked at. Rows in group order with their input positions as ids (ties go
    # to the lower input index); floors at several levels and odd block sizes.
    monkeypatch.setattr(block_top_k, "_HITS_MAX_FRACTION", 1.0)   # use the hits however dense
    embeddings, labels, groups = exact_random_data(seed, n, dim)
    unit = np.asarray(embeddings, dtype=np.float64)
    unit = unit / np.maximum(np.linalg.norm(unit, axis=1), np.finfo(np.float32).tiny)[:, None]
    sims = unit @ unit.T
    k_max = 3

    def expected(i, gallery):
        ranked = sorted((j for j in gallery if j != i), key=lambda j: (-sims[i, j], j))
        same = [r for r, j in enumerate(ranked) if labels[j] == labels[i]]
        return -1 if not same else min(same[0], k_max)

    rows, checked_labels, checked_groups, _ = recall_module.checked_inputs(embeddings, labels,
                                                                         groups, (1,))
    order = recall_module.group_order(checked_groups)
    rows, in_order_labels, in_order_groups = rows[order], checked_labels[order], checked_groups[order]
    for chunk_size in (7, 13, n - 1):
        given = []

        def visit(i0, j0, block, hits):
            # The block's impostor pairs (above its diagonal on the block diagonal) >= the floor,
            # at their matrix positions.
            assert hits is not None
            entries = [(i0 + r, j0 + c) for r, c in np.argwhere(block >= level) if j0 + c > i0 + r]
            expected_hits = [(r, c) for r, c in entries if in_order_labels[r] != in_order_labels[c]]
            assert [(int(r), int(c)) for r, c in zip(hits.rows, hits.cols)] == expected_hits
            given.append((i0, j0))

        ranks = recall_module.first_hit_ranks(rows, in_order_labels, in_order_groups, k_max,
                                              chunk_size, visit, lambda i0, j0: level, ids=order)
        ranks = recall_module.ranks_in_input_order(ranks, order, checked_labels, checked_groups)
        n_blocks = -(-n // chunk_size)
        assert len(given) == n_blocks * (n_blocks + 1) // 2
        assert ranks.mixed.tolist() == [expected(i, range(n)) for i in range(n)]
        assert ranks.within.tolist() == [expected(i, np.flatnonzero(groups == groups[i]))
                                         for i in range(n)]


def test_a_visited_pass_needs_its_rows_in_group_order():
    embeddings, labels, groups = exact_random_data(0, 50, 8)
    unit, labels, groups, _ = recall_module.checked_inputs(embeddings, labels, groups, (1,))
    with pytest.raises(ValueError, match="group order"):
        recall_module.first_hit_ranks(unit, labels, groups, 3, 7, visit=lambda *args: None)


@pytest.mark.parametrize("prefetch", [False, True])
def test_blocks_are_the_upper_triangle_products_whether_computed_ahead_or_not(monkeypatch, prefetch):
    # Computed one ahead in a helper thread (forced here at any size) or in turn, each block is the
    # product of its rows, a diagonal block above its diagonal (its pairs; SYRK); a caller
    # scribbling on a block spoils no other one.
    monkeypatch.setattr(block_top_k, "_PREFETCH_MIN_WORK", 0 if prefetch else 2**62)
    rng = np.random.default_rng(3)
    unit = rng.standard_normal((47, 6)).astype(np.float32)
    full = unit.astype(np.float64) @ unit.T.astype(np.float64)
    seen = []
    for i0, j0, block in block_top_k.similarity_blocks(unit, 10):
        expected = full[i0:i0 + 10, j0:j0 + 10]
        defined = np.ones(block.shape, dtype=bool) if i0 != j0 else np.triu(np.ones(block.shape, bool), 1)
        np.testing.assert_allclose(block[defined], expected[defined], rtol=1e-5, atol=1e-5)
        block[:] = np.nan
        seen.append((i0, j0))
    assert seen == [(i, j) for i in range(0, 47, 10) for j in range(i, 47, 10)]
    embeddings, labels, groups = exact_random_data(4, 300, 16)
    expected_recall, _ = reference_recall(embeddings, labels, groups, (1, 3))
    assert recall_at_k(embeddings, labels, groups, (1, 3), chunk_size=37) == expected_recall
