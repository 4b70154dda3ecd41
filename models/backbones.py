"""Backbones: images in [0, 1] -> a feature map [batch, h, w, c] (pooling is the model's job).

Keras applications (random init by default; ImageNet weights or a local weights file on request)
and `small_cnn`, a light network for CPU runs and tests. Each Keras application gets the input
scaling it was designed for, so ImageNet weights see the inputs they were trained on. A local
weights file for a Keras application is taken to be a copy of its ImageNet "no top" weights
(e.g. downloaded elsewhere for an offline machine) and gets exactly the ImageNet input mapping.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import tensorflow as tf

keras = tf.keras


class BackboneWeightsError(RuntimeError):
    pass


def _to_minus_one_one(x):
    return x * 2.0 - 1.0


def _to_0_255(x):
    return x * 255.0


# name -> (constructor, input scaling from [0, 1], extra constructor arguments)
_APPLICATIONS: Dict[str, Tuple[Callable, Callable, dict]] = {
    "resnet50v2": (lambda **kw: keras.applications.ResNet50V2(**kw), _to_minus_one_one, {}),
    "mobilenetv2": (lambda **kw: keras.applications.MobileNetV2(**kw), _to_minus_one_one, {}),
    "mobilenetv3small": (lambda **kw: keras.applications.MobileNetV3Small(**kw),
                         _to_minus_one_one, {"include_preprocessing": False}),
    "mobilenetv3large": (lambda **kw: keras.applications.MobileNetV3Large(**kw),
                         _to_minus_one_one, {"include_preprocessing": False}),
    # EfficientNet rescales and normalizes inside the model: it wants 0..255.
    "efficientnetb3": (lambda **kw: keras.applications.EfficientNetB3(**kw), _to_0_255, {}),
}
# Pretrained on real faces (models/pretrained): name -> (the Transform crop recipe it was trained
# with, its input size). The others take the face box crop ("box") at any size.
PRETRAINED = {"face_recognition_net": ("face_api_aligned", 150)}
# Backbones the Trainer refuses to train under mixed precision (models/trainer.py says why).
FLOAT32_ONLY = ("face_recognition_net",)
BACKBONES = tuple(_APPLICATIONS) + ("small_cnn",) + tuple(PRETRAINED)


def crop_recipe(backbone: str) -> str:
    """The Transform crop recipe a backbone needs (models/pretrained/alignment.py CROP_RECIPES)."""
    return PRETRAINED.get(str(backbone).lower(), ("box", None))[0]

# tf_keras' EfficientNet stem normalizes (x - mean) / sqrt(variance) and, only when built with
# weights="imagenet", multiplies by 1 / sqrt(stddev) per channel: the original implementation
# divided by the variance (tensorflow/tensorflow#49930). Weights from a file need that multiply too.
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


@keras.utils.register_keras_serializable("ffem")
class ImageNetStemNormalization(keras.layers.Normalization):
    """Normalization, then × 1/sqrt(stddev) per channel: EfficientNet's ImageNet stem in one
    layer, with the same weights (mean, variance, count) as the Normalization it replaces."""

    def call(self, inputs):
        normalized = super().call(inputs)
        factors = tf.constant([1.0 / math.sqrt(s) for s in IMAGENET_STDDEV_RGB], tf.float32)
        return normalized * tf.cast(factors, normalized.dtype)


def _efficientnet_from_file(constructor: Callable, weights: str, input_shape, extra: dict):
    """EfficientNet with the ImageNet stem, weights loaded from a local file."""
    plain = constructor(include_top=False, weights=None, input_shape=input_shape, **extra)
    replaced = []

    def clone(layer):
        if type(layer) is keras.layers.Normalization and not replaced:
            replaced.append(layer.name)
            return ImageNetStemNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    application = keras.models.clone_model(plain, clone_function=clone)
    if len(replaced) != 1:
        raise RuntimeError("EfficientNet has no Normalization layer in its stem: this tf_keras "
                           "version builds it differently; update _efficientnet_from_file")
    application.load_weights(weights)
    return application


def _conv_block(x, filters: int, stride: int, name: str, synchronized_bn: bool):
    x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                            name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(synchronized=synchronized_bn, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def small_cnn(input_shape, widths=(32, 64, 128, 256), synchronized_bn: bool = False) -> keras.Model:
    """Four stride-2 stages (conv-BN-ReLU, then a residual conv-BN), 1/16 of the input size."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Lambda(_to_minus_one_one, name="scale")(inputs)
    for stage, filters in enumerate(widths):
        x = _conv_block(x, filters, 2, f"stage{stage}_down", synchronized_bn)
        shortcut = x
        y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                name=f"stage{stage}_res_conv")(x)
        y = keras.layers.BatchNormalization(synchronized=synchronized_bn,
                                            name=f"stage{stage}_res_bn")(y)
        x = keras.layers.ReLU(name=f"stage{stage}_out")(keras.layers.Add()([shortcut, y]))
    return keras.Model(inputs, x, name="small_cnn")


def build_backbone(name: str, input_shape, weights: Optional[str] = None,
                   synchronized_bn: bool = False) -> keras.Model:
    """`weights`: None (random init), "imagenet", or a path to a no-top weights file.

    `synchronized_bn`: every BatchNormalization layer computes its batch statistics over all
    replicas (the Keras applications are rebuilt with synchronized BN layers, weights kept).
    """
    key = name.lower()
    if key == "face_recognition_net":
        from models.pretrained import recognition_net  # needs the cached face-api package
        return recognition_net.backbone(input_shape, weights)
    if key == "small_cnn":
        if weights:
            raise BackboneWeightsError("small_cnn has no pretrained weights; use base_model "
                                       "warm start instead")
        return small_cnn(input_shape, synchronized_bn=synchronized_bn)
    if key not in _APPLICATIONS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    constructor, scale, extra = _APPLICATIONS[key]
    if weights not in (None, "imagenet") and not tf.io.gfile.exists(weights):
        raise BackboneWeightsError(f"backbone weights file {weights!r} does not exist")
    inputs = keras.Input(shape=input_shape, name="image")
    try:
        if key.startswith("efficientnet") and weights not in (None, "imagenet"):
            application = _efficientnet_from_file(constructor, weights, input_shape, extra)
        else:
            application = constructor(include_top=False, weights=weights,
                                      input_shape=input_shape, **extra)
    except Exception as e:
        if weights == "imagenet":
            raise BackboneWeightsError(
                f"ImageNet weights for {name} could not be loaded ({type(e).__name__}: {e}). They "
                f"are downloaded from storage.googleapis.com on first use; offline, download the "
                f"'no top' weights file elsewhere and pass its path as the backbone weights, or "
                f"train from random init (weights=None).") from e
        raise
    if synchronized_bn:
        application = with_synchronized_batch_norm(application)
    outputs = application(keras.layers.Lambda(scale, name="scale")(inputs))
    return keras.Model(inputs, outputs, name=key)


def with_synchronized_batch_norm(model: keras.Model) -> keras.Model:
    """The same network and weights, every BatchNormalization layer synchronized across replicas:
    with per-replica statistics, N devices would not make the update one device makes on the
    same global batch."""
    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization):
            config["synchronized"] = True
            config.pop("fused", None)        # the fused kernel cannot synchronize
        return layer.__class__.from_config(config)

    synced = keras.models.clone_model(model, clone_function=clone)
    synced.set_weights(model.get_weights())
    return synced
