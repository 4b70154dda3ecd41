"""Input pipelines over the transformed Examples, and train-time augmentation.

Augmentation works on the transformed face crops (the same crops serving sees), per image and
vectorized over the batch: horizontal flip, colour (brightness, contrast, saturation), box jitter
(a random sub-box keeping 85-100 % of each side, resized back: scale and position jitter) and
cutout (a random square set to the image mean). Eval data is never augmented.
"""
from __future__ import annotations

from typing import List, Optional

import tensorflow as tf
from tfx_bsl.public import tfxio

from models import preprocessing


def _uniform(generator: tf.random.Generator, batch: tf.Tensor, low: float, high: float):
    return generator.uniform([batch], low, high)


def augment(images: tf.Tensor, generator: tf.random.Generator, flip: bool = True,
            colour: bool = True, box_jitter: bool = True, cutout: bool = True) -> tf.Tensor:
    """images [b, s, s, 3] in [0, 1] -> augmented images, same shape and range."""
    batch = tf.shape(images)[0]
    size = tf.shape(images)[1]
    if box_jitter:
        keep_h = _uniform(generator, batch, 0.85, 1.0)
        keep_w = keep_h * _uniform(generator, batch, 0.95, 1.05)
        keep_w = tf.minimum(keep_w, 1.0)
        top = _uniform(generator, batch, 0.0, 1.0) * (1.0 - keep_h)
        left = _uniform(generator, batch, 0.0, 1.0) * (1.0 - keep_w)
        boxes = tf.stack([top, left, top + keep_h, left + keep_w], axis=1)
        images = tf.image.crop_and_resize(images, boxes, tf.range(batch), [size, size])
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


def transformed_dataset(file_pattern: List[str], data_accessor, schema, batch_size: int,
                        training: bool, seed: Optional[int] = None,
                        augmentation: Optional[dict] = None) -> tf.data.Dataset:
    """(image, class_index) batches: repeated, shuffled, augmented when training."""
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=training, shuffle_seed=seed,
                                       num_epochs=None if training else 1,
                                       drop_final_batch=training),
        schema)
    generator = tf.random.Generator.from_seed(seed if seed is not None else 0)
    options = dict(augmentation or {})

    def to_pair(features):
        images = features[preprocessing.IMAGE]
        if training and options.get("enabled", True):
            images = augment(images, generator, **{k: v for k, v in options.items()
                                                   if k != "enabled"})
        return images, tf.reshape(features[preprocessing.CLASS_INDEX], [-1])

    return dataset.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def evaluation_dataset(file_pattern: List[str], data_accessor, schema,
                       batch_size: int) -> tf.data.Dataset:
    """Features for Recall: image, label (raw identity), group. One pass, in file order."""
    return data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=False, num_epochs=1),
        schema)


def count_records(file_pattern: List[str]) -> int:
    files = []
    for pattern in file_pattern:
        files.extend(tf.io.gfile.glob(pattern))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1).numpy())
