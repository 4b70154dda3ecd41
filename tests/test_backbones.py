"""Backbones build from random init, and weights problems are clear errors."""
import numpy as np
import pytest
import tensorflow as tf

from models import backbones


@pytest.mark.parametrize("name,stride", [("small_cnn", 16), ("mobilenetv2", 32)])
def test_feature_map_from_images_in_0_1(name, stride):
    model = backbones.build_backbone(name, (64, 64, 3))
    features = model(tf.random.uniform([2, 64, 64, 3]))
    assert features.shape[:3] == (2, 64 // stride, 64 // stride)


def test_unknown_backbone_names_the_choices():
    with pytest.raises(ValueError, match="resnet50v2"):
        backbones.build_backbone("vgg99", (64, 64, 3))


def test_missing_weights_file_and_offline_imagenet_are_clear_errors(monkeypatch, tmp_path):
    with pytest.raises(backbones.BackboneWeightsError, match="does not exist"):
        backbones.build_backbone("mobilenetv2", (64, 64, 3), weights=str(tmp_path / "none.h5"))

    def offline(**kwargs):
        raise OSError("URL fetch failure: Temporary failure in name resolution")

    monkeypatch.setitem(backbones._APPLICATIONS, "mobilenetv2",
                        (offline, backbones._to_minus_one_one, {}))
    with pytest.raises(backbones.BackboneWeightsError, match="offline"):
        backbones.build_backbone("mobilenetv2", (64, 64, 3), weights="imagenet")
    with pytest.raises(backbones.BackboneWeightsError, match="no pretrained weights"):
        backbones.build_backbone("small_cnn", (64, 64, 3), weights="imagenet")


def test_keras_application_backbones_get_synchronized_batch_norm_with_the_same_weights():
    plain = backbones.build_backbone("mobilenetv2", (32, 32, 3))
    synced = backbones.with_synchronized_batch_norm(plain.layers[-1])
    bns = [layer for layer in synced.layers
           if isinstance(layer, tf.keras.layers.BatchNormalization)]
    assert len(bns) > 10 and all(layer.synchronized for layer in bns)
    original = plain.layers[-1]
    for a, b in zip(original.weights, synced.weights):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    x = tf.random.uniform([2, 32, 32, 3], -1, 1)
    np.testing.assert_allclose(synced(x, training=False).numpy(),
                               original(x, training=False).numpy(), rtol=1e-5, atol=1e-5)
    built = backbones.build_backbone("mobilenetv2", (32, 32, 3), synchronized_bn=True)
    assert all(layer.synchronized for layer in built.layers[-1].layers
               if isinstance(layer, tf.keras.layers.BatchNormalization))


@pytest.mark.parametrize("name", ["resnet50v2", "mobilenetv3small", "mobilenetv3large",
                                  "efficientnetb3"])
def test_every_application_backbone_builds_from_random_init(name):
    model = backbones.build_backbone(name, (64, 64, 3))
    features = model(tf.random.uniform([1, 64, 64, 3]))
    assert features.shape[0] == 1 and features.shape[1] == features.shape[2] == 2
    assert np.isfinite(features.numpy()).all()
