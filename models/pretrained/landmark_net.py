"""face-api's FaceLandmark68Net in Keras: 68 facial landmarks (iBUG 300-W order) in a face crop.

Written from the package's source (src/faceLandmarkNet/, src/faceFeatureExtractor/
FaceFeatureExtractor.ts and denseBlock.ts, src/faceProcessor/, src/common/) and its weights manifest
(`face_landmark_68_model`):

  input: RGB 0..255, [batch, 112, 112, 3] -> (x - mean RGB) / 255
  dense0..dense3 (32, 64, 128, 256 channels), each a dense block of four convolutions:
      out1 = relu(conv0(x))   conv0: 3x3 stride 2 'same' (+bias) in dense0, else a depthwise-
                              separable 3x3 stride 2 'same' (+bias)
      out2 = conv1(out1);  out3 = conv2(relu(out1 + out2));  out4 = conv3(relu(out1 + out2 + out3))
      result = relu(out1 + out2 + out3 + out4)   conv1..3: separable 3x3 stride 1 'same' (+bias)
  average pool 7x7 stride 2 'valid' (7 x 7 -> 1 x 1), flatten, `fc` (256 -> 136, with bias).

The 136 outputs are (x0, y0, x1, y1, ...): each landmark relative to the input crop, 0..1 from its
left/top edge to its right/bottom edge. The model returns them as [batch, 68, 2] (x, y). For a
square crop this is what face-api's `detectLandmarks` returns divided by the crop size (face-api
pads a non-square crop to a square, centered, before resizing it to 112 x 112, and maps the points
back; a caller that crops squares needs no such step). Every layer is trainable.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import tensorflow as tf

from models.pretrained import loading
from models.pretrained.layers import MeanRgbNormalization

keras = tf.keras

MODEL_NAME = "face_landmark_68_model"
INPUT_SIZE = 112
NUM_LANDMARKS = 68
DENSE_BLOCKS = (("dense0", 32), ("dense1", 64), ("dense2", 128), ("dense3", 256))


def _separable(x, name: str, filters: int, stride: int, mapping: Dict[str, List[str]], weight_prefix: str):
    """common/depthwiseSeparableConv.ts: separableConv2d(depthwise, pointwise, stride, 'same') + bias."""
    x = keras.layers.SeparableConv2D(filters, 3, strides=stride, padding="same", name=name)(x)
    mapping[name] = [f"{weight_prefix}/depthwise_filter", f"{weight_prefix}/pointwise_filter",
                     f"{weight_prefix}/bias"]
    return x


def _dense_block(x, block: str, filters: int, first: bool, mapping: Dict[str, List[str]]):
    """faceFeatureExtractor/denseBlock.ts: denseBlock4 (scale down: conv0 has stride 2)."""
    name = f"{block}_conv0"
    if first:
        out1 = keras.layers.Conv2D(filters, 3, strides=2, padding="same", name=name)(x)
        mapping[name] = [f"{block}/conv0/filters", f"{block}/conv0/bias"]
    else:
        out1 = _separable(x, name, filters, 2, mapping, f"{block}/conv0")
    out1 = keras.layers.ReLU(name=f"{block}_relu0")(out1)
    out2 = _separable(out1, f"{block}_conv1", filters, 1, mapping, f"{block}/conv1")
    in3 = keras.layers.ReLU(name=f"{block}_relu1")(keras.layers.Add(name=f"{block}_add1")([out1, out2]))
    out3 = _separable(in3, f"{block}_conv2", filters, 1, mapping, f"{block}/conv2")
    # face-api sums right to left: out1 + (out2 + out3), out1 + (out2 + (out3 + out4)).
    sum23 = keras.layers.Add(name=f"{block}_add23")([out2, out3])
    in4 = keras.layers.ReLU(name=f"{block}_relu2")(keras.layers.Add(name=f"{block}_add2")([out1, sum23]))
    out4 = _separable(in4, f"{block}_conv3", filters, 1, mapping, f"{block}/conv3")
    sum34 = keras.layers.Add(name=f"{block}_add34")([out3, out4])
    sum234 = keras.layers.Add(name=f"{block}_add234")([out2, sum34])
    return keras.layers.ReLU(name=f"{block}_out")(keras.layers.Add(name=f"{block}_add3")([out1, sum234]))


def build():
    """(the architecture with freshly initialized weights, {layer name: TF.js weight names})."""
    mapping: Dict[str, List[str]] = {}
    image = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image")
    x = MeanRgbNormalization(name="normalize")(image)
    for i, (block, filters) in enumerate(DENSE_BLOCKS):
        x = _dense_block(x, block, filters, i == 0, mapping)
    x = keras.layers.AveragePooling2D(7, 2, padding="valid", name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(2 * NUM_LANDMARKS, name="fc")(x)
    mapping["fc"] = ["fc/weights", "fc/bias"]
    landmarks = keras.layers.Reshape((NUM_LANDMARKS, 2), name="landmarks")(x)
    return keras.Model(image, landmarks, name="face_landmark_68_net"), mapping


def face_landmark_68_net(pretrained: bool = True, cache: Optional[str] = None):
    """Keras FaceLandmark68Net: float32 RGB [batch, 112, 112, 3], values 0..255 -> [batch, 68, 2],
    (x, y) of each landmark relative to the crop (0..1), as face-api's network computes them.

    With `pretrained` the weights come from the cached npm package (raises PretrainedUnavailable,
    saying how to fetch it, when it is not there); without, they are freshly initialized.
    """
    weights = loading.package_weights(MODEL_NAME, cache) if pretrained else None
    model, mapping = build()
    if weights is not None:
        loading.assign(model, weights, mapping, MODEL_NAME)
    return model
