"""The procedural sample data: format, determinism, and boxes where the faces really are."""
import hashlib
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from pipeline import sample_data as gen


def digest_tree(root):
    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            with open(os.path.join(folder, name), "rb") as f:
                digest.update(name.encode() + f.read())
    return digest.hexdigest()


def test_format_labels_groups_and_unseen_identities(small_sample):
    train = json.load(open(os.path.join(small_sample, "train.json")))
    test = json.load(open(os.path.join(small_sample, "test.json")))
    assert len(train) == 12 * 3 and len(test) == 8 * 4
    for records in (train, test):
        labels = sorted({v["label"] for v in records.values()})
        assert labels == list(range(len(labels)))                       # 0..N-1 in each file
        for key, value in records.items():
            assert set(value) == {"label", "x1", "y1", "x2", "y2"}
            group, identity, name = key.split("/")
            assert group in gen.GROUPS and name.endswith(".jpg")
            width, height = Image.open(os.path.join(small_sample, "images", key)).size
            assert 0 <= value["x1"] < value["x2"] <= width
            assert 0 <= value["y1"] < value["y2"] <= height
            assert all(isinstance(value[k], int) for k in value)
    train_ids = {k.rsplit("/", 1)[0] for k in train}
    test_ids = {k.rsplit("/", 1)[0] for k in test}
    assert train_ids.isdisjoint(test_ids)
    per_identity = {}
    for key in test:
        per_identity[key.rsplit("/", 1)[0]] = per_identity.get(key.rsplit("/", 1)[0], 0) + 1
    assert min(per_identity.values()) >= 4
    assert {k.split("/")[0] for k in train} == set(gen.GROUPS)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    sizes = dict(train_identities=4, train_images=2, test_identities=4, test_images=4,
                 progress=False)
    gen.generate(str(tmp_path / "a"), seed=5, workers=1, **sizes)
    gen.generate(str(tmp_path / "b"), seed=5, workers=2, **sizes)     # parallelism: same bytes
    gen.generate(str(tmp_path / "c"), seed=6, workers=1, **sizes)
    assert digest_tree(tmp_path / "a") == digest_tree(tmp_path / "b")
    assert digest_tree(tmp_path / "a") != digest_tree(tmp_path / "c")


def test_test_identities_need_four_images(tmp_path):
    with pytest.raises(ValueError, match="at least 4"):
        gen.generate(str(tmp_path), test_images=3, progress=False)


@pytest.mark.parametrize("seed", range(6))
def test_the_box_is_where_the_face_is(seed, monkeypatch):
    """Render the same capture with and without the face: the changed pixels are the face."""
    group = list(gen.GROUPS)[seed % 4]
    ident = gen.make_identity(group, "x", np.random.default_rng(seed))
    real_draw = gen._draw_face

    def no_face(*args, **kwargs):
        layer, mask = real_draw(*args, **kwargs)
        return Image.new("RGBA", layer.size, (0, 0, 0, 0)), mask

    with_face, box = gen.render_image(ident, np.random.default_rng([seed, 1]))
    monkeypatch.setattr(gen, "_draw_face", no_face)
    without_face, _ = gen.render_image(ident, np.random.default_rng([seed, 1]))
    a = np.asarray(Image.open(io.BytesIO(with_face)).convert("L"), np.float32)
    b = np.asarray(Image.open(io.BytesIO(without_face)).convert("L"), np.float32)
    changed = np.abs(a - b) > 12      # JPEG noise stays below this; face/background contrast not
    x1, y1, x2, y2 = box
    inside = changed[y1:y2, x1:x2].mean()
    assert inside > 0.6, inside       # an ellipse fills 79 % of its box; features add contrast
    ys, xs = np.nonzero(changed)
    # Hair and ears may extend past the face box, but the face box is within what changed.
    assert xs.min() <= x1 + 2 and xs.max() >= x2 - 3 and ys.min() <= y1 + 2 and ys.max() >= y2 - 3
    # Far from the face box (beyond hair reach), nothing changed.
    h, w = changed.shape
    margin_x, margin_y = int(0.35 * (x2 - x1)) + 3, int(0.35 * (y2 - y1)) + 3
    far = np.ones_like(changed)
    far[max(0, y1 - margin_y):y2 + margin_y, max(0, x1 - margin_x):x2 + margin_x] = False
    assert changed[far].mean() < 0.02


def test_groups_differ_in_difficulty_by_design():
    shares = [s.share for s in gen.GROUPS.values()]
    spreads = [s.spread for s in gen.GROUPS.values()]
    assert abs(sum(shares) - 1.0) < 1e-9
    assert shares == sorted(shares, reverse=True) and spreads == sorted(spreads, reverse=True)
