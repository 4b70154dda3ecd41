"""The error gallery: per group the k highest-scoring impostor and k lowest-scoring genuine pairs,
against a brute force over the full NumPy cosine matrix; its keys in metrics.json and its crops
embedded in the report; --report-examples 0 copies nothing."""
import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from components.recall_evaluator import gallery, gate, report
from core import gallery as gallery_lib


def _data(seed=0, n_ids=25, per=3, dim=6):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_ids), per)
    groups = np.where(labels % 3 == 0, "east", np.where(labels % 3 == 1, "west", "north"))
    embeddings = (rng.normal(size=(n_ids, dim))[labels]
                  + rng.normal(size=(len(labels), dim))).astype(np.float32)
    return embeddings, labels, groups


def _brute_force(embeddings, labels, groups, k):
    unit = embeddings.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    scores = unit @ unit.T
    result = {}
    for group in ["overall"] + list(np.unique(groups)):      # overall: any two images
        pairs = [(scores[i, j], i, j) for i in range(len(labels)) for j in range(i + 1, len(labels))
                 if group == "overall" or groups[i] == group == groups[j]]
        impostor = sorted((p for p in pairs if labels[p[1]] != labels[p[2]]),
                          key=lambda p: (-p[0], p[1], p[2]))[:k]
        genuine = sorted((p for p in pairs if labels[p[1]] == labels[p[2]]),
                         key=lambda p: (p[0], p[1], p[2]))[:k]
        result[group] = {"impostor": impostor, "genuine": genuine}
    return result


@pytest.mark.parametrize("k,chunk", [(6, 7), (6, 1000), (1, 5), (500, 16)])
def test_the_pairs_are_the_brute_force_top_k_overall_and_per_group_in_any_blocking(k, chunk):
    embeddings, labels, groups = _data()
    found = gallery_lib.error_pairs(embeddings, labels, groups, k, chunk_size=chunk)
    expected = _brute_force(embeddings, labels, groups, k)
    assert list(found) == list(expected)            # the overall scope first, then the groups
    for group in expected:
        for kind in ("impostor", "genuine"):
            got, want = found[group][kind], expected[group][kind]
            assert [(i, j) for _, i, j in got] == [(i, j) for _, i, j in want], (group, kind)
            np.testing.assert_allclose([s for s, _, _ in got], [s for s, _, _ in want], atol=1e-6)


def test_zero_examples_selects_nothing():
    embeddings, labels, groups = _data()
    assert gallery_lib.error_pairs(embeddings, labels, groups, 0) == {}
    candidate = {"embeddings": embeddings, "labels": labels, "groups": groups,
                 "paths": np.array([f"{g}/{i}.jpg" for i, g in enumerate(groups)])}
    metrics = {"verification": {"threshold": 0.5}}
    assert gallery.write_gallery(metrics, candidate, 0, "/no/model", ["/no/files"]) == ""
    assert metrics["error_gallery"] == {}


def test_the_report_embeds_every_selected_crop_and_metrics_name_the_keys():
    embeddings, labels, groups = _data()
    paths = np.array([f"{g}/{i:03d}.jpg" for i, g in enumerate(groups)])
    candidate = {"embeddings": embeddings, "labels": labels, "groups": groups, "paths": paths}
    threshold = 0.6
    entry = gallery.select(candidate, 2, threshold)
    expected = _brute_force(embeddings, labels, groups, 2)
    for group, kinds in expected.items():
        for kind, pairs in kinds.items():
            assert [p["keys"] for p in entry[group][kind]] == [[paths[i], paths[j]]
                                                               for _, i, j in pairs]
            assert [p["match"] for p in entry[group][kind]] == [s >= threshold for s, _, _ in pairs]
    # One distinct colour per key, so each <img> can be traced to its key.
    keys = gallery.keys_of(entry)
    images = {}
    for n, key in enumerate(keys):
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (n * 7 % 256, 40, 200)).save(buffer, format="PNG")
        images[key] = buffer.getvalue()
    section = gallery.html_section(entry, images, threshold)
    found = re.findall(r"<img class='gallery' alt='([^']+)' src='data:image/png;base64,([^']+)'",
                       section)
    assert len(found) == 2 * sum(len(p) for kinds in entry.values() for p in kinds.values())
    for key, data in found:
        assert base64.b64decode(data) == images[key]
    html_page = report.render_html(evaluated_metrics(embeddings, labels, groups), {}, section)
    assert "Content-Security-Policy" in html_page and "id='error-gallery'" in html_page
    assert not re.search(r"(src|href)=['\"](?!data:)", html_page)   # nothing to fetch


def evaluated_metrics(embeddings, labels, groups):
    from components.recall_evaluator import executor

    metrics = executor.evaluate({"embeddings": embeddings, "labels": labels, "groups": groups},
                                 gate.GateConfig(min_group_identities=1, bootstrap_resamples=100,
                                                 target_fmr=0.05))
    metrics.update(split="eval", model={"uri": "/m", "id": 1}, baseline_model=None)
    return metrics


@pytest.mark.parametrize("value", [-1, 1.5, True, "6"])
def test_report_examples_must_be_a_non_negative_integer(value):
    """As settings arrive (a file, a flag, the component's JSON property)."""
    with pytest.raises(ValueError, match="report_examples"):
        gate.GateConfig.from_dict({"report_examples": value})


def test_the_overall_impostor_pairs_include_pairs_across_groups_with_their_groups_named():
    # Three groups whose identities share one direction per pair of groups: the pairs a model
    # confuses most lie across groups, which no group's list can show.
    embeddings, labels, groups = _data()
    embeddings = embeddings.copy()
    embeddings[groups == "east"] += 6.0
    embeddings[groups == "west"] += 6.0
    paths = np.array([f"{g}/{i:03d}.jpg" for i, g in enumerate(groups)])
    entry = gallery.select({"embeddings": embeddings, "labels": labels, "groups": groups,
                            "paths": paths}, 4, 0.5)
    assert list(entry)[0] == "overall"
    across = [p for p in entry["overall"]["impostor"] if p["groups"][0] != p["groups"][1]]
    assert across and all(sorted(p["groups"]) == ["east", "west"] for p in across)
    assert all(p["groups"] == [g, g] for g in ("east", "north", "west")
               for p in entry[g]["impostor"] + entry[g]["genuine"])
    section = gallery.html_section(entry, {}, 0.5)
    assert section.index("<h3>overall") < section.index("<h3>east")
    assert "east / west" in section or "west / east" in section
