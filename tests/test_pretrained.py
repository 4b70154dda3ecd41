"""The pretrained face-api networks: TF.js weights reader, pinned fetch, and parity of the Keras ports
with the package's own JavaScript on real photographs (tests/data/london_faces).

The parity tests need Node.js and npm: a session fixture fetches the pinned package and its
TensorFlow.js runtime into the cache folder (as `make pretrained` does) and skips, with the reason,
where they are missing. The JavaScript's outputs are kept under the cache folder keyed by the input
tensors' hash, so only the first run pays for the CPU backend.
"""
import json
import os
import struct

import numpy as np
import pytest
from PIL import Image

from models.pretrained import fetch, reference
from models.pretrained.tfjs_weights import WeightsFormatError, decode_weights, load_weights
from tests.conftest import LONDON_FACES

COSINE_BOUND = 0.9999
# Euclidean distance between the two descriptors of one crop: far below dlib's 0.6 threshold.
DISTANCE_BOUND = 1e-4
LANDMARK_BOUND_PX = 0.5
N_CROPS = 24


# ----------------------------------------------------------------------------------------------
# Fixtures: the package (Keras side) and the package plus its JS runtime (reference side).

@pytest.fixture(scope="session")
def face_api_package():
    try:
        return fetch.fetch()
    except fetch.PretrainedUnavailable as e:
        pytest.skip(f"pretrained face-api package unavailable: {e}")


@pytest.fixture(scope="session")
def face_api_js(face_api_package):
    try:
        fetch.fetch(js_runtime=True)
    except fetch.PretrainedUnavailable as e:
        pytest.skip(f"face-api's JS runtime unavailable: {e}")
    return face_api_package


@pytest.fixture(scope="session")
def london_crops():
    """N_CROPS photos spread over the list (all groups), each cropped with the list's box: the same
    float32 tensors go to both implementations, at 150 x 150 and at 112 x 112."""
    with open(os.path.join(LONDON_FACES, "image_list.json")) as f:
        records = json.load(f)
    keys = sorted(records)
    chosen = keys[::len(keys) // N_CROPS][:N_CROPS]
    crops150, crops112, boxes = [], [], []
    for key in chosen:
        r = records[key]
        box = (r["x1"], r["y1"], r["x2"], r["y2"])
        with Image.open(os.path.join(LONDON_FACES, "images", key)) as image:
            face = image.convert("RGB").crop(box)
            crops150.append(np.asarray(face.resize((150, 150), Image.BILINEAR), dtype=np.float32))
            crops112.append(np.asarray(face.resize((112, 112), Image.BILINEAR), dtype=np.float32))
        boxes.append(box)
    return {"keys": chosen, "crops150": np.stack(crops150), "crops112": np.stack(crops112),
            "boxes": np.asarray(boxes, dtype=np.float64)}


@pytest.fixture(scope="session")
def recognition_net(face_api_package):
    from models.pretrained import face_recognition_net
    return face_recognition_net()


@pytest.fixture(scope="session")
def landmark_net(face_api_package):
    from models.pretrained import face_landmark_68_net
    return face_landmark_68_net()


def run_keras(model, images, batch=8):
    """Eager calls, batch by batch: Keras's predict() first traces its function with autograph,
    which costs far more here than the few batches it runs."""
    return np.concatenate([model(images[i:i + batch], training=False).numpy()
                           for i in range(0, len(images), batch)]).astype(np.float64)


def cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# ----------------------------------------------------------------------------------------------
# The TF.js weights format, on a manifest written here.

def half_from_bits(bits: int) -> float:
    """IEEE 754 binary16, from its definition."""
    sign = -1.0 if bits >> 15 else 1.0
    exponent, mantissa = (bits >> 10) & 0x1F, bits & 0x3FF
    if exponent == 0:
        return sign * 2.0 ** -14 * (mantissa / 1024)
    if exponent == 31:
        return sign * float("inf") if mantissa == 0 else float("nan")
    return sign * 2.0 ** (exponent - 15) * (1 + mantissa / 1024)


def write_synthetic_model(folder):
    """Two groups; the first split over two shards in the middle of a weight. Returns the expected
    values, computed from the format's definition."""
    rng = np.random.default_rng(7)
    q8 = rng.integers(0, 256, size=(2, 3), dtype=np.uint8)
    q16 = rng.integers(0, 65536, size=(4,), dtype=np.uint16)
    half_bits = [0x0000, 0x8000, 0x0001, 0x03FF, 0x3C00, 0xC000, 0x7BFF, 0x7C00, 0x3555]
    plain = rng.normal(size=(2, 2)).astype(np.float32)
    qint = np.array([0, 5, 7, 255], dtype=np.uint8)  # 5 -> 0.5: JS Math.round gives 1
    flags = np.array([1, 0, 1], dtype=np.uint8)
    ints = np.array([-3, 0, 2 ** 30], dtype=np.int32)
    s8, m8, s16, m16, si, mi = 0.0123, -1.5, 3.1e-5, 0.25, 0.5, -2.0
    group1 = (q8.tobytes() + q16.astype("<u2").tobytes()
              + b"".join(struct.pack("<H", b) for b in half_bits) + plain.astype("<f4").tobytes())
    group2 = qint.tobytes() + flags.tobytes() + ints.astype("<i4").tobytes()
    cut = 6 + 3  # inside the uint16 weight
    for name, data in (("g1-shard1", group1[:cut]), ("g1-shard2", group1[cut:]), ("g2", group2)):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    manifest = [
        {"paths": ["g1-shard1", "g1-shard2"], "weights": [
            {"name": "a/q8", "shape": [2, 3], "dtype": "float32",
             "quantization": {"dtype": "uint8", "scale": s8, "min": m8}},
            {"name": "a/q16", "shape": [4], "dtype": "float32",
             "quantization": {"dtype": "uint16", "scale": s16, "min": m16}},
            {"name": "a/half", "shape": [3, 3], "dtype": "float32", "quantization": {"dtype": "float16"}},
            {"name": "a/plain", "shape": [2, 2], "dtype": "float32"}]},
        {"paths": ["g2"], "weights": [
            {"name": "b/qint", "shape": [4], "dtype": "int32",
             "quantization": {"dtype": "uint8", "scale": si, "min": mi}},
            {"name": "b/flags", "shape": [3], "dtype": "bool"},
            {"name": "b/ints", "shape": [3], "dtype": "int32"}]},
    ]
    path = os.path.join(folder, "m-weights_manifest.json")
    with open(path, "w") as f:
        json.dump(manifest, f)
    expected = {
        "a/q8": np.array([[float(v) * s8 + m8 for v in row] for row in q8.tolist()], dtype=np.float32),
        "a/q16": np.array([float(v) * s16 + m16 for v in q16.tolist()], dtype=np.float32),
        "a/half": np.array([half_from_bits(b) for b in half_bits], dtype=np.float32).reshape(3, 3),
        "a/plain": plain,
        "b/qint": np.array([int(np.floor(float(v) * si + mi + 0.5)) for v in qint.tolist()]),  # Math.round
        "b/flags": np.array([True, False, True]),
        "b/ints": ints,
    }
    return path, manifest, expected


def test_reader_dequantizes_uint8_uint16_float16_across_shards_as_the_format_defines(tmp_path):
    path, _, expected = write_synthetic_model(str(tmp_path))
    weights = load_weights(path)
    assert list(weights) == list(expected)
    for name, want in expected.items():
        got = weights[name]
        assert got.shape == want.shape, name
        if want.dtype.kind == "f":
            assert got.dtype == np.float32, name
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_array_equal(got.astype(np.int64), want.astype(np.int64), err_msg=name)
    assert expected["a/half"][0, 2] == 2.0 ** -24 and expected["a/half"][2, 1] == float("inf")


@pytest.mark.parametrize("change, message", [
    (lambda m, d: (m, d[:-1]), "'b/ints': needs bytes"),
    (lambda m, d: (m, d + b"\0"), "weights use"),
    (lambda m, d: ([{**w, "quantization": {"dtype": "int8", "scale": 1, "min": 0}} if w["name"] == "b/qint"
                    else w for w in m], d), "'b/qint': quantization dtype 'int8'"),
    (lambda m, d: ([{**w, "quantization": {"dtype": "uint8"}} if w["name"] == "b/qint" else w
                    for w in m], d), "'b/qint': uint8 quantization without 'scale' and 'min'"),
    (lambda m, d: ([{**w, "dtype": "string"} if w["name"] == "b/flags" else w for w in m], d),
     "'b/flags': dtype 'string'"),
])
def test_reader_rejects_a_manifest_that_does_not_match_its_bytes_naming_the_weight(tmp_path, change,
                                                                                   message):
    _, manifest, _ = write_synthetic_model(str(tmp_path))
    with open(tmp_path / "g2", "rb") as f:
        data = f.read()
    specs, data = change(manifest[1]["weights"], data)
    with pytest.raises(WeightsFormatError, match=message.replace("(", r"\(")):
        decode_weights(data, specs, source="g2")


def test_reader_names_a_missing_shard(tmp_path):
    path, _, _ = write_synthetic_model(str(tmp_path))
    os.remove(tmp_path / "g1-shard2")
    with pytest.raises(WeightsFormatError, match="shard 'g1-shard2'"):
        load_weights(path)


# ----------------------------------------------------------------------------------------------
# The pinned fetch and the error without the package (no network needed).

def test_models_without_the_package_say_how_to_get_it(tmp_path):
    from models.pretrained import PretrainedUnavailable, face_landmark_68_net, face_recognition_net
    for build in (face_recognition_net, face_landmark_68_net):
        with pytest.raises(PretrainedUnavailable, match="make pretrained"):
            build(cache=str(tmp_path))


def test_fetch_refuses_and_removes_a_tarball_whose_sha256_differs(tmp_path):
    tarball = tmp_path / fetch.TARBALL
    tarball.write_bytes(b"not the package")
    with pytest.raises(fetch.PretrainedUnavailable, match="is not the pinned " + fetch.TARBALL_SHA256):
        fetch.fetch(str(tmp_path))
    assert not tarball.exists()
    assert not (tmp_path / f"face-api-{fetch.VERSION}").exists()


def test_fetch_without_node_or_npm_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch.shutil, "which", lambda tool: None if tool == "npm" else "/usr/bin/" + tool)
    with pytest.raises(fetch.PretrainedUnavailable, match="npm not found on PATH.*install Node.js"):
        fetch.fetch(str(tmp_path))


def test_cached_tarball_matches_the_pin_and_unpacks_the_mit_package(face_api_package):
    cache = os.path.dirname(os.path.dirname(face_api_package))
    assert fetch.sha256_of(os.path.join(cache, fetch.TARBALL)) == fetch.TARBALL_SHA256
    with open(os.path.join(face_api_package, "package.json")) as f:
        meta = json.load(f)
    assert (meta["name"], meta["version"], meta["license"]) == (fetch.PACKAGE, fetch.VERSION, "MIT")
    with open(os.path.join(face_api_package, "LICENSE")) as f:
        package_licence = f.read().strip()
    with open(os.path.join(os.path.dirname(fetch.__file__), "LICENSE-face-api.txt")) as f:
        assert package_licence in f.read()


# ----------------------------------------------------------------------------------------------
# The real model files.

def recognition_weight_names():
    """From face-api's extractParamsFromWeightMap.ts: a conv layer is conv/{filters,bias} +
    scale/{weights,biases}; a residual block has conv1 and conv2; then fc."""
    layer = ["conv/filters", "conv/bias", "scale/weights", "scale/biases"]
    blocks = ["conv32_1", "conv32_2", "conv32_3", "conv64_down", "conv64_1", "conv64_2", "conv64_3",
              "conv128_down", "conv128_1", "conv128_2", "conv256_down", "conv256_1", "conv256_2",
              "conv256_down_out"]
    return ([f"conv32_down/{n}" for n in layer]
            + [f"{b}/{c}/{n}" for b in blocks for c in ("conv1", "conv2") for n in layer] + ["fc"])


def test_real_manifests_decode_to_the_names_and_sizes_of_face_apis_networks(face_api_package):
    model = os.path.join(face_api_package, "model")
    recognition = load_weights(os.path.join(model, "face_recognition_model-weights_manifest.json"))
    assert list(recognition) == recognition_weight_names()
    assert recognition["conv32_down/conv/filters"].shape == (7, 7, 3, 32)
    assert recognition["fc"].shape == (256, 128)
    landmarks = load_weights(os.path.join(model, "face_landmark_68_model-weights_manifest.json"))
    # From face-api's faceFeatureExtractor/loadParamsFactory.ts: dense0's conv0 is a plain conv,
    # every other conv is separable.
    expected = ["dense0/conv0/filters", "dense0/conv0/bias"]
    for d in range(4):
        expected += [f"dense{d}/conv{c}/{n}" for c in (range(1, 4) if d == 0 else range(4))
                     for n in ("depthwise_filter", "pointwise_filter", "bias")]
    assert list(landmarks) == expected + ["fc/weights", "fc/bias"]
    assert landmarks["fc/weights"].shape == (256, 136)
    # The first weight, decoded here straight from the .bin's first bytes and its manifest entry.
    with open(os.path.join(model, "face_recognition_model-weights_manifest.json")) as f:
        first = json.load(f)[0]["weights"][0]
    with open(os.path.join(model, "face_recognition_model.bin"), "rb") as f:
        raw = np.frombuffer(f.read(7 * 7 * 3 * 32), dtype=np.uint8)
    q = first["quantization"]
    want = (raw.astype(np.float64) * q["scale"] + q["min"]).astype(np.float32).reshape(7, 7, 3, 32)
    np.testing.assert_array_equal(recognition["conv32_down/conv/filters"], want)


# ----------------------------------------------------------------------------------------------
# The Keras ports.

def test_recognition_net_is_fine_tunable_every_weight_gets_a_gradient(recognition_net):
    import tensorflow as tf

    assert len(recognition_net.trainable_variables) == len(recognition_net.variables) == 117
    x = tf.random.stateless_uniform([2, 150, 150, 3], seed=[1, 2], maxval=255.0)
    with tf.GradientTape() as tape:
        d = recognition_net(x, training=True)
        loss = tf.reduce_sum(tf.square(d[0] - d[1]))
    grads = tape.gradient(loss, recognition_net.trainable_variables)
    silent = [v.name for v, g in zip(recognition_net.trainable_variables, grads)
              if g is None or not np.any(g.numpy())]
    assert not silent


def test_weight_mapping_names_a_missing_or_unused_weight(face_api_package):
    from models.pretrained import loading
    from models.pretrained import recognition_net as frn

    weights = loading.package_weights(frn.MODEL_NAME)
    model, mapping = frn.build()
    missing = {k: v for k, v in weights.items() if k != "conv64_2/conv2/scale/biases"}
    with pytest.raises(loading.WeightMappingError, match="no weight 'conv64_2/conv2/scale/biases'"):
        loading.assign(model, missing, mapping, frn.MODEL_NAME)
    with pytest.raises(loading.WeightMappingError, match=r"not used by the architecture: \['extra'\]"):
        loading.assign(model, {**weights, "extra": np.zeros(3, np.float32)}, mapping, frn.MODEL_NAME)


# ----------------------------------------------------------------------------------------------
# Parity with the package's own JavaScript on real photographs.

def test_descriptors_equal_the_packages_compute_face_descriptor_on_london_crops(
        face_api_js, london_crops, recognition_net):
    crops = london_crops["crops150"]
    assert len(crops) >= 20
    assert len({key.split("/")[0] for key in london_crops["keys"]}) >= 4
    js, _ = reference.descriptors(crops)
    keras = run_keras(recognition_net, crops)
    cos = cosines(keras, js)
    distance = np.linalg.norm(keras - js, axis=1)
    print(f"descriptor parity over {len(cos)} crops: min cosine {cos.min():.9f}, max distance "
          f"{distance.max():.2e}, mean descriptor norm {np.linalg.norm(js, axis=1).mean():.3f}")
    assert np.all(cos >= COSINE_BOUND), dict(zip(london_crops["keys"], cos))
    assert np.all(distance <= DISTANCE_BOUND), dict(zip(london_crops["keys"], distance))
    # The crops are distinct faces, so the bound is not met by a constant output.
    assert cosines(js[:-1], js[1:]).max() < 0.99


def test_distance_bound_detects_a_port_that_divides_by_256(face_api_js, london_crops, monkeypatch):
    """Why the parity test bounds the Euclidean distance too: face-api divides by 255
    (FaceRecognitionNet.ts); a port dividing by 256 scales every descriptor by about 255/256,
    which the cosine cannot see but dlib's distance threshold does."""
    from models.pretrained import layers
    from models.pretrained import recognition_net as frn

    js, _ = reference.descriptors(london_crops["crops150"])
    monkeypatch.setattr(layers, "INPUT_DIVISOR", 256.0)
    wrong = run_keras(frn.face_recognition_net(), london_crops["crops150"][:6])
    distance = np.linalg.norm(wrong - js[:6], axis=1)
    assert np.all(distance > DISTANCE_BOUND), distance


def test_landmarks_equal_the_packages_detect_landmarks_on_london_crops(face_api_js, london_crops,
                                                                       landmark_net):
    crops = london_crops["crops112"]
    js_px, _ = reference.landmarks(crops)
    keras_px = run_keras(landmark_net, crops) * 112
    err = np.linalg.norm(keras_px - js_px, axis=-1)
    # The same error in pixels of the photo: the crop is the list's box, resized to 112 x 112.
    boxes = london_crops["boxes"]
    scale = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=-1)[:, None, :] / 112
    err_photo = np.linalg.norm((keras_px - js_px) * scale, axis=-1)
    print(f"landmark parity over {len(crops)} crops x 68: max {err.max():.2e} px (112 crop), "
          f"{err_photo.max():.2e} px (photo)")
    assert err.max() <= LANDMARK_BOUND_PX and err_photo.max() <= LANDMARK_BOUND_PX
    # Plausible faces: every point inside the crop, the eyes (36-47) above the mouth (48-67).
    assert js_px.min() > 0 and js_px.max() < 112
    assert np.all(js_px[:, 36:48, 1].mean(1) < js_px[:, 48:68, 1].mean(1))
