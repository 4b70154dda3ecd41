"""face-api's FaceRecognitionNet in Keras: dlib's ResNet-34-style face descriptor network.

Written from the package's source (src/faceRecognitionNet/: FaceRecognitionNet.ts, convLayer.ts,
residualLayer.ts, scaleLayer.ts) and its weights manifest (`face_recognition_model`):

  input: RGB 0..255, [batch, 150, 150, 3] -> (x - mean RGB) / 255
  conv32_down: conv 7x7 stride 2 'valid' (+bias) -> scale -> relu;  max pool 3x3 stride 2 'valid'
  residual blocks: conv 3x3 'same' -> scale -> relu -> conv 3x3 'same' -> scale; + input; relu
      conv32_1..3 (32), conv64_down, conv64_1..3 (64), conv128_down, conv128_1..2 (128),
      conv256_down, conv256_1..2, conv256_down_out (256)
  "down" blocks: the first conv has stride 2 and 'valid' padding; the shortcut is a 2x2 stride-2
      average pool, zero-padded with as many channels as the block adds; when the pooled shortcut
      is one row/column larger than the conv path (odd sizes), the conv path gets a zero row at
      the bottom and a zero column at the right
  global mean over height and width, then `fc` (256 x 128, no bias): the 128-d descriptor.

The descriptor is the raw `fc` output, as `computeFaceDescriptor` returns it (not L2-normalized);
dlib's usual same-person threshold is a Euclidean distance of 0.6 between two descriptors.
Every layer is trainable, so the network can be fine-tuned.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import tensorflow as tf

from models.pretrained import loading
from models.pretrained.layers import ChannelScale, MeanRgbNormalization, ZeroChannelPad

keras = tf.keras

MODEL_NAME = "face_recognition_model"
INPUT_SIZE = 150
DESCRIPTOR_SIZE = 128
# (block name, filters, downsamples) in forward order.
RESIDUAL_BLOCKS: Tuple[Tuple[str, int, bool], ...] = (
    ("conv32_1", 32, False), ("conv32_2", 32, False), ("conv32_3", 32, False),
    ("conv64_down", 64, True), ("conv64_1", 64, False), ("conv64_2", 64, False), ("conv64_3", 64, False),
    ("conv128_down", 128, True), ("conv128_1", 128, False), ("conv128_2", 128, False),
    ("conv256_down", 256, True), ("conv256_1", 256, False), ("conv256_2", 256, False),
    ("conv256_down_out", 256, True),
)


def _conv_scale(x, prefix: str, filters: int, kernel: int, stride: int, padding: str, relu: bool,
                mapping: Dict[str, List[str]], weight_prefix: str):
    """convLayer.ts: conv2d + bias, then the scale layer, then (optionally) relu."""
    conv_name, scale_name = f"{prefix}_conv", f"{prefix}_scale"
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, name=conv_name)(x)
    x = ChannelScale(name=scale_name)(x)
    mapping[conv_name] = [f"{weight_prefix}/conv/filters", f"{weight_prefix}/conv/bias"]
    mapping[scale_name] = [f"{weight_prefix}/scale/weights", f"{weight_prefix}/scale/biases"]
    return keras.layers.ReLU(name=f"{prefix}_relu")(x) if relu else x


def _residual(x, name: str, filters: int, down: bool, mapping: Dict[str, List[str]]):
    """residualLayer.ts: `residual` and `residualDown`."""
    out = _conv_scale(x, f"{name}_conv1", filters, 3, 2 if down else 1, "valid" if down else "same",
                      True, mapping, f"{name}/conv1")
    out = _conv_scale(out, f"{name}_conv2", filters, 3, 1, "same", False, mapping, f"{name}/conv2")
    shortcut = x
    if down:
        shortcut = keras.layers.AveragePooling2D(2, 2, padding="valid", name=f"{name}_pool")(x)
        grow = (int(shortcut.shape[1]) - int(out.shape[1]), int(shortcut.shape[2]) - int(out.shape[2]))
        if grow != (0, 0):
            if grow != (1, 1):
                raise ValueError(f"{name}: shortcut {shortcut.shape} and conv path {out.shape} differ "
                                 "by more than the one row and column face-api pads")
            out = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad")(out)
        extra = filters - int(shortcut.shape[-1])
        if extra:
            shortcut = ZeroChannelPad(extra, name=f"{name}_channel_pad")(shortcut)
    out = keras.layers.Add(name=f"{name}_add")([shortcut, out])
    return keras.layers.ReLU(name=f"{name}_out")(out)


def build(input_size: int = INPUT_SIZE):
    """(the architecture with freshly initialized weights, {layer name: TF.js weight names})."""
    mapping: Dict[str, List[str]] = {}
    image = keras.Input((input_size, input_size, 3), name="image")
    x = MeanRgbNormalization(name="normalize")(image)
    x = _conv_scale(x, "conv32_down", 32, 7, 2, "valid", True, mapping, "conv32_down")
    x = keras.layers.MaxPooling2D(3, 2, padding="valid", name="conv32_down_pool")(x)
    for name, filters, down in RESIDUAL_BLOCKS:
        x = _residual(x, name, filters, down, mapping)
    x = keras.layers.GlobalAveragePooling2D(name="mean")(x)
    descriptor = keras.layers.Dense(DESCRIPTOR_SIZE, use_bias=False, name="fc")(x)
    mapping["fc"] = ["fc"]
    return keras.Model(image, descriptor, name="face_recognition_net"), mapping


def face_recognition_net(pretrained: bool = True, cache: Optional[str] = None):
    """Keras FaceRecognitionNet: float32 RGB [batch, 150, 150, 3], values 0..255 -> [batch, 128],
    the descriptor face-api's `computeFaceDescriptor` gives for the same 150 x 150 tensor.

    With `pretrained` the weights come from the cached npm package (see models.pretrained.fetch;
    raises PretrainedUnavailable, saying how to fetch it, when it is not there): nothing is
    downloaded here. Without, the weights are freshly initialized.
    """
    weights = loading.package_weights(MODEL_NAME, cache) if pretrained else None
    model, mapping = build()
    if weights is not None:
        loading.assign(model, weights, mapping, MODEL_NAME)
    return model


FACE_API_WEIGHTS = "face_api"


def backbone(input_shape, weights: Optional[str] = None, cache: Optional[str] = None):
    """The pipeline's backbone contract (models/backbones.py): images in [0, 1], [b, 150, 150, 3]
    -> a feature map, here the 128-d descriptor as [b, 1, 1, 128] (the pooling over one position
    passes it on; the embedding head then learns from the pretrained descriptor).

    `weights`: None or "face_api", the pretrained weights of the cached package (this backbone
    exists for them; other weights come in through the Trainer's base_model warm start). Raises
    ValueError for another input size (the network's residual shapes are dlib's 150 x 150) and
    PretrainedUnavailable, saying how to fetch it, when the package is not cached.
    """
    if tuple(int(v) for v in input_shape) != (INPUT_SIZE, INPUT_SIZE, 3):
        raise ValueError(f"backbone face_recognition_net takes {INPUT_SIZE}x{INPUT_SIZE}x3 crops (the "
                         f"Transform's image_size must be {INPUT_SIZE}, with crop 'face_api_aligned'), "
                         f"got input shape {tuple(input_shape)}")
    if weights not in (None, FACE_API_WEIGHTS):
        raise ValueError(f"backbone face_recognition_net loads its weights from the face-api package "
                         f"(backbone_weights None or {FACE_API_WEIGHTS!r}), got {weights!r}; start "
                         "from another model's weights with the Trainer's base_model warm start")
    network = face_recognition_net(pretrained=True, cache=cache)
    image = keras.Input(input_shape, name="image")
    descriptor = network(keras.layers.Rescaling(255.0, name="to_0_255")(image))
    features = keras.layers.Reshape((1, 1, DESCRIPTOR_SIZE), name="descriptor_map")(descriptor)
    return keras.Model(image, features, name="face_recognition_net")
