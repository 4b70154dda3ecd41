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
