"""The face crop of the Transform graph against an independent NumPy bilinear sampler."""
import numpy as np
import pytest
import tensorflow as tf

from models import preprocessing
from tests import image_factory as images


def numpy_sample(image, box, size):
    """Samples the box at x1 + (i + 0.5) * w / size - 0.5 (pixel centres), bilinear. A position
    within the image's extent [-0.5, side - 0.5] is clamped to the outermost pixel centres (what a
    half-pixel resize does at the border); beyond the extent the output is black."""
    x1, y1, x2, y2 = box
    xs = x1 + (np.arange(size) + 0.5) * (x2 - x1) / size - 0.5
    ys = y1 + (np.arange(size) + 0.5) * (y2 - y1) / size - 0.5
    h, w, channels = image.shape
    out = np.zeros((size, size, channels), np.float64)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            if y < -0.5 or y > h - 0.5 or x < -0.5 or x > w - 0.5:
                continue      # beyond the image: black
            y, x = min(max(y, 0.0), h - 1.0), min(max(x, 0.0), w - 1.0)
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1_, x1_ = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            dy, dx = y - y0, x - x0
            top = image[y0, x0] * (1 - dx) + image[y0, x1_] * dx
            bottom = image[y1_, x0] * (1 - dx) + image[y1_, x1_] * dx
            out[i, j] = top * (1 - dy) + bottom * dy
    return out


def numpy_crop(image, box, size):
    return numpy_sample(image, box, size) / 255.0


@pytest.mark.parametrize("box,size", [
    ((10, 5, 58, 45), 16),      # downscale
    ((3, 4, 11, 10), 16),       # upscale
    ((0, 0, 64, 48), 8),        # whole image
    ((-6, -4, 30, 30), 12),     # overshoots the top-left corner: black there
    ((40, 20, 70, 52), 12),     # overshoots the bottom-right corner
    ((0, 0, 16, 12), 32),       # upscaled at the top-left border: edge pixels, no black frame
    ((50, 36, 64, 48), 28),     # upscaled at the bottom-right border
    ((-1, 0, 20, 48), 21),      # one pixel beyond the left edge: that column is black
])
def test_crop_matches_numpy_bilinear(box, size):
    pixels = images.pixels(64, 48, seed=3)
    png = images.encode(pixels, "PNG")       # lossless: the decoded pixels are `pixels`
    crop = preprocessing.crop_faces(tf.constant([png]), tf.constant([box]), size).numpy()[0]
    np.testing.assert_allclose(crop, numpy_crop(pixels.astype(np.float64), box, size), atol=2e-5)


def test_downscaled_crop_equals_resizing_the_cut_out_box():
    pixels = images.pixels(64, 48, seed=4)
    box = (8, 6, 56, 42)
    crop = preprocessing.crop_faces(tf.constant([images.encode(pixels, "PNG")]),
                                    tf.constant([box]), 12).numpy()[0]
    cut = pixels[6:42, 8:56].astype(np.float32)
    resized = tf.image.resize(cut, [12, 12], method="bilinear", antialias=False).numpy() / 255.0
    np.testing.assert_allclose(crop, resized, atol=2e-5)


def test_upscaled_whole_image_equals_a_half_pixel_resize_with_no_black_border():
    """tf.image.resize (half-pixel centres) clamps at the border: the first and last output
    pixels read the edge pixels, never black."""
    pixels = images.pixels(64, 48, seed=6)
    crop = preprocessing.crop_faces(tf.constant([images.encode(pixels, "PNG")]),
                                    tf.constant([(0, 0, 64, 48)]), 96).numpy()[0]
    resized = tf.image.resize(pixels.astype(np.float32), [96, 96], method="bilinear",
                              antialias=False).numpy() / 255.0
    np.testing.assert_allclose(crop, resized, atol=2e-5)


def test_box_touching_the_border_of_a_uniform_image_is_uniform():
    grey = np.full((30, 40, 3), 200, np.uint8)
    crop = preprocessing.crop_faces(tf.constant([images.encode(grey, "PNG")] * 2),
                                    tf.constant([(0, 0, 10, 10), (30, 20, 40, 30)]), 25).numpy()
    np.testing.assert_allclose(crop, 200 / 255.0, atol=1e-6)


def test_box_is_normalized_by_each_images_real_size():
    """Two images of different sizes in one batch, each cropped by its own dimensions."""
    small, large = images.pixels(40, 30, seed=1), images.pixels(90, 70, seed=2)
    batch = tf.constant([images.encode(small, "PNG"), images.encode(large, "PNG")])
    boxes = tf.constant([(5, 5, 35, 25), (10, 20, 80, 60)])
    crops = preprocessing.crop_faces(batch, boxes, 10).numpy()
    np.testing.assert_allclose(crops[0], numpy_crop(small.astype(float), (5, 5, 35, 25), 10),
                               atol=2e-5)
    np.testing.assert_allclose(crops[1], numpy_crop(large.astype(float), (10, 20, 80, 60), 10),
                               atol=2e-5)


@pytest.mark.parametrize("fmt,mode", [("JPEG", "L"), ("PNG", "L"), ("PNG", "LA"), ("PNG", "RGBA"),
                                      ("PNG", "P"), ("PNG", "I;16"), ("PNG", "1")])
def test_every_accepted_colour_mode_decodes_to_three_channels(fmt, mode):
    import io

    from PIL import Image

    data = images.encode(images.pixels(32, 24, seed=5), fmt, mode=mode)
    crop = preprocessing.crop_faces(tf.constant([data]), tf.constant([(0, 0, 32, 24)]), 8).numpy()[0]
    assert crop.shape == (8, 8, 3) and np.isfinite(crop).all()
    assert 0.0 <= crop.min() and crop.max() <= 1.0
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float64)
    if mode not in ("I;16",):   # Pillow's own 16-bit -> RGB conversion clips; TF scales
        np.testing.assert_allclose(crop, numpy_crop(reference, (0, 0, 32, 24), 8), atol=0.02)
    if mode in ("L", "LA", "I;16", "1"):
        np.testing.assert_allclose(crop[..., 0], crop[..., 2])      # grey stays grey


# ------------------------------------------------------------------ the stored crop: uint8 bytes

def numpy_stored(crop):
    """The stored form written from its definition: round(255 x crop) in float32, half to even
    (np.round), as uint8 [s, s, 3] row-major bytes."""
    return np.round(np.float32(255) * np.asarray(crop, np.float32)).astype(np.uint8).tobytes()


def is_rounding_of(stored, crop, slack=1e-3):
    """Whether uint8 `stored` (bytes or array) rounds 255 x `crop` value by value: np.round's,
    or either neighbour where 255 x crop is within `slack` of a tie (x.5). Ties are common
    (bilinear weights of 1/2) and the last bit of a float crop there depends on how TensorFlow
    ran the crop (the Transform's optimized graph vs eager crop_faces here), so only at ties may
    a stored value differ from the NumPy rounding of an eager crop."""
    values = np.frombuffer(stored, np.uint8) if isinstance(stored, bytes) else np.asarray(stored)
    scaled = np.float32(255) * np.asarray(crop, np.float32).reshape(-1)
    values = values.reshape(-1).astype(np.float64)
    exact = values == np.round(scaled)
    at_tie = np.abs(np.abs(values - scaled) - 0.5) <= slack
    return bool(np.all(exact | at_tie))


@pytest.mark.parametrize("size,count", [(16, 1), (12, 3), (7, 2)])
def test_stored_crop_is_round_255_times_the_float_crop_as_raw_uint8_bytes(size, count):
    sources = [images.pixels(40 + 8 * i, 30 + 4 * i, seed=10 + i) for i in range(count)]
    boxes = [(2 + i, 3, 30 + i, 27) for i in range(count)]
    crops = preprocessing.crop_faces(tf.constant([images.encode(p, "PNG") for p in sources]),
                                     tf.constant(boxes), size)
    stored = preprocessing.encode_crops(crops).numpy()
    assert stored.dtype == object and stored.shape == (count,)
    for i in range(count):
        assert isinstance(stored[i], bytes) and len(stored[i]) == size * size * 3
        assert stored[i] == numpy_stored(crops.numpy()[i])
        # Against the independent crop too: within one step of 255 x the exact bilinear value.
        values = np.frombuffer(stored[i], np.uint8).reshape(size, size, 3).astype(np.float64)
        exact = numpy_sample(sources[i].astype(np.float64), boxes[i], size)
        assert np.abs(values - exact).max() <= 0.5 + 1e-3


def test_stored_crops_keep_extremes_and_round_half_to_even():
    crops = np.zeros([2, 2, 2, 3], np.float32)
    crops[0, 0, 0] = [0.0, 1.0, 0.5]                  # 127.5: half to even -> 128
    crops[0, 0, 1] = [1.5 / 255, 2.5 / 255, 254.4 / 255]
    crops[1] = np.linspace(0, 1, 12, dtype=np.float32).reshape(2, 2, 3)
    stored = preprocessing.encode_crops(tf.constant(crops)).numpy()
    assert [s == numpy_stored(c) for s, c in zip(stored, crops)] == [True, True]
    assert list(stored[0][:3]) == [0, 255, 128]


def test_decoded_crop_is_uint8_over_255_in_float32():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, 9, 9, 3), dtype=np.uint8)
    decoded = preprocessing.decode_crops(tf.constant([p.tobytes() for p in pixels]), 9).numpy()
    assert decoded.dtype == np.float32 and decoded.shape == (3, 9, 9, 3)
    np.testing.assert_array_equal(decoded, pixels.astype(np.float32) / np.float32(255))
    # Encoding the decoded crop gives the same bytes back (the round trip is exact).
    assert list(preprocessing.encode_crops(tf.constant(decoded)).numpy()) == \
        [p.tobytes() for p in pixels]
    assert preprocessing.decode_crops(tf.constant([], tf.string), 9).shape == (0, 9, 9, 3)


def test_a_stored_crop_of_another_size_is_refused_naming_the_size():
    stored = tf.constant([bytes(8 * 8 * 3)])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"432 bytes, uint8 \[12, 12, 3\]"):
        preprocessing.decode_crops(stored, 12)
    assert preprocessing.side_of_encoded(8 * 8 * 3) == 8
    with pytest.raises(ValueError, match=r"record 7.*'image' holds 100 bytes"):
        preprocessing.side_of_encoded(100, "record 7")


@pytest.mark.pipeline
def test_the_transform_stores_each_crop_as_round_255_times_crop_faces(transformed_sample):
    """The Transform's output on disk: one bytes value per Example, and the set of stored crops
    is exactly the NumPy-quantized crop_faces of the raw split's images and boxes."""
    from models import data
    from tests.pipeline_helpers import feature_value, read_examples

    for split in ("train", "eval"):
        transformed = read_examples(f"{transformed_sample['transformed_examples']}/Split-{split}")
        raw = read_examples(f"{transformed_sample['examples']}/Split-{split}")
        assert len(transformed) == len(raw) > 0
        image = [e.features.feature[preprocessing.IMAGE] for e in transformed]
        assert {f.WhichOneof("kind") for f in image} == {"bytes_list"}
        assert {len(f.bytes_list.value) for f in image} == {1}
        assert {len(f.bytes_list.value[0]) for f in image} == {32 * 32 * 3}
        crops = preprocessing.crop_faces(
            tf.constant([feature_value(e, "image_raw") for e in raw]),
            tf.constant([[feature_value(e, k) for k in preprocessing.BOX_KEYS] for e in raw]),
            32).numpy()
        stored = [f.bytes_list.value[0] for f in image]
        for crop in crops:        # each crop is stored once, as its rounding (ties either way)
            assert sum(is_rounding_of(value, crop) for value in stored) == 1
        assert data.crop_side([f"{transformed_sample['transformed_examples']}/Split-{split}/*"]) \
            == 32
