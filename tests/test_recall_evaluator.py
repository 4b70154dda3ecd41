"""The evaluation's numbers, intervals and verdicts (`executor.evaluate`, no pipeline needed) and
its HTML report. Expected values come from tests.test_recall.reference_recall and
tests.test_verification.reference (written from the definitions), or from reasoning."""
import html
import json
import math
import re

import numpy as np
import pytest

from components.recall_evaluator import executor, gate, report
from core import intervals, small_counts
from tests.test_recall import exact_random_data, reference_recall
from tests.test_verification import reference as reference_verification


def clustered(rng, identities, per_identity, noise, groups):
    centres = rng.normal(size=(identities, 16))
    labels = np.repeat(np.arange(identities), per_identity)
    embeddings = centres[labels] + noise * rng.normal(size=(len(labels), 16))
    group_names = np.array([groups[i % len(groups)] for i in labels])
    return {"embeddings": embeddings, "labels": labels, "groups": group_names}


def failed(verdicts):
    return sorted((v["rule"], v["scope"]) for v in verdicts if not v["passed"])


def cross_group_example():
    """20 identities x 2 images in group a and 20 in group b. Identity j of b has both images on
    either side of a's image a_j1 (at distance eps), a's second image a_j2 is closer to a_j1 (delta
    < eps) in an orthogonal direction. Within each group every query's nearest image is its own
    identity's; against the whole gallery b's queries find a_j1 first, except b's last identity,
    which sits apart: 1 identity of 20 -> b's whole-gallery Recall@1 is 2 / 40 = 0.05."""
    rng = np.random.default_rng(0)
    dim, eps, delta = 64, 0.1, 0.05
    centres = rng.normal(size=(21, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rows, labels, groups = [], [], []
    for j in range(20):
        u, v = np.linalg.qr(rng.normal(size=(dim, 2)))[0].T      # orthonormal directions
        rows += [centres[j], centres[j] + delta * v]
        labels += [j, j]
        groups += ["a", "a"]
        b_centre = centres[20] * 3 + centres[j] if j == 19 else centres[j]
        rows += [b_centre + eps * u, b_centre - eps * u]
        labels += [100 + j, 100 + j]
        groups += ["b", "b"]
    return {"embeddings": np.array(rows), "labels": np.array(labels), "groups": np.array(groups)}


def test_cross_group_confusions_are_not_blessed_under_the_default_gate():
    data = cross_group_example()
    metrics = executor.evaluate(data, gate.GateConfig())
    expected, _ = reference_recall(data["embeddings"], data["labels"], data["groups"], (1,))
    assert expected["b"]["recall@1_within"] == expected["a"]["recall@1_within"] == 1.0
    assert expected["b"]["recall@1"] == pytest.approx(0.05)
    for scope in ("overall", "a", "b"):
        for key in ("recall@1", "recall@1_within"):
            assert metrics["candidate"][scope][key] == pytest.approx(expected[scope][key])
    assert not metrics["blessed"]
    assert ("min_recall", "b") in failed(metrics["verdicts"])
    # The original protocol (within-group galleries) would have blessed it.
    assert executor.evaluate(data, gate.GateConfig(gallery="within"))["blessed"]


def test_every_number_matches_the_brute_force_and_the_keys_are_as_documented():
    embeddings, labels, groups = exact_random_data(3, 211, 8)
    data = {"embeddings": embeddings, "labels": labels, "groups": groups}
    config = gate.GateConfig(ks=[1, 5], target_fmr=0.01, min_recall=0.0, min_group_identities=1)
    metrics = executor.evaluate(data, config)
    json.dumps(metrics, allow_nan=False)                          # plain JSON for scripts
    expected, _ = reference_recall(embeddings, labels, groups, (1, 2, 5, 10, 20))
    expected_1to1, _ = reference_verification(embeddings, labels, groups, 0.01, (1e-2, 1e-3, 1e-4))
    assert metrics["verification"]["threshold"] == pytest.approx(expected_1to1["threshold"])
    for scope in ("overall", "east", "north", "south"):
        entry = metrics["candidate"][scope]
        assert {"recall@1", "recall@1_ci", "recall@1_within", "recall@5_ci", "n_queries",
                "n_identities"} <= set(entry)
        for key in ("n_queries", "n_identities", "recall@1", "recall@5", "recall@1_within",
                    "recall@5_within"):
            assert entry[key] == pytest.approx(expected[scope][key]), (scope, key)
        for key in ("recall@1", "recall@5", "recall@1_within"):
            lo, hi = entry[f"{key}_ci"]
            assert lo <= entry[key] <= hi
        one = metrics["verification"][scope]
        for key in ("fnmr", "fmr", "tar@far=1e-2", "tar@far=1e-3", "tar@far=1e-4"):
            assert one[key] == (pytest.approx(expected_1to1[scope][key])
                                if expected_1to1[scope][key] is not None else None), (scope, key)
        assert one["fnmr_ci"][0] <= one["fnmr"] <= one["fnmr_ci"][1]
        assert one["fmr_ci"][0] <= one["fmr"] <= one["fmr_ci"][1]
        assert metrics["deltas"][scope]["recall@1"] is None            # no baseline
        assert metrics["curves"]["candidate"][scope]["20"] == pytest.approx(expected[scope]["recall@20"])
    assert {"target_fmr", "threshold", "fmr_differential", "skewed_error_ratio",
            "fmr_bootstrap"} <= set(metrics["verification"])
    assert metrics["verification"]["fmr_bootstrap"] == "exact"
    assert metrics["blessed"] is True and metrics["failed_rules"] == []


def test_recall_intervals_resample_identities_with_the_configured_seed():
    # The interval of group north's whole-gallery Recall@1, recomputed here from per-identity hits
    # of the reference ranking with the same resampling weights.
    embeddings, labels, groups = exact_random_data(4, 150, 16)
    data = {"embeddings": embeddings, "labels": labels, "groups": groups}
    config = gate.GateConfig(bootstrap_seed=7, bootstrap_resamples=500)
    metrics = executor.evaluate(data, config)
    x = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1), 1e-30)[:, None]
    sims = x @ x.T
    units, unit_groups = intervals.identity_units(labels, groups)
    hits = {scope: np.zeros(units.max() + 1) for scope in ("north", "overall")}
    queries = {scope: np.zeros(units.max() + 1) for scope in ("north", "overall")}
    for i in range(len(labels)):
        others = [j for j in range(len(labels)) if j != i]
        if not any(labels[j] == labels[i] for j in others):
            continue
        best = min(others, key=lambda j: (-sims[i, j], j))
        for scope in ("overall", "north") if groups[i] == "north" else ("overall",):
            queries[scope][units[i]] += 1
            hits[scope][units[i]] += labels[best] == labels[i]
    weights = intervals.resample_weights(unit_groups, 500, seed=7)
    # The percentile interval of those resamples, widened per end by the small-count interval
    # (core.small_counts, tested on its own in tests/test_small_counts.py: Wilson at the effective
    # count; the prior design effect from the overall scope).
    reps = {s: intervals.ratio_replicates(weights, hits[s], queries[s]) for s in hits}
    rate = {s: hits[s].sum() / queries[s].sum() for s in hits}
    percentile = intervals.ratio_interval(weights, hits["north"], queries["north"])
    expected = small_counts.small_count_interval(
        rate["north"], queries["north"].sum(), reps["north"], queries["north"], percentile,
        prior_design_effect=small_counts.design_effect(rate["overall"], queries["overall"].sum(),
                                                       reps["overall"]))
    got = metrics["candidate"]["north"]["recall@1_ci"]
    assert got == pytest.approx(expected)
    assert got[0] <= percentile[0] and got[1] >= percentile[1]


def test_paired_deltas_and_regressions_against_the_baseline():
    rng = np.random.default_rng(0)
    good = clustered(rng, 20, 4, 0.05, ["a", "b"])
    noisy = dict(good, embeddings=good["embeddings"] + 3.0 * rng.normal(size=(80, 16)))
    pixels = dict(noisy, resolution="4x4x3")
    config = gate.GateConfig(min_recall=0.9, max_drop=0.02)
    metrics = executor.evaluate(good, config, baseline=noisy, pixels=pixels)
    assert metrics["candidate"]["overall"]["recall@1"] == 1.0
    assert metrics["candidate"]["a"]["n_queries"] == 40 and metrics["candidate"]["a"]["n_identities"] == 10
    base = metrics["baseline"]["a"]["recall@1"]
    assert base < 0.9
    assert metrics["deltas"]["a"]["recall@1"] == pytest.approx(1.0 - base)
    lo, hi = metrics["deltas"]["a"]["recall@1_ci"]
    assert 0 < lo <= 1.0 - base <= hi
    assert metrics["blessed"] and metrics["failed_rules"] == []
    assert metrics["pixel_baseline"]["overall"]["recall@1"] < 0.9
    assert set(metrics["curves"]["candidate"]["overall"]) >= {"1", "2", "5", "10", "20"}
    # The other way round the candidate regressed everywhere, beyond noise: not blessed.
    worse = executor.evaluate(noisy, config, baseline=good)
    assert not worse["blessed"]
    assert {("max_drop", "a"), ("max_drop", "b"), ("min_recall", "overall")} <= set(
        failed(worse["verdicts"]))
    # The same model as its own baseline: every difference is exactly 0; with every query hit
    # (Recall@1 = 1 for both), no discordant query seen bounds the difference only as far as the
    # identities allow: symmetric about 0, on each side Wilson's bound for 0 misses out of G = 10
    # identities (10 x 4 queries, Kish's count), with the small-cluster correction: n = G - 1 = 9
    # and Student's t with 9 degrees of freedom, 1 - n / (n + t^2) = t^2 / (9 + t^2).
    from scipy import stats

    same = executor.evaluate(good, config, baseline=good)
    assert same["deltas"]["b"]["recall@1"] == 0.0
    lo, hi = same["deltas"]["b"]["recall@1_ci"]
    assert same["candidate"]["b"]["n_identities"] == 10
    t = stats.t.ppf(0.975, 9)
    assert hi == pytest.approx(t * t / (9 + t * t)) and lo == pytest.approx(-hi)


def test_a_baseline_of_other_images_is_refused():
    rng = np.random.default_rng(1)
    data = clustered(rng, 12, 3, 0.5, ["a"])
    other = dict(data, labels=data["labels"][::-1].copy())
    with pytest.raises(ValueError, match="baseline.*labels differ"):
        executor.evaluate(data, gate.GateConfig(), baseline=other)


def test_small_groups_fail_closed_unless_ungated():
    rng = np.random.default_rng(2)
    data = clustered(rng, 24, 3, 0.05, ["big", "big", "big", "tiny"])    # 18 and 6 identities
    metrics = executor.evaluate(data, gate.GateConfig())
    assert failed(metrics["verdicts"]) == [("min_group_identities", "tiny")]
    assert not metrics["blessed"]
    exempt = executor.evaluate(data, gate.GateConfig(ungated_groups=["tiny"]))
    assert exempt["blessed"] and exempt["ungated"] == ["tiny"]


def test_report_shows_every_group_intervals_the_1to1_table_and_the_verdict():
    rng = np.random.default_rng(1)
    data = clustered(rng, 12, 3, 0.8, ["east", "north", "south", "west"])
    metrics = executor.evaluate(data, gate.GateConfig(min_recall=0.99, target_fmr=0.01),
                                 baseline=data, pixels=dict(data, resolution="8x8x3"))
    metrics.update(split="eval", model={"uri": "/m/1", "id": 1},
                   baseline_model={"uri": "/m/0", "id": 0})
    charts = report.charts_of(metrics)
    assert set(charts) == {"recall_at_1_by_group", "recall_at_k", "det"}
    assert all(png.startswith(b"\x89PNG") for png in charts.values())
    page = report.render_html(metrics, charts)
    assert "NOT BLESSED" in page
    recall_table, one_to_one = page.split("<h2>1:1 verification")
    for scope in ("overall", "east", "north", "south", "west"):
        entry = metrics["candidate"][scope]
        row = re.search(rf"<tr><td>{scope}</td>(.*?)</tr>", recall_table.split("Recall per group")[1],
                        re.S).group(1)
        assert f"<td>{entry['n_queries']}</td>" in row
        assert f"{entry['recall@1']:.4f}" in row and f"{entry['recall@5']:.4f}" in row
        assert f"{entry['recall@1_within']:.4f}" in row
        assert f"[{entry['recall@1_ci'][0]:.4f}, {entry['recall@1_ci'][1]:.4f}]" in row
        assert f"{metrics['thresholds'][scope]:.4f}" in row
        one = metrics["verification"][scope]
        row = re.search(rf"<tr><td>{scope}</td>(.*?)</tr>", one_to_one, re.S).group(1)
        assert f"<td>{one['n_genuine']}</td>" in row and f"{one['fnmr']:.4f}" in row
    for verdict in metrics["verdicts"]:
        assert html.escape(verdict["message"]) in page
    assert "within noise" in page or "<td>yes</td>" in page
    assert page.count("data:image/png;base64,") == 3
    assert "http://" not in page and "https://" not in page      # self-contained


def write_transformed(path, pixels, labels, groups):
    """Transformed Examples as the Transform stores them: the crop as uint8 bytes."""
    import tensorflow as tf

    from core import features

    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for image, label, group in zip(pixels, labels, groups):
            example = tf.train.Example()
            example.features.feature[features.IMAGE].bytes_list.value.append(image.tobytes())
            example.features.feature[features.LABEL].int64_list.value.append(int(label))
            example.features.feature[features.GROUP].bytes_list.value.append(group.encode())
            writer.write(example.SerializeToString())


def test_pixel_anchor_reads_the_stored_uint8_crops_as_uint8_over_255(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(7, 16, 16, 3), dtype=np.uint8)
    labels, groups = np.arange(7) // 2, ["a", "b", "a", "b", "a", "b", "a"]
    write_transformed(tmp_path / "part-0.gz", pixels[:4], labels[:4], groups[:4])
    write_transformed(tmp_path / "part-1.gz", pixels[4:], labels[4:], groups[4:])
    files = [str(tmp_path / "part-0.gz"), str(tmp_path / "part-1.gz")]
    result = executor.pixel_split(files, batch_size=3)
    np.testing.assert_array_equal(result["embeddings"],
                                  pixels.reshape(7, -1).astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(result["labels"], labels)
    assert list(result["groups"]) == groups and result["resolution"] == "16x16x3"
    # Over the memory budget: 2x2 average pooling of the same values.
    monkeypatch.setattr(executor, "PIXEL_BUDGET_FLOATS", 7 * 8 * 8 * 3)
    pooled = executor.pixel_split(files, batch_size=3)
    expected = (pixels.astype(np.float64) / 255).reshape(7, 8, 2, 8, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(pooled["embeddings"], expected.reshape(7, -1), atol=1e-6)
    assert pooled["resolution"] == "8x8x3 (average-pooled from 16x16)"


def crowded_group_example(seed=5):
    """4 groups x 25 identities x 4 images in 16-d. West's identity centres crowd around one point
    (its impostors look alike), the others' are spread: at the global threshold west's FMR is many
    times the target, the others' below it."""
    rng = np.random.default_rng(seed)
    centres, groups = [], []
    for name in ("east", "north", "south", "west"):
        spread = rng.normal(size=(25, 16))
        if name == "west":
            spread = 3.0 * np.eye(16)[0] + 0.35 * spread
        centres.append(spread / np.linalg.norm(spread, axis=1, keepdims=True))
        groups += [name] * 25
    centres = np.concatenate(centres)
    labels = np.repeat(np.arange(100), 4)
    embeddings = centres[labels] + 0.12 * rng.normal(size=(400, 16))
    return {"embeddings": embeddings, "labels": labels, "groups": np.array(groups)[labels]}


def brute_force_fmr(data, threshold, group):
    """Impostor pairs with both images in `group` scoring >= threshold / those pairs."""
    x = data["embeddings"] / np.linalg.norm(data["embeddings"], axis=1, keepdims=True)
    inside = np.flatnonzero(data["groups"] == group)
    sims = (x[inside] @ x[inside].T).astype(np.float32)
    labels = data["labels"][inside]
    upper = np.triu(np.ones_like(sims, dtype=bool), 1) & (labels[:, None] != labels[None, :])
    return float(np.mean(sims[upper] >= np.float32(threshold) - 1e-6))


def test_an_ungated_fmr_differential_beyond_its_level_is_an_advisory_that_never_changes_the_verdict():
    data = crowded_group_example()
    config = gate.GateConfig(min_recall=0.0, target_fmr=0.01, bootstrap_resamples=300)
    metrics = executor.evaluate(data, config)
    verification = metrics["verification"]
    west = brute_force_fmr(data, verification["threshold"], "west")
    assert verification["west"]["fmr"] == pytest.approx(west, abs=2e-3)
    assert west / 0.01 > 3 * max(brute_force_fmr(data, verification["threshold"], g)
                                 for g in ("east", "north", "south")) / 0.01
    [advisory] = [a for a in metrics["advisories"] if a["statistic"] == "fmr_differential"]
    assert advisory["value"] == pytest.approx(verification["west"]["fmr"] / 0.01)
    assert advisory["interval"][0] > advisory["level"] >= gate.ADVISORY_FMR_RATIO
    assert metrics["blessed"] is True                       # an advisory is not a verdict
    gated = executor.evaluate(data, gate.GateConfig(min_recall=0.0, target_fmr=0.01,
                                                     bootstrap_resamples=300, max_fmr_ratio=2.0))
    assert not any(a["statistic"] == "fmr_differential" for a in gated["advisories"])
    assert failed(gated["verdicts"]) == [("max_fmr_ratio", "overall")]


def test_report_puts_the_advisories_above_the_rules_and_shows_unbounded_ends_and_missing_intervals():
    data = crowded_group_example()
    metrics = executor.evaluate(data, gate.GateConfig(min_recall=0.0, target_fmr=0.01,
                                                       bootstrap_resamples=300))
    metrics.update(split="eval", model={"uri": "/m/1", "id": 1}, baseline_model=None)
    metrics["verification"].update(skewed_error_ratio=math.inf,
                                   skewed_error_ratio_ci=[1.2, math.inf])
    metrics["verification"]["east"]["fmr_ci"] = None
    assert metrics["advisories"]
    page = report.render_html(metrics, {})
    box = page.index("<div class='advisory'>")
    assert page.index("<h2>Release rules</h2>") < box < page.index("<th>verdict</th>")
    for advisory in metrics["advisories"]:
        assert html.escape(advisory["message"]) in page[box:page.index("</div>", box)]
    assert "skewed error ratio (max / min FNMR): ∞ <span class='ci'>[1.20, ∞]</span>" in page
    east = re.search(r"<tr><td>east</td>(.*?)</tr>", page.split("<h2>1:1 verification")[1], re.S).group(1)
    assert f"{metrics['verification']['east']['fmr']:.5f} <span class='ci'>no interval</span>" in east
    assert "<div class='advisory'>" not in report.render_html(dict(metrics, advisories=[]), {})


def test_metrics_and_report_mark_the_intervals_the_simulation_found_approximate():
    from core import interval_quality

    data = crowded_group_example()
    metrics = executor.evaluate(data, gate.GateConfig(min_recall=0.0, target_fmr=0.01,
                                                       bootstrap_resamples=100))
    assert metrics["approximate_intervals"] == interval_quality.APPROXIMATE
    metrics.update(split="eval", model={"uri": "/m/1", "id": 1}, baseline_model=None)
    metrics["approximate_intervals"] = {"fmr": "too wide", "skewed_error_ratio": "too wide too"}
    page = report.render_html(metrics, {})
    one_to_one = page.split("<h2>1:1 verification")[1]
    east = re.search(r"<tr><td>east</td>(.*?)</tr>", one_to_one, re.S).group(1)
    fnmr_cell, fmr_cell = re.findall(r"<td>(.*?)</td>", east)[2:4]
    assert fmr_cell.endswith("</span><span class='approx'> ≈</span>")
    assert "approx" not in fnmr_cell
    assert re.search(r"skewed error ratio \(max / min FNMR\): .*?</span><span class='approx'> ≈", one_to_one)
    assert "<strong>fmr</strong>: too wide" in page
    assert "approx" not in report.render_html(dict(metrics, approximate_intervals={}), {})
    # The rules table marks each rule's quoted interval by its figure (min_recall: recall@1).
    rules = report.render_html(dict(metrics, approximate_intervals={"recall@1": "wide"}), {})
    rows = re.findall(r"<tr class='(?:pass|fail)'>(.*?)</tr>", rules.split("<h2>Release rules")[1])
    quoting = [r for r in rows if "min_recall" in r]
    assert quoting and all(r.endswith(" ≈</td>") for r in quoting)
    assert not any(r.endswith(" ≈</td>") for r in rows if "min_recall" not in r)
