"""Exact 1:1 verification (core/verification.py) against a NumPy brute force written from the
definitions: all pairs from the full float64 similarity matrix, sorted impostor scores, counts.

Random cases use tests.test_recall.exact_random_data: similarities are multiples of 1/16, exact in
float32 and float64 alike, with many exact ties (duplicates across identities, zero rows), so the
threshold often sits on a tie and the tie rule (>= matches) is exercised.
"""
import math
import tracemalloc

import numpy as np
import pytest

from core import block_top_k, false_matches, pair_counter, pair_selection
from core import recall as recall_module
from core import verification as verification_module
from core.intervals import identity_units, ratio_replicates, resample_weights
from core.recall import recall_at_k
from core.verification import far_key, ranks_and_verification, verification
from tests.literal_bootstrap import literal_replicates, pair_scores
from tests.test_recall import exact_random_data, reference_recall

FARS = (1e-1, 1e-2, 1e-3)


@pytest.fixture(params=["selection", "radix"])
def way(request, monkeypatch):
    """Both exact ways of the impostor side: the one-pass selection (the budget never binds here)
    and the three radix passes (forced by a budget of nothing)."""
    if request.param == "radix":
        monkeypatch.setattr(verification_module, "_selection_fits", lambda sizes, n: False)
    return request.param


def allowed(rate, n_pairs):
    """floor(rate x pairs), the false matches a rate allows (0.29 x 100 -> 29)."""
    return int(math.floor(round(rate * n_pairs, 6)))


def operating_threshold(impostor_scores, all_scores, target_fmr):
    """The definition: reject the (allowed + 1)-th largest impostor score v and everything below
    it; the threshold is midway between v and the next larger score of any pair (or the ceiling
    max(1, v) + 2^-8 when there is none)."""
    ranked = np.sort(impostor_scores)[::-1]
    rejected = ranked[allowed(target_fmr, len(ranked))]
    above = all_scores[all_scores > rejected]
    upper = above.min() if len(above) else max(1.0, rejected) + 2.0 ** -8
    return (rejected + upper) / 2


def reference(embeddings, labels, groups, target_fmr, fars=FARS):
    """Every figure from the full matrix: pairs i < j, genuine = same label."""
    x = np.asarray(embeddings, dtype=np.float64)
    unit = x / np.maximum(np.linalg.norm(x, axis=1), np.finfo(np.float32).tiny)[:, None]
    n = len(labels)
    i, j = np.triu_indices(n, 1)
    scores = (unit @ unit.T)[i, j]
    genuine = labels[i] == labels[j]
    impostor_scores = np.sort(scores[~genuine])[::-1]
    threshold = (operating_threshold(impostor_scores, scores, target_fmr)
                 if len(impostor_scores) else None)
    names = ["overall"] + (sorted(set(groups.tolist())) if groups is not None else [])
    result = {"threshold": threshold}
    for name in names:
        scope = (np.ones(len(i), bool) if name == "overall"
                 else (groups[i] == name) & (groups[j] == name))
        gen, imp = scores[scope & genuine], np.sort(scores[scope & ~genuine])[::-1]
        entry = {"n_genuine": len(gen), "n_impostor": len(imp),
                 "fnmr": float(np.mean(gen < threshold)) if len(gen) and threshold is not None else None,
                 "fmr": float(np.mean(imp >= threshold)) if len(imp) and threshold is not None else None}
        for far in fars:
            # TAR at the scope's own threshold for FAR `far` (the same rule: FAR <= far).
            n_allowed = allowed(far, len(imp))
            entry[far_key(far)] = (float(np.mean(gen > imp[n_allowed]))
                                   if n_allowed >= pair_counter.MIN_FALSE_ACCEPTS and len(gen)
                                   else None)
        result[name] = entry
    group_entries = [result[name] for name in names[1:]]
    fmrs = [e["fmr"] for e in group_entries if e["fmr"] is not None]
    fnmrs = [e["fnmr"] for e in group_entries if e["fnmr"] is not None]
    result["fmr_differential"] = max(fmrs) / target_fmr if fmrs else None
    if not fnmrs:
        result["skewed_error_ratio"] = None
    elif min(fnmrs) == 0:
        result["skewed_error_ratio"] = 1.0 if max(fnmrs) == 0 else math.inf
    else:
        result["skewed_error_ratio"] = max(fnmrs) / min(fnmrs)
    return result, (i, j, scores, genuine)


def assert_matches(summary, expected):
    for key in ("threshold", "fmr_differential", "skewed_error_ratio"):
        assert summary[key] == pytest.approx(expected[key], abs=1e-12) if expected[key] is not None \
            else summary[key] is None, key
    for name, entry in expected.items():
        if not isinstance(entry, dict):
            continue
        for key, value in entry.items():
            assert summary[name][key] == (pytest.approx(value, abs=1e-12) if value is not None
                                          else None), (name, key)


CASES = [(0, 60, 8, 0.05), (1, 150, 16, 1e-2), (2, 211, 8, 1e-3), (3, 300, 16, 0.2)]


@pytest.mark.parametrize("seed, n, dim, target_fmr", CASES)
def test_every_figure_matches_the_brute_force_with_ties_at_every_chunk_size(seed, n, dim, target_fmr, way):
    embeddings, labels, groups = exact_random_data(seed, n, dim)
    expected, _ = reference(embeddings, labels, groups, target_fmr)
    for chunk_size in (7, n - 1, None):
        result = verification(embeddings, labels, groups, target_fmr, FARS, chunk_size)
        assert_matches(result.summary, expected)


@pytest.mark.parametrize("seed, n, dim, target_fmr", CASES[1:3])
def test_tied_scores_are_counted_not_stored_when_the_selection_is_small(monkeypatch, seed, n, dim,
                                                                        target_fmr):
    # Keep only the few largest impostor scores: the running selection compacts many times and the
    # scores tied with its cut become counts. The figures must not change.
    monkeypatch.setattr(pair_counter, "DET_MIN_KEPT", 3)
    embeddings, labels, groups = exact_random_data(seed, n, dim)
    expected, _ = reference(embeddings, labels, groups, target_fmr)
    assert_matches(verification(embeddings, labels, groups, target_fmr, FARS, 7).summary, expected)


def test_identical_embeddings_all_tie_so_every_pair_is_rejected(way):
    # Every pair scores 1.0. Accepting the tied score would accept every impostor (FMR 1 > 1e-2),
    # so the threshold lies above it, midway to the ceiling 1 + 2^-8: nothing matches.
    labels = np.repeat(np.arange(30), 3)
    groups = np.array(["a", "b"])[labels % 2]
    result = verification(np.ones((90, 4)), labels, groups, 1e-2, FARS, chunk_size=16).summary
    assert result["threshold"] == 1.0 + 2.0 ** -9
    for scope in ("overall", "a", "b"):
        assert result[scope]["fmr"] == 0.0 and result[scope]["fnmr"] == 1.0
    assert result["skewed_error_ratio"] == 1.0      # every FNMR is 1
    assert result["fmr_differential"] == 0.0


def test_singletons_one_group_and_groups_without_pairs(way):
    #   labels:  0 0 1 2 3 3   groups: x x x x y z
    # Group y holds one image (no pair at all), z one image too; x holds labels 0, 0, 1, 2.
    rng = np.random.default_rng(4)
    embeddings = rng.choice([-1.0, 1.0], size=(6, 4))     # norm 2: similarities exact in float32
    labels = np.array([0, 0, 1, 2, 3, 3])
    groups = np.array(["x", "x", "x", "x", "y", "z"])
    expected, _ = reference(embeddings, labels, groups, 0.3)
    result = verification(embeddings, labels, groups, 0.3, FARS).summary
    assert_matches(result, expected)
    for name in ("y", "z"):
        assert result[name]["n_genuine"] == 0 and result[name]["fnmr"] is None
        assert result[name]["n_impostor"] == 0 and result[name]["fmr"] is None
    # One group only, and no groups at all: the group entry equals overall.
    one = verification(embeddings, labels, np.array(["g"] * 6), 0.3, FARS).summary
    none = verification(embeddings, labels, None, 0.3, FARS).summary
    assert {k: v for k, v in one["g"].items()} == one["overall"] == none["overall"]
    assert set(none) == {"target_fmr", "threshold", "fmr_differential", "skewed_error_ratio",
                         "fmr_bootstrap", "overall"}


def test_no_impostor_pair_means_no_threshold_and_no_rates(way):
    result = verification(np.eye(3), [5, 5, 5], None, 1e-3).summary
    assert result["threshold"] is None
    assert result["overall"]["fnmr"] is None and result["overall"]["fmr"] is None
    assert result["overall"]["n_genuine"] == 3 and result["overall"]["n_impostor"] == 0


def test_skewed_error_ratio_when_the_lowest_fnmr_is_zero():
    assert verification_module.skewed_error_ratio([0.0, 0.0, None]) == 1.0
    assert verification_module.skewed_error_ratio([0.0, 0.1]) == math.inf  # unbounded: the worst
    assert verification_module.skewed_error_ratio([0.05, 0.2]) == pytest.approx(4.0)
    assert verification_module.skewed_error_ratio([]) is None


def test_tar_needs_enough_impostor_pairs_for_its_far(way):
    # 60 images of 20 identities: 1,710 impostor pairs. FAR 1e-2 -> k = 18 >= 10: reported;
    # FAR 1e-3 -> k = 2 < 10: None.
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(20), 3)
    embeddings = rng.normal(size=(20, 8))[labels] + 0.7 * rng.normal(size=(60, 8))
    result = verification(embeddings, labels, None, 1e-2, (1e-2, 1e-3)).summary["overall"]
    assert result["n_impostor"] == 1710
    assert result["tar@far=1e-2"] is not None and result["tar@far=1e-3"] is None


@pytest.mark.parametrize("seed, n, dim, target_fmr", CASES[2:])
def test_sampled_starting_floors_and_the_second_pass_when_one_is_too_high(monkeypatch, seed, n, dim,
                                                                         target_fmr):
    monkeypatch.setattr(pair_counter, "DET_MIN_KEPT", 20)
    monkeypatch.setattr(pair_selection, "SAMPLED_ROWS", 40)
    embeddings, labels, groups = exact_random_data(seed, n, dim)
    expected, _ = reference(embeddings, labels, groups, target_fmr)
    floors = []
    original = pair_selection._sampled_floor
    monkeypatch.setattr(pair_selection, "_sampled_floor",
                        lambda *args: floors.append(original(*args)) or floors[-1])
    assert_matches(verification(embeddings, labels, groups, target_fmr, FARS, 16).summary, expected)
    assert any(np.isfinite(floors))                  # the sampled floors were used
    # A floor above the needed scores leaves a selection short: detected, and a second pass
    # without floors gives the exact figures.
    monkeypatch.setattr(pair_selection, "_sampled_floor", lambda *args: 0.99)
    assert_matches(verification(embeddings, labels, groups, target_fmr, FARS, 16).summary, expected)


def test_bootstrap_sums_recount_every_resample_of_the_rebuilt_eval_set(way):
    # Each resample's FNMR and FMR from the closed-form sums equal the figures recounted by brute
    # force on the eval set rebuilt from the drawn identities (tests/literal_bootstrap.py), in
    # every scope. The data has identities spread over groups (their cross-group pairs are genuine).
    embeddings, labels, groups = exact_random_data(5, 120, 8)
    result = verification(embeddings, labels, groups, 0.05, FARS, chunk_size=11)
    assert result.summary["fmr_bootstrap"] == "exact"
    units, unit_groups = identity_units(labels, groups)
    weights = resample_weights(unit_groups, 40, seed=2)
    literal = literal_replicates(pair_scores(embeddings), labels, groups, units, weights,
                                 result.summary["threshold"])
    for name in ["overall"] + sorted(set(groups.tolist())):
        for key in ("fnmr", "fmr"):
            mine = ratio_replicates(weights, *result.unit_sums[name][key])[:, 0]
            np.testing.assert_allclose(mine, literal[name][key], rtol=1e-12, atol=0,
                                       err_msg=f"{name} {key}")


def test_det_points_are_exact_rates_at_thresholds_between_scores(way):
    embeddings, labels, groups = exact_random_data(6, 200, 16)
    result = verification(embeddings, labels, groups, 1e-2, FARS, chunk_size=32).summary
    _, (i, j, scores, genuine) = reference(embeddings, labels, groups, 1e-2)
    for name in ("overall", "north"):
        scope = np.ones(len(i), bool) if name == "overall" else (groups[i] == name) & (groups[j] == name)
        impostors, genuines = scores[scope & ~genuine], scores[scope & genuine]
        det = result[name]["det"]
        assert len(det["fmr"]) >= 5 and det["fmr"] == sorted(det["fmr"])
        assert det["fmr"][-1] >= 0.1           # down to the largest FAR at least
        for fmr, fnmr in zip(det["fmr"], det["fnmr"]):
            # Both rates are those of one threshold t (pairs >= t match); the rates only change at
            # the scores themselves, so some score of the scope is such a t.
            assert any(np.mean(impostors >= t) == pytest.approx(fmr, abs=1e-12)
                       and np.mean(genuines < t) == pytest.approx(fnmr, abs=1e-12)
                       for t in np.unique(scores[scope])), (name, fmr, fnmr)


def test_one_pass_gives_the_same_ranks_and_figures_as_separate_calls(way):
    embeddings, labels, groups = exact_random_data(7, 150, 16)
    ranks, result = ranks_and_verification(embeddings, labels, groups, ks=(1, 5), target_fmr=0.01,
                                           chunk_size=20)
    assert ranks.summary((1, 5)) == recall_at_k(embeddings, labels, groups, ks=(1, 5))
    alone = verification(embeddings, labels, groups, 0.01, chunk_size=33).summary
    assert result.summary == alone


@pytest.mark.parametrize("call, message", [
    (lambda: verification(np.ones((3, 2)), [0, 1, 2], None, 0.0), "target_fmr"),
    (lambda: verification(np.ones((3, 2)), [0, 1, 2], None, 1e-3, (2.0,)), "fars"),
    (lambda: verification(np.ones((2, 2)), [0, 1], ["threshold", "a"]), "threshold"),
    (lambda: verification(np.ones((2, 2)), [0, 1], ["overall", "a"]), "overall"),
])
def test_bad_settings_are_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_extra_memory_is_blocks_not_all_pairs(monkeypatch):
    # The DET keeps at least DET_MIN_KEPT scores per scope whatever N is (a constant 100,000); at
    # this small N that constant would dominate, so it is lowered to see how memory grows with N.
    monkeypatch.setattr(pair_counter, "DET_MIN_KEPT", 2000)
    rng = np.random.default_rng(5)
    n, dim = 3000, 16
    embeddings = rng.standard_normal((n, dim)).astype(np.float32)
    labels = rng.integers(0, 600, size=n)
    groups = np.array(["a", "b", "c"])[labels % 3]
    tracemalloc.start()
    try:
        verification(embeddings, labels, groups, 1e-3, chunk_size=256)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    all_pairs = n * (n - 1) // 2 * 4      # every pair's float32 score: 18 MB
    assert peak < all_pairs / 3, peak


def test_radix_keys_sort_like_the_scores_and_map_back():
    rng = np.random.default_rng(9)
    scores = np.concatenate([rng.uniform(-1, 1, 5000), [0.0, -0.0, 1.0, -1.0, 1e-40, -1e-40, np.inf,
                                                        -np.inf]]).astype(np.float32)
    keys = pair_selection.sortable_keys(scores)
    order = np.argsort(keys, kind="stable")
    assert np.all(np.diff(scores[order].astype(np.float64)) >= 0)
    assert keys[scores == 0.0].min() == keys[scores == 0.0].max()       # -0.0 is 0.0
    assert [pair_selection.key_value(int(k)) for k in keys] == scores.astype(np.float64).tolist()


def test_the_budget_picks_the_way(monkeypatch):
    # FAR 0.6 of the 4,950 impostor pairs of 100 images: 2,970 kept scores against a budget of
    # 20 per image + DET_MIN_KEPT per scope.
    monkeypatch.setattr(pair_counter, "DET_MIN_KEPT", 0)
    monkeypatch.setattr(pair_counter, "KEPT_PER_IMAGE", 20)
    labels = np.arange(100)
    built = []
    original = pair_selection._RadixCounter.__init__
    monkeypatch.setattr(pair_selection._RadixCounter, "__init__",
                        lambda self, *args: built.append(args) or original(self, *args))
    embeddings = np.random.default_rng(0).normal(size=(100, 4))
    verification(embeddings, labels, None, 1e-3, (0.6,))
    assert len(built) == 1
    verification(embeddings, labels, None, 1e-3, (0.01,))        # 50 kept: one pass
    assert len(built) == 1


def test_radix_memory_grows_with_images_not_pairs(monkeypatch):
    monkeypatch.setattr(verification_module, "_selection_fits", lambda sizes, n: False)
    rng = np.random.default_rng(5)
    peaks = []
    for n in (2000, 6000):
        embeddings = rng.standard_normal((n, 16)).astype(np.float32)
        labels = rng.integers(0, n // 5, size=n)
        groups = np.array(["a", "b", "c"])[labels % 3]
        tracemalloc.start()
        try:
            verification(embeddings, labels, groups, 1e-3, chunk_size=256)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    # 9x the pairs (16 M more, 64 MB as float32 scores), 3x the images: the histograms and blocks
    # are constant, and what grows is per image (embeddings, labels, genuine pairs).
    assert peaks[1] - peaks[0] < 4000 * 1000, peaks


@pytest.mark.parametrize("seed, n, dim, target_fmr", CASES)
def test_the_threshold_is_the_smallest_with_fmr_at_most_the_target_with_heavy_ties(seed, n, dim,
                                                                                  target_fmr, way):
    # Brute force over every candidate threshold (each observed score, and just above it): the
    # operating threshold gives the same counts as the smallest threshold whose overall FMR is
    # <= target, and it lies strictly between two observed scores.
    embeddings, labels, groups = exact_random_data(seed, n, dim)
    result = verification(embeddings, labels, groups, target_fmr, FARS, 16).summary
    _, (i, j, scores, genuine) = reference(embeddings, labels, groups, target_fmr)
    impostor = np.sort(scores[~genuine])
    threshold = result["threshold"]
    assert not np.any(scores == threshold)
    candidates = np.unique(np.concatenate([scores, np.nextafter(scores, np.inf)]))
    fmr_at = len(impostor) - np.searchsorted(impostor, candidates, "left")
    admissible = candidates[fmr_at <= target_fmr * len(impostor) + 1e-9]
    smallest = admissible.min()
    assert np.mean(scores[~genuine] >= threshold) == np.mean(scores[~genuine] >= smallest)
    assert np.mean(scores[genuine] < threshold) == np.mean(scores[genuine] < smallest)
    assert result["overall"]["fmr"] <= target_fmr
    # Ties are heavy here: the rejected score is shared by several impostor pairs.
    below = impostor[impostor < threshold].max()
    assert (scores == below).sum() > 1


@pytest.mark.parametrize("seed", [0, 2])
def test_another_precision_or_blocking_counts_the_same_pairs(seed, way):
    # Rows scaled by 3 (not a power of two): normalisation and products round differently in
    # float32, so scores move by an ulp or so; the threshold sits midway between two scores, far
    # from any, so every count is the same.
    embeddings, labels, groups = exact_random_data(seed, 211, 8)
    base = verification(embeddings, labels, groups, 1e-2, FARS, 16).summary
    other = verification(3.0 * embeddings.astype(np.float32), labels, groups, 1e-2, FARS, 50).summary
    assert other["threshold"] == pytest.approx(base["threshold"], abs=1e-6)
    for scope in ("overall", "north", "south", "east"):
        assert other[scope]["fmr"] == base[scope]["fmr"] and other[scope]["fnmr"] == base[scope]["fnmr"]


def test_the_exact_fmr_bootstrap_holds_up_to_its_unit_pair_budget(monkeypatch, way):
    # The pairs of identities (units) with a false match, counted by brute force: exactly that many
    # fit the budget (exact sums); one fewer does not (first-order sums, and the summary says so).
    embeddings, labels, groups = exact_random_data(2, 211, 8)
    _, (i, j, scores, genuine) = reference(embeddings, labels, groups, 0.05)
    threshold = verification(embeddings, labels, groups, 0.05, FARS).summary["threshold"]
    units, _ = identity_units(labels, groups)
    false_match = ~genuine & (scores >= threshold)
    a, b = units[i[false_match]], units[j[false_match]]
    n_unit_pairs = len(set(zip(np.minimum(a, b).tolist(), np.maximum(a, b).tolist())))
    assert n_unit_pairs < false_match.sum()          # several image pairs share a unit pair
    monkeypatch.setattr(false_matches, "EXACT_UNIT_PAIRS", n_unit_pairs)
    assert verification(embeddings, labels, groups, 0.05, FARS, 16).summary["fmr_bootstrap"] == "exact"
    monkeypatch.setattr(false_matches, "EXACT_UNIT_PAIRS", n_unit_pairs - 1)
    summary = verification(embeddings, labels, groups, 0.05, FARS, 16).summary
    assert summary["fmr_bootstrap"] == "first_order"


@pytest.mark.parametrize("seed, n, dim, target_fmr", CASES[1:])
def test_one_pass_with_shared_block_hits_matches_the_brute_force(monkeypatch, seed, n, dim, target_fmr):
    # Sampled floors made finite at this N: every block's entries >= the floor are found in the
    # ranking's pass and serve the 1:1 counts (block_top_k.BlockHits). Both must stay exact.
    monkeypatch.setattr(pair_counter, "DET_MIN_KEPT", 20)
    monkeypatch.setattr(pair_selection, "SAMPLED_ROWS", 40)
    monkeypatch.setattr(block_top_k, "_HITS_MAX_FRACTION", 1.0)
    shared = []
    original = block_top_k.rank_block
    monkeypatch.setattr(recall_module, "rank_block",
                        lambda *args: shared.append(original(*args)) or shared[-1])
    embeddings, labels, groups = exact_random_data(seed, n, dim)
    expected, _ = reference(embeddings, labels, groups, target_fmr)
    expected_recall, _ = reference_recall(embeddings, labels, groups, (1, 5))
    for chunk_size in (7, 16, None):
        ranks, result = ranks_and_verification(embeddings, labels, groups, (1, 5), target_fmr, FARS,
                                               chunk_size)
        assert_matches(result.summary, expected)
        assert ranks.summary((1, 5)) == expected_recall
    assert any(hits is not None and np.isfinite(hits.floor) for hits in shared)
