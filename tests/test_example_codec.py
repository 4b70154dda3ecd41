"""The TensorFlow-free Example encoder against TensorFlow's own protos and parser."""
import pytest
import tensorflow as tf

from core.example_codec import encode_example

VALUES = [0, 1, 127, 128, 300, -1, -7, 2 ** 31, -(2 ** 31), 2 ** 63 - 1, -(2 ** 63)]


@pytest.mark.parametrize("value", VALUES)
def test_int64_values_round_trip(value):
    parsed = tf.train.Example.FromString(encode_example({"x": value}))
    assert list(parsed.features.feature["x"].int64_list.value) == [value]


def test_bytes_features_and_parse_example():
    blob = bytes(range(256)) * 40
    features = {"image_raw": blob, "label": 12, "x1": -3, "group": "é".encode(),
                "path": b"a/b.jpg"}
    serialized = encode_example(features)
    reference = tf.train.Example()
    for name, value in features.items():
        if isinstance(value, bytes):
            reference.features.feature[name].bytes_list.value.append(value)
        else:
            reference.features.feature[name].int64_list.value.append(value)
    assert tf.train.Example.FromString(serialized) == reference
    parsed = tf.io.parse_single_example(serialized, {
        "image_raw": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([1], tf.int64),
        "x1": tf.io.FixedLenFeature([1], tf.int64)})
    assert parsed["image_raw"].numpy() == blob
    assert parsed["label"].numpy().tolist() == [12] and parsed["x1"].numpy().tolist() == [-3]


def test_other_types_are_refused():
    with pytest.raises(TypeError):
        encode_example({"x": 1.5})
    with pytest.raises(TypeError):
        encode_example({"x": True})
