"""face-api's alignment in the Transform graph (models/pretrained/alignment.py): its geometry
against NumPy written from face-api's source, and its landmarks and aligned crops against the
package's own JavaScript on real London photographs (Node needed; skipped with the reason without).
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from models.pretrained import alignment, reference
from tests.conftest import LONDON_FACES
from tests.test_pretrained import face_api_js, face_api_package  # noqa: F401 (fixtures)

N_PHOTOS = 24
LANDMARK_BOUND_PX = 0.5
PIXEL_BOUND = 1.0          # 1/255 of the 0..1 range, in 0..255 units


def records():
    with open(os.path.join(LONDON_FACES, "image_list.json")) as f:
        return json.load(f)


def decode(key):
    with open(os.path.join(LONDON_FACES, "images", key), "rb") as f:
        data = f.read()
    return data, tf.io.decode_image(data, channels=3, expand_animations=False).numpy()


# ----------------------------------------------------------------------------------------------
# Geometry, from face-api's source, in NumPy.

def np_dlib_box(points, width, height):
    """FaceLandmarks.ts alignDlib with FaceLandmarks68/5's reference points."""
    p = np.asarray(points, np.float64)
    refs = ([p[36:42].mean(0), p[42:48].mean(0), p[48:68].mean(0)] if len(p) == 68
            else [p[0], p[1], p[3:5].mean(0)])
    d = (np.linalg.norm(refs[2] - refs[0]) + np.linalg.norm(refs[2] - refs[1])) / 2
    size = np.floor(d / 0.45)
    c = np.mean(refs, axis=0)
    x, y = np.floor(max(0, c[0] - 0.5 * size)), np.floor(max(0, c[1] - 0.43 * size))
    return [int(x), int(y), int(min(size, width + x)), int(min(size, height + y))]


def np_square_resize(crop, size):
    """padToSquare(centred: floor(d/2) zeros before, the rest after), then TF.js resizeBilinear
    (alignCorners false, halfPixelCenters false: source = out * in / out_size)."""
    h, w, _ = crop.shape
    d = abs(h - w)
    pads = [(d // 2, d - d // 2) if h < w else (0, 0), (d // 2, d - d // 2) if w < h else (0, 0), (0, 0)]
    sq = np.pad(crop.astype(np.float64), pads)
    n = sq.shape[0]
    if n == size:
        return sq
    src = np.arange(size) * (n / size)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    f = src - lo
    rows = sq[lo] + (sq[hi] - sq[lo]) * f[:, None, None]
    return rows[:, lo] + (rows[:, hi] - rows[:, lo]) * f[None, :, None]


@pytest.mark.parametrize("count", [5, 68])
def test_dlib_box_follows_face_apis_formula_for_5_and_68_points(count):
    rng = np.random.default_rng(count)
    for _ in range(20):
        points = rng.uniform(20, 300, size=(count, 2))
        width, height = rng.integers(50, 400, size=2)
        got = alignment.dlib_box(tf.constant(points), int(width), int(height)).numpy().tolist()
        assert got == np_dlib_box(points, width, height)


def test_min_bbox_box_grows_the_landmarks_box_by_a_fifth_centred():
    points = np.array([[10.0, 20.0], [60.0, 25.0], [30.0, 120.0]])
    got = alignment.min_bbox_box(tf.constant(points)).numpy()
    # alignMinBbox(0.2): width 50, height 100 -> pad 10 and 20, half on each side.
    np.testing.assert_allclose(got, [5.0, 10.0, 65.0, 130.0])


def test_dlib_box_refuses_other_landmark_counts():
    with pytest.raises(ValueError, match="5 or 68 landmarks, got 7"):
        alignment.dlib_box(tf.zeros([7, 2], tf.float64), 10, 10)


@pytest.mark.parametrize("shape, size", [((37, 52, 3), 112), ((61, 40, 3), 150), ((150, 149, 3), 150),
                                         ((150, 150, 3), 150), ((200, 200, 3), 150)])
def test_square_resize_pads_centred_and_resizes_without_half_pixel_centres(shape, size):
    crop = np.random.default_rng(sum(shape)).uniform(0, 255, size=shape).astype(np.float32)
    got = alignment.square_resize(tf.constant(crop), size).numpy()
    # float32 interpolation of 0..255 values: a few 1e-3 at most, far below one grey level.
    np.testing.assert_allclose(got, np_square_resize(crop, size), atol=1e-2)


def test_clip_box_clips_at_the_photo_and_floors():
    # Box.clipAtImageBorders: x, y at least 0; right/bottom at most the photo's; the width and
    # height from the unfloored edges (45 - 10.7 = 34.3), then each of x, y, w, h floored.
    got = alignment.clip_box(-3.5, 10.7, 50.0, 40.0, 40, 45).numpy().tolist()
    assert got == [0, 10, 40, 34]


def test_crop_recipe_defaults_to_box_and_names_a_wrong_setting():
    assert alignment.crop_recipe(None) == alignment.crop_recipe({}) == "box"
    assert alignment.crop_recipe({"crop": "face_api_aligned"}) == "face_api_aligned"
    with pytest.raises(ValueError, match="crop='aligned' is not a crop recipe; choose one of box, "
                                         "face_api_aligned"):
        alignment.crop_recipe({"crop": "aligned"})


# ----------------------------------------------------------------------------------------------
# The constant-weight landmark net and face-api's JavaScript.

@pytest.fixture(scope="module")
def london_photos():
    recs = records()
    keys = sorted(recs)[::len(recs) // N_PHOTOS][:N_PHOTOS]
    decoded = [decode(k) for k in keys]
    return {"keys": keys, "bytes": [d[0] for d in decoded], "photos": [d[1] for d in decoded],
            "boxes": [[recs[k][c] for c in ("x1", "y1", "x2", "y2")] for k in keys]}


@pytest.fixture(scope="module")
def js_aligned(face_api_js, london_photos):  # noqa: F811
    return reference.align([p.astype(np.float32) for p in london_photos["photos"]],
                           london_photos["boxes"])


def test_constant_landmark_net_equals_the_keras_port(face_api_package, london_photos):  # noqa: F811
    from models.pretrained import face_landmark_68_net

    crops = np.stack([np_square_resize(p[y1:y2, x1:x2], 112) for p, (x1, y1, x2, y2)
                      in zip(london_photos["photos"][:8], london_photos["boxes"][:8])]).astype(np.float32)
    keras = face_landmark_68_net()(crops, training=False).numpy()
    const = tf.function(alignment.LandmarkNet(), autograph=False)(tf.constant(crops)).numpy()
    assert np.abs(const - keras).max() * 112 < 1e-3


def test_landmarks_and_aligned_crops_equal_face_apis_own_alignment_on_london_photos(
        london_photos, js_aligned):
    assert len({k.split("/")[0] for k in london_photos["keys"]}) >= 4
    net = alignment.LandmarkNet()
    align = tf.function(lambda image, box: alignment.align_face(image, box, net), autograph=False)
    worst_points, worst_pixel = 0.0, 0.0
    for i, key in enumerate(london_photos["keys"]):
        out = align(tf.constant(london_photos["photos"][i]), tf.constant(london_photos["boxes"][i]))
        points = out["landmarks"].numpy()
        assert out["box"].numpy().tolist() == js_aligned["boxes"][i].tolist(), key
        worst_points = max(worst_points, np.linalg.norm(points - js_aligned["landmarks"][i], axis=-1).max())
        worst_pixel = max(worst_pixel, np.abs(out["crop"].numpy() - js_aligned["crops"][i]).max())
        # The aligned box is face-api's formula applied to those landmarks (its min(size, W + x)
        # term never binds for a face inside its landmark crop).
        assert out["box"].numpy().tolist() == np_dlib_box(points, 10 ** 6, 10 ** 6), key
    print(f"alignment parity over {len(london_photos['keys'])} photos: landmarks {worst_points:.2e} px, "
          f"crop pixels {worst_pixel:.2e} (0..255)")
    assert worst_points <= LANDMARK_BOUND_PX
    assert worst_pixel <= PIXEL_BOUND


def test_the_pixel_bound_tells_the_aligned_crop_from_the_plain_box_crop(london_photos, js_aligned):
    """The 1/255 bound is not met by the pipeline's other recipe: the box resized to 150 x 150."""
    from models import preprocessing

    boxes = tf.constant(london_photos["boxes"][:6], tf.float32)
    plain = preprocessing.crop_faces(tf.constant(london_photos["bytes"][:6]), boxes, 150).numpy() * 255
    assert np.all(np.abs(plain - js_aligned["crops"][:6]).max(axis=(1, 2, 3)) > 10 * PIXEL_BOUND)


def test_transform_recipe_crops_encoded_photos_as_face_api_does(london_photos, js_aligned):
    """crop_faces_aligned (what preprocessing_fn runs for crop 'face_api_aligned') on the encoded
    bytes, batched: [0, 1] crops within 1/255 of face-api's."""
    n = 6
    crops = tf.function(alignment.crop_faces_aligned, autograph=False)(
        tf.constant(london_photos["bytes"][:n]), tf.constant(london_photos["boxes"][:n], tf.int64))
    assert crops.shape == (n, 150, 150, 3)
    assert np.abs(crops.numpy() * 255 - js_aligned["crops"][:n]).max() <= PIXEL_BOUND


def test_descriptors_of_aligned_crops_equal_the_packages_whole_alignment_pipeline(london_photos,
                                                                                js_aligned):
    from models.pretrained import face_recognition_net

    net = tf.function(face_recognition_net(), autograph=False)
    align = tf.function(lambda b, x: alignment.crop_faces_aligned(b, x), autograph=False)
    n = 8
    crops = align(tf.constant(london_photos["bytes"][:n]), tf.constant(london_photos["boxes"][:n], tf.int64))
    ours = net(crops * 255.0).numpy().astype(np.float64)
    theirs = js_aligned["descriptors"][:n]
    cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cos.min() >= 0.9999, cos


# ----------------------------------------------------------------------------------------------
# Landmarks given in the face list.

def _given_landmarks(london_photos, n=3):
    """Per photo: None, 68 points, 5 points, ... The 68 are the network's own for that photo moved
    by (3, -2) px (so a crop that used the network instead would differ); the 5 are taken from them
    (eye centres, nose tip, mouth corners: MTCNN's order)."""
    net = alignment.LandmarkNet()
    found = tf.function(lambda image, box: alignment.align_face(image, box, net)["landmarks"],
                        autograph=False)
    given = []
    for i in range(n):
        if i % 3 == 0:
            given.append(None)
            continue
        points = found(tf.constant(london_photos["photos"][i]),
                       tf.constant(london_photos["boxes"][i])).numpy() + [3.0, -2.0]
        if i % 3 == 2:
            points = np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30],
                               points[48], points[54]])
        given.append(points)
    return given


def _ragged(given):
    return tf.ragged.constant([[] if g is None else g.reshape(-1).tolist() for g in given],
                              dtype=tf.float32)


def _np_aligned_crop(photo, points):
    """face-api's crop from given landmarks (found in the photo itself: W, H = the photo's)."""
    height, width = photo.shape[:2]
    x, y, w, h = np_dlib_box(np.asarray(points, np.float32).astype(np.float64), width, height)
    return np_square_resize(photo[y:min(height, y + h), x:min(width, x + w)], 150)


def test_given_5_or_68_landmarks_replace_the_network_per_face(face_api_package, london_photos):  # noqa: F811
    n = 6
    given = _given_landmarks(london_photos, n)
    crop = tf.function(lambda b, x, lm: alignment.crop_faces_aligned(b, x, landmarks=lm),
                       autograph=False)
    crops = crop(tf.constant(london_photos["bytes"][:n]),
                 tf.constant(london_photos["boxes"][:n], tf.int64), _ragged(given)).numpy() * 255
    without = tf.function(alignment.crop_faces_aligned, autograph=False)(
        tf.constant(london_photos["bytes"][:n]),
        tf.constant(london_photos["boxes"][:n], tf.int64)).numpy() * 255
    for i, points in enumerate(given):
        if points is None:              # no landmarks: the network's crop, as without any
            np.testing.assert_allclose(crops[i], without[i], atol=1e-3)
            continue
        expected = np.clip(_np_aligned_crop(london_photos["photos"][i], points), 0, 255)
        assert np.abs(crops[i] - expected).max() <= 1e-2, (i, len(points))
        assert np.abs(crops[i] - without[i]).max() > 10 * PIXEL_BOUND      # not the network's


def test_a_landmark_count_other_than_5_or_68_is_refused_naming_it(face_api_package, london_photos):  # noqa: F811
    bad = tf.ragged.constant([[1.0] * 14], dtype=tf.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="must hold 0, 10 or 136 values"):
        alignment.crop_faces_aligned(tf.constant(london_photos["bytes"][:1]),
                                     tf.constant(london_photos["boxes"][:1], tf.int64), landmarks=bad)


def test_the_transform_graph_reads_landmarks_from_the_ingested_examples(face_api_package,  # noqa: F811
                                                                       london_photos, tmp_path):
    """Face-list records -> the ingest's own Examples -> the pretrained Transform graph (the
    schema's landmarks feature, preprocessing_fn): the stored crops are crop_faces_aligned's with
    the same landmarks, rounded to 1/255."""
    import tensorflow_transform as tft

    import schema
    from core import records as face_records
    from models import preprocessing
    from models.pretrained import export_pretrained

    n = 3
    given = _given_landmarks(london_photos, n)
    serialized = []
    for i, key in enumerate(london_photos["keys"][:n]):
        x1, y1, x2, y2 = london_photos["boxes"][i]
        value = {"label": i, "x1": x1, "y1": y1, "x2": x2, "y2": y2}
        if given[i] is not None:
            value["landmarks"] = given[i].tolist()
        record = face_records.check_fields(key, value)
        photo = london_photos["photos"][i]
        info = face_records.ImageInfo("JPEG", photo.shape[1], photo.shape[0], "RGB")
        serialized.append(face_records.build_example(record, london_photos["bytes"][i], info))
    output = tft.TFTransformOutput(export_pretrained.transform_graph(schema.SCHEMA_FILE, str(tmp_path)))
    raw = tf.io.parse_example(tf.constant(serialized), output.raw_feature_spec())
    stored = output.transform_features_layer()(raw)[preprocessing.IMAGE]
    crops = preprocessing.decode_crops(stored, 150).numpy()
    # The given points as the Examples hold them: float32.
    as_stored = [None if g is None else g.astype(np.float32) for g in given]
    expected = alignment.crop_faces_aligned(
        tf.constant(london_photos["bytes"][:n]), tf.constant(london_photos["boxes"][:n], tf.int64),
        landmarks=_ragged(as_stored)).numpy()
    assert np.abs(crops - expected).max() <= 0.5 / 255 + 1e-6


@pytest.fixture(scope="module")
def pretrained_serving(face_api_package, tmp_path_factory):  # noqa: F811
    """export_pretrained's SavedModel (Format-Serving), exported once for this module."""
    from models.pretrained import export_pretrained

    return os.path.join(export_pretrained.export(str(tmp_path_factory.mktemp("pretrained") / "model")),
                        "Format-Serving")


def _examples(london_photos, given, indices):
    """The ingest's own serialized Examples of the photos at `indices`, with given[i]'s landmarks
    when not None."""
    from core import records as face_records

    serialized = []
    for i in indices:
        value = dict(zip(("x1", "y1", "x2", "y2"), london_photos["boxes"][i]), label=i)
        if given[i] is not None:
            value["landmarks"] = given[i].tolist()
        photo = london_photos["photos"][i]
        serialized.append(face_records.build_example(
            face_records.check_fields(london_photos["keys"][i], value), london_photos["bytes"][i],
            face_records.ImageInfo("JPEG", photo.shape[1], photo.shape[0], "RGB")))
    return serialized


def test_every_serving_signature_of_the_exported_model_crops_as_the_transform(london_photos,
                                                                              pretrained_serving):
    """export_pretrained's SavedModel: serving_default on Examples with and without landmarks, and
    embed_images (no landmarks), give the descriptor of crop_faces_aligned's crop with the same
    landmarks (the stored crop rounds to 1/255, hence the cosine bound rather than equality)."""
    from models import export as export_lib
    from models.pretrained import export_pretrained

    n = 3
    given = _given_landmarks(london_photos, n)
    boxes = london_photos["boxes"][:n]
    serialized = _examples(london_photos, given, range(n))
    model = tf.function(export_pretrained.embedding_model(), autograph=False)

    def descriptors(landmarks):
        crops = alignment.crop_faces_aligned(tf.constant(london_photos["bytes"][:n]),
                                             tf.constant(boxes, tf.int64), landmarks=landmarks)
        e = model(crops)["embedding"].numpy()
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    def cosines(a, b):
        return (a * b).sum(axis=1)

    with_given = descriptors(_ragged([None if g is None else g.astype(np.float32) for g in given]))
    found = descriptors(None)
    _, examples = export_lib.load_signature(pretrained_serving, export_lib.SERVING_DEFAULT)
    served = examples(examples=tf.constant(serialized))[export_lib.OUTPUT].numpy()
    assert cosines(served, with_given).min() >= 0.999
    _, images = export_lib.load_signature(pretrained_serving, export_lib.EMBED_IMAGES)
    columns = np.asarray(boxes, np.int64).T
    by_box = images(image_bytes=tf.constant(london_photos["bytes"][:n]),
                    **{k: tf.constant(c) for k, c in zip(("x1", "y1", "x2", "y2"), columns)}
                    )[export_lib.OUTPUT].numpy()
    assert cosines(by_box, found).min() >= 0.999
    # The given landmarks really changed the crop of the faces that have them.
    assert cosines(served, found)[[i for i, g in enumerate(given) if g is not None]].max() < 0.999


def test_verify_landmarks_decides_on_the_embeddings_of_the_faces_aligned_on_those_landmarks(
        london_photos, pretrained_serving, tmp_path):
    """verify_landmarks on pairs whose side a gives 68 points and side b 5 (then none, k = 0):
    its score is NumPy's cosine of serving_default's embeddings of the same images, boxes and
    landmarks (the ingest's Examples), its match that score >= the shipped threshold. verify (no
    landmarks) scores the network-aligned faces, measurably differently: the landmarks count."""
    import shutil

    from core import operating_point
    from models import export as export_lib

    given = _given_landmarks(london_photos, 9)          # None, 68, 5 points, None, 68, 5, ...
    side_a, side_b = [1, 4, 7], [2, 5, 8]
    assert all(len(given[i]) == 68 for i in side_a) and all(len(given[i]) == 5 for i in side_b)
    unpushed = tf.saved_model.load(pretrained_serving)

    def unit_embeddings(indices, landmarks):
        serialized = _examples(london_photos, landmarks, indices)
        e = unpushed.signatures[export_lib.SERVING_DEFAULT](examples=tf.constant(serialized))[
            export_lib.OUTPUT].numpy().astype(np.float64)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    none = [None] * len(given)
    a, a_found = unit_embeddings(side_a, given), unit_embeddings(side_a, none)
    b, b_found = unit_embeddings(side_b, given), unit_embeddings(side_b, none)
    expected = (a * b).sum(axis=1)
    # A threshold between the two highest scores (as the evaluator places it): one pair matches.
    high = np.sort(expected)[-2:]
    threshold = float(high.mean())
    assert high[1] - high[0] > 1e-4
    pushed = str(tmp_path / "pushed")
    shutil.copytree(pretrained_serving, pushed)
    with open(os.path.join(pushed, operating_point.ASSET), "w") as f:
        f.write(operating_point.dumps({"threshold": threshold, "target_fmr": 1e-3}))
    loaded = tf.saved_model.load(pushed)

    def request(indices, side, landmarks):
        boxes = np.asarray([london_photos["boxes"][i] for i in indices], np.int64).T
        return {f"image_bytes_{side}": tf.constant([london_photos["bytes"][i] for i in indices]),
                **{f"{k}_{side}": tf.constant(c) for k, c in zip(("x1", "y1", "x2", "y2"), boxes)},
                f"landmarks_{side}": tf.constant(landmarks, tf.float32)}

    points_a = np.stack([given[i].astype(np.float32).reshape(-1) for i in side_a])
    points_b = np.stack([given[i].astype(np.float32).reshape(-1) for i in side_b])
    assert points_a.shape == (3, 136) and points_b.shape == (3, 10)
    result = loaded.signatures[export_lib.VERIFY_LANDMARKS](**request(side_a, "a", points_a),
                                                           **request(side_b, "b", points_b))
    np.testing.assert_allclose(result["score"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(result["match"].numpy(), expected >= threshold)
    assert result["match"].numpy().sum() == 1 and (result["threshold"].numpy() == threshold).all()
    # k = 0 on side b: its faces aligned by the network, as verify does for both sides.
    half = loaded.signatures[export_lib.VERIFY_LANDMARKS](**request(side_a, "a", points_a),
                                                         **request(side_b, "b", np.zeros((3, 0))))
    np.testing.assert_allclose(half["score"].numpy(), (a * b_found).sum(axis=1), atol=1e-5)
    plain = {k: v for k, v in {**request(side_a, "a", points_a),
                               **request(side_b, "b", points_b)}.items()
             if not k.startswith("landmarks")}
    found = (a_found * b_found).sum(axis=1)
    np.testing.assert_allclose(loaded.signatures[export_lib.VERIFY](**plain)["score"].numpy(), found,
                               atol=1e-5)
    assert np.abs(found - expected).max() > 1e-3          # far beyond the tolerance above
