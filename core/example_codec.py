"""Serializes a flat tf.train.Example (one bytes or int64 value, or a list of floats, per feature)
without TensorFlow.

Ingest workers only build Examples; importing TensorFlow for its proto classes would cost every Beam
worker process seconds of start-up and a large share of its memory. The wire format is small and stable
(tensorflow/core/example/example.proto, feature.proto):

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }      map entry: { string key = 1; Feature value = 2; }
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }   Int64List { repeated int64 value = 1 [packed = true]; }
    FloatList { repeated float value = 1 [packed = true]; }     (little-endian IEEE float32)

tests/test_example_codec.py checks the bytes against TensorFlow's own parser.
"""
from __future__ import annotations

import struct
from typing import Dict, Sequence, Union

_INT64_MASK = (1 << 64) - 1
_ONE_BYTE = [bytes([i]) for i in range(128)]   # most labels, lengths and box coordinates


def _varint(value: int) -> bytes:
    if 0 <= value < 128:
        return _ONE_BYTE[value]
    value &= _INT64_MASK          # negative int64: two's complement, 10 bytes
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _ONE_BYTE[number << 3 | 2] + _varint(len(payload)) + payload


_BYTES_LIST, _FLOAT_LIST, _INT64_LIST = 1, 2, 3
_KEYS: Dict[str, bytes] = {}       # a feature name's encoded map key, built once per name


def _feature(value: Union[bytes, int, Sequence[float]]) -> bytes:
    if isinstance(value, bytes):
        return _field(_BYTES_LIST, _field(1, value))
    if isinstance(value, int) and not isinstance(value, bool):
        return _field(_INT64_LIST, _field(1, _varint(value)))     # packed int64
    if isinstance(value, (list, tuple)) and all(isinstance(v, float) for v in value):
        return _field(_FLOAT_LIST, _field(1, struct.pack(f"<{len(value)}f", *value)))  # packed float
    raise TypeError(f"feature values must be bytes, int or a list of floats, got "
                    f"{type(value).__name__}")


def _key(name: str) -> bytes:
    key = _KEYS.get(name)
    if key is None:
        key = _KEYS[name] = _field(1, name.encode("utf-8"))
    return key


def encode_example(features: Dict[str, Union[bytes, int, Sequence[float]]]) -> bytes:
    """Serialized tf.train.Example, keys in sorted order: bytes and int values become one-value
    lists; a list of Python floats becomes a FloatList (rounded to float32)."""
    entries = b"".join(_field(1, _key(name) + _field(2, _feature(value)))
                       for name, value in sorted(features.items()))
    return _field(1, entries)
