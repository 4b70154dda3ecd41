"""Backbones build from random init, and weights problems are clear errors."""
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
