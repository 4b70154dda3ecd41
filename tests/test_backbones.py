"""Backbones build from random init, and weights problems are clear errors."""
import numpy as np
import pytest
import tensorflow as tf

from models import backbones

# Each application's documented input range: images in [0, 1] are mapped to it before the network.
INPUT_RANGE = {"resnet50v2": lambda x: 2 * x - 1, "mobilenetv2": lambda x: 2 * x - 1,
               "mobilenetv3small": lambda x: 2 * x - 1, "mobilenetv3large": lambda x: 2 * x - 1,
               "efficientnetb3": lambda x: 255 * x}


@pytest.mark.parametrize("name,stride", [("small_cnn", 16), ("resnet50v2", 32),
                                         ("mobilenetv2", 32), ("mobilenetv3small", 32),
                                         ("mobilenetv3large", 32), ("efficientnetb3", 32)])
def test_backbone_maps_images_in_0_1_to_its_input_range(name, stride):
    """Random init: the feature map has the backbone's stride, does not depend on the rest of the
    batch at inference, and (applications) equals the bare network on x mapped to its range."""
    model = backbones.build_backbone(name, (64, 64, 3))
    x = tf.random.uniform([2, 64, 64, 3], seed=1)
    features = model(x, training=False).numpy()
    assert features.shape[:3] == (2, 64 // stride, 64 // stride)
    # Randomly initialized networks give tiny activations: tolerances relative to their size.
    size = np.abs(features).max()
    assert size > 0
    np.testing.assert_allclose(model(x[:1], training=False).numpy()[0], features[0],
                               rtol=1e-4, atol=1e-4 * size)
    if name in INPUT_RANGE:
        application = model.layers[-1]
        expected = application(INPUT_RANGE[name](x), training=False).numpy()
        np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4 * size)
        unmapped = application(x, training=False).numpy()
        assert np.abs(unmapped - features).max() > 0.01 * size


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


def test_efficientnet_with_a_local_weights_file_maps_inputs_as_with_imagenet_weights(
        monkeypatch, tmp_path):
    """tf_keras builds EfficientNet's ImageNet stem (rescale, normalize, then × 1/sqrt(stddev))
    only when weights == "imagenet"; a copy of those weights passed as a file must see the same
    inputs. ImageNet weights cannot be downloaded here, so the "imagenet" model is tf_keras' own
    imagenet code path with only its download replaced by a local file holding the same
    weights: equal outputs prove the two builds map inputs alike given equal weights (not that
    the real ImageNet file loads)."""
    from tf_keras.src.applications import efficientnet

    shape = (32, 32, 3)
    source = tf.keras.applications.EfficientNetB3(include_top=False, weights=None,
                                                  input_shape=shape)
    normalization = next(layer for layer in source.layers
                         if isinstance(layer, tf.keras.layers.Normalization))
    # ImageNet statistics, as in the real weights file (random init has mean 0, variance 1).
    mean, variance, count = normalization.get_weights()
    normalization.set_weights([np.reshape([0.485, 0.456, 0.406], mean.shape),
                               np.reshape(np.square([0.229, 0.224, 0.225]), variance.shape),
                               count])
    weights_file = str(tmp_path / "efficientnetb3_notop.h5")
    source.save_weights(weights_file)

    requested = []

    def local_copy(fname, origin=None, **kwargs):
        requested.append(fname)
        return weights_file

    monkeypatch.setattr(efficientnet.data_utils, "get_file", local_copy)
    imagenet = backbones.build_backbone("efficientnetb3", shape, weights="imagenet")
    local = backbones.build_backbone("efficientnetb3", shape, weights=weights_file)
    assert requested == ["efficientnetb3_notop.h5"]        # the imagenet path really ran

    x = tf.random.uniform([2, 32, 32, 3], seed=3)
    expected = imagenet(x, training=False).numpy()
    size = np.abs(expected).max()
    np.testing.assert_allclose(local(x, training=False).numpy(), expected, rtol=1e-4,
                               atol=1e-4 * size)
    # Not vacuous: the bare weights=None structure with those weights maps inputs differently.
    bare = tf.keras.applications.EfficientNetB3(include_top=False, weights=weights_file,
                                                input_shape=shape)
    assert np.abs(bare(255.0 * x, training=False).numpy() - expected).max() > 0.01 * size
