"""Input pipelines over the transformed Examples, and train-time augmentation.

Augmentation works on the transformed face crops (the same crops serving sees), per image and
vectorized over the batch: horizontal flip, colour (brightness, contrast, saturation), box jitter
(`jitter_boxes`: the crop resampled from a box around it, scaled either way so that on average the
face keeps the size serving sees, and moved a little) and cutout (a random square set to the image
mean). Eval data is never augmented.
"""
from __future__ import annotations

from typing import List, Optional

import tensorflow as tf
from tfx_bsl.public import tfxio

from models import preprocessing


def _uniform(generator: tf.random.Generator, batch: tf.Tensor, low: float, high: float):
    return generator.uniform([batch], low, high)


# Box jitter: sampling box side / crop side, and centre shift / crop side (uniform ranges).
JITTER_SCALE = (0.9, 1.1)
JITTER_ASPECT = (0.95, 1.05)      # width scale = height scale × this
JITTER_SHIFT = (-0.05, 0.05)


def jitter_boxes(generator: tf.random.Generator, batch: tf.Tensor, size) -> tf.Tensor:
    """[batch, 4] float32 boxes (x1, y1, x2, y2) in the crop's pixels, around the crop (0, 0, s, s).

    Height scale ~ U(JITTER_SCALE), width scale = height scale × U(JITTER_ASPECT) (both mean 1:
    zooming in and out alike, so training faces keep serving's size on average), centre moved by
    U(JITTER_SHIFT) × s along each axis. Sampled with preprocessing.sample_boxes, so the parts of
    a box beyond the crop are handled as the serving crop handles parts beyond the image.
    """
    side = tf.cast(size, tf.float32)
    scale_h = _uniform(generator, batch, *JITTER_SCALE)
    scale_w = scale_h * _uniform(generator, batch, *JITTER_ASPECT)
    centre_x = side * (0.5 + _uniform(generator, batch, *JITTER_SHIFT))
    centre_y = side * (0.5 + _uniform(generator, batch, *JITTER_SHIFT))
    half_w, half_h = 0.5 * side * scale_w, 0.5 * side * scale_h
    return tf.stack([centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h],
                    axis=1)


def augment(images: tf.Tensor, generator: tf.random.Generator, flip: bool = True,
            colour: bool = True, box_jitter: bool = True, cutout: bool = True) -> tf.Tensor:
    """images [b, s, s, 3] in [0, 1] -> augmented images, same shape and range."""
    batch = tf.shape(images)[0]
    size = tf.shape(images)[1]
    if box_jitter:
        static_size = images.shape[1]
        jittered = preprocessing.sample_boxes(
            images, jitter_boxes(generator, batch, size), static_size or size)
        images = tf.ensure_shape(jittered, images.shape)
    if flip:
        flipped = generator.uniform([batch]) < 0.5
        images = tf.where(flipped[:, None, None, None], tf.reverse(images, axis=[2]), images)
    if colour:
        brightness = _uniform(generator, batch, -0.15, 0.15)[:, None, None, None]
        contrast = _uniform(generator, batch, 0.7, 1.3)[:, None, None, None]
        saturation = _uniform(generator, batch, 0.6, 1.4)[:, None, None, None]
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = (images - mean) * contrast + mean + brightness
        grey = tf.reduce_mean(images, axis=3, keepdims=True)
        images = grey + (images - grey) * saturation
    if cutout:
        apply = generator.uniform([batch]) < 0.5
        side = tf.cast(_uniform(generator, batch, 0.15, 0.35) * tf.cast(size, tf.float32),
                       tf.int32)
        cy = generator.uniform([batch], 0, size, dtype=tf.int32)
        cx = generator.uniform([batch], 0, size, dtype=tf.int32)
        rows = tf.range(size)[None, :, None]
        cols = tf.range(size)[None, None, :]
        half = (side // 2)[:, None, None]
        inside = ((tf.abs(rows - cy[:, None, None]) <= half)
                  & (tf.abs(cols - cx[:, None, None]) <= half)
                  & apply[:, None, None])
        fill = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = tf.where(inside[..., None], fill, images)
    return tf.clip_by_value(images, 0.0, 1.0)


def crop_side(file_pattern: List[str]) -> int:
    """The side of the Transform's square crops, from the first transformed Example of the files
    (glob patterns or paths, gzip TFRecords). Every stored crop has it (one Transform, one size)."""
    files = sorted(path for pattern in file_pattern for path in tf.io.gfile.glob(pattern))
    if not files:
        raise ValueError(f"no transformed Examples in {list(file_pattern)}")
    first = next(iter(tf.data.TFRecordDataset(files[:1], compression_type="GZIP")), None)
    if first is None:
        raise ValueError(f"{files[0]} holds no transformed Example")
    feature = tf.train.Example.FromString(first.numpy()).features.feature[preprocessing.IMAGE]
    if feature.WhichOneof("kind") != "bytes_list" or len(feature.bytes_list.value) != 1:
        raise ValueError(
            f"{files[0]}: feature {preprocessing.IMAGE!r} is not one bytes value (the uint8 crop "
            f"the Transform stores) but {feature.WhichOneof('kind') or 'missing'}; float_list "
            f"crops come from an older Transform: run the Transform again")
    return preprocessing.side_of_encoded(len(feature.bytes_list.value[0]), files[0])


def transformed_dataset(file_pattern: List[str], data_accessor, schema, batch_size: int,
                        training: bool, seed: Optional[int] = None,
                        augmentation: Optional[dict] = None, *,
                        image_size: int) -> tf.data.Dataset:
    """(image, class_index) batches: repeated, shuffled, augmented when training. Images are the
    stored crops decoded to float32 [b, s, s, 3] in [0, 1] (preprocessing.decode_crops), the
    first step after parsing, so augmentation and the model see what serving sees."""
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=training, shuffle_seed=seed,
                                       num_epochs=None if training else 1,
                                       drop_final_batch=training),
        schema)
    generator = tf.random.Generator.from_seed(seed if seed is not None else 0)
    options = dict(augmentation or {})

    def to_pair(features):
        images = preprocessing.decode_crops(features[preprocessing.IMAGE], image_size)
        if training and options.get("enabled", True):
            images = augment(images, generator, **{k: v for k, v in options.items()
                                                   if k != "enabled"})
        return images, tf.reshape(features[preprocessing.CLASS_INDEX], [-1])

    return dataset.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def evaluation_dataset(file_pattern: List[str], data_accessor, schema,
                       batch_size: int, *, image_size: int) -> tf.data.Dataset:
    """Features for Recall: image (decoded as in `transformed_dataset`), label (raw identity),
    group. One pass, in file order."""
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=False, num_epochs=1),
        schema)

    def decode(features):
        return {**features,
                preprocessing.IMAGE: preprocessing.decode_crops(features[preprocessing.IMAGE],
                                                                image_size)}

    return dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)


def count_records(file_pattern: List[str]) -> int:
    files = []
    for pattern in file_pattern:
        files.extend(tf.io.gfile.glob(pattern))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1).numpy())
