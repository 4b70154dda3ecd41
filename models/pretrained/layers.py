"""The few operations of face-api's networks that Keras has no built-in layer for."""
from __future__ import annotations

import tensorflow as tf

keras = tf.keras

# face-api's input normalization (ops/normalize.ts, used by FaceRecognitionNet and
# FaceFeatureExtractor): subtract this mean RGB, then divide by 255.
MEAN_RGB = (122.782, 117.001, 104.298)
INPUT_DIVISOR = 255.0


@keras.utils.register_keras_serializable("ffem_pretrained")
class MeanRgbNormalization(keras.layers.Layer):
    """(x - MEAN_RGB) / 255 on RGB values 0..255, in this order (as face-api computes it)."""

    def call(self, x):
        return (x - tf.constant(MEAN_RGB, dtype=x.dtype)) / tf.constant(INPUT_DIVISOR, dtype=x.dtype)


@keras.utils.register_keras_serializable("ffem_pretrained")
class ChannelScale(keras.layers.Layer):
    """dlib's affine "scale" layer (batch norm folded at training time): x * weights + biases,
    one trainable weight and bias per channel."""

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.scale_weights = self.add_weight(name="weights", shape=(channels,), initializer="ones",
                                             trainable=True)
        self.scale_biases = self.add_weight(name="biases", shape=(channels,), initializer="zeros",
                                            trainable=True)
        super().build(input_shape)

    def call(self, x):
        return x * tf.cast(self.scale_weights, x.dtype) + tf.cast(self.scale_biases, x.dtype)


@keras.utils.register_keras_serializable("ffem_pretrained")
class ZeroChannelPad(keras.layers.Layer):
    """Appends `channels` zero channels (the shortcut of a residual block that doubles its width)."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)

    def call(self, x):
        return tf.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.channels]])

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}
