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
    with pytest.raises(TypeError):
        encode_example({"x": [1.0, 2]})          # a float list holds floats only


def test_float_lists_match_the_proto_and_parse_as_var_len():
    values = [0.0, -1.5, 3.1415926, 1e-40, 1e30, 112.25]
    serialized = encode_example({"landmarks": values, "label": 1})
    reference = tf.train.Example()
    reference.features.feature["landmarks"].float_list.value.extend(values)
    reference.features.feature["label"].int64_list.value.append(1)
    assert tf.train.Example.FromString(serialized) == reference
    parsed = tf.io.parse_example([serialized, encode_example({"label": 2})],
                                 {"landmarks": tf.io.VarLenFeature(tf.float32)})["landmarks"]
    assert tf.sparse.to_dense(parsed).numpy()[0].tolist() == tf.constant(values, tf.float32).numpy().tolist()
    assert parsed.indices.numpy()[:, 0].tolist() == [0] * len(values)      # nothing for the second


def test_an_empty_float_list_is_a_present_empty_feature():
    parsed = tf.train.Example.FromString(encode_example({"landmarks": []}))
    assert parsed.features.feature["landmarks"].HasField("float_list")
    assert list(parsed.features.feature["landmarks"].float_list.value) == []
