"""Reader of TensorFlow.js's weights format: a manifest JSON and its binary shards, to NumPy.

The manifest (`*-weights_manifest.json`, or the `weightsManifest` entry of a `model.json`) is a list
of groups, each `{"paths": [shard files], "weights": [{"name", "shape", "dtype", "quantization"?}]}`.
A group's shards, concatenated in `paths` order, hold its weights back to back in `weights` order,
little-endian. A weight without `quantization` is stored in its own dtype (float32, int32, bool).
A quantized one is stored as `quantization.dtype`:
  - uint8 / uint16: value = q * scale + min (computed in double, then rounded to float32 as
    TensorFlow.js's decodeWeights does; int32 weights are rounded as JS Math.round, halves up);
  - float16: IEEE 754 half precision, widened to float32.
Each weight's values fill its shape in row-major order.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

_STORED = {"float32": "<f4", "int32": "<i4", "bool": "u1"}
_QUANTIZED = {"uint8": "u1", "uint16": "<u2", "float16": "<f2"}


class WeightsFormatError(ValueError):
    """The manifest or its shards do not match the TF.js weights format."""


def _spec_error(source: str, spec: Mapping, reason: str) -> WeightsFormatError:
    return WeightsFormatError(f"{source}: weight {spec.get('name')!r}: {reason}")


def _stored_dtype(spec: Mapping, dtype: str, quantization: Optional[Mapping], source: str) -> np.dtype:
    """The dtype of the weight's bytes in the shards: its own, or its quantization's."""
    if quantization is None:
        if dtype not in _STORED:
            raise _spec_error(source, spec, f"dtype {dtype!r} is not supported (float32, int32, bool)")
        return np.dtype(_STORED[dtype])
    qdtype = quantization.get("dtype")
    if qdtype not in _QUANTIZED:
        raise _spec_error(source, spec, f"quantization dtype {qdtype!r} is not uint8, uint16 or float16")
    if qdtype == "float16" and dtype != "float32":
        raise _spec_error(source, spec, f"float16 quantization needs dtype float32, not {dtype!r}")
    if qdtype != "float16" and ("scale" not in quantization or "min" not in quantization):
        raise _spec_error(source, spec, f"{qdtype} quantization without 'scale' and 'min'")
    if dtype not in ("float32", "int32"):
        raise _spec_error(source, spec, f"quantized dtype {dtype!r} is not float32 or int32")
    return np.dtype(_QUANTIZED[qdtype])


def _decode_one(spec: Mapping, data: memoryview, offset: int, source: str):
    """(values, bytes consumed) of one weight starting at `offset`."""
    for key in ("name", "shape", "dtype"):
        if key not in spec:
            raise _spec_error(source, spec, f"no {key!r} in its manifest entry")
    dtype = spec["dtype"]
    try:
        shape = tuple(int(d) for d in spec["shape"])
    except (TypeError, ValueError):
        raise _spec_error(source, spec, f"shape {spec['shape']!r} is not a list of integers") from None
    if any(d < 0 for d in shape):
        raise _spec_error(source, spec, f"negative dimension in shape {list(shape)}")
    count = int(np.prod(shape, dtype=np.int64))
    quantization = spec.get("quantization")
    stored = _stored_dtype(spec, dtype, quantization, source)
    size = count * stored.itemsize
    if offset + size > len(data):
        raise _spec_error(source, spec, f"needs bytes {offset}..{offset + size} but the shards hold "
                                        f"{len(data)}")
    raw = np.frombuffer(data, dtype=stored, count=count, offset=offset)
    if quantization is None:
        values = raw.astype(np.bool_ if dtype == "bool" else np.dtype(dtype))
    elif quantization["dtype"] == "float16":
        values = raw.astype(np.float32)
    else:
        real = raw.astype(np.float64) * float(quantization["scale"]) + float(quantization["min"])
        # int32: JavaScript's Math.round (halves toward +infinity), not NumPy's half-to-even.
        values = np.floor(real + 0.5).astype(np.int32) if dtype == "int32" else real.astype(np.float32)
    return values.reshape(shape), size


def decode_weights(data: bytes, specs: Sequence[Mapping],
                   source: str = "weights") -> "OrderedDict[str, np.ndarray]":
    """The weights of one group, in manifest order, from its concatenated shard bytes.

    Raises WeightsFormatError (naming `source` and the weight) on an unsupported dtype or
    quantization, a missing field, a duplicate name, too few bytes, or bytes left over.
    """
    view = memoryview(data)
    out: "OrderedDict[str, np.ndarray]" = OrderedDict()
    offset = 0
    for spec in specs:
        values, size = _decode_one(spec, view, offset, source)
        if spec["name"] in out:
            raise _spec_error(source, spec, "appears twice in the manifest")
        out[spec["name"]] = values
        offset += size
    if offset != len(view):
        raise WeightsFormatError(f"{source}: the shards hold {len(view)} bytes but the manifest's "
                                 f"weights use {offset}")
    return out


def read_manifest(path: str) -> List[dict]:
    """The weight groups of a `*-weights_manifest.json` or of a `model.json`'s `weightsManifest`."""
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise WeightsFormatError(f"{path}: cannot read the manifest: {e}") from None
    if isinstance(manifest, dict):
        manifest = manifest.get("weightsManifest")
    if not isinstance(manifest, list) or not all(
            isinstance(g, dict) and isinstance(g.get("paths"), list) and isinstance(g.get("weights"), list)
            for g in manifest):
        raise WeightsFormatError(f"{path}: not a list of groups with 'paths' and 'weights'")
    return manifest


def load_weights(manifest_path: str) -> Dict[str, np.ndarray]:
    """Every weight of a manifest (shards read from the manifest's folder), in manifest order."""
    folder = os.path.dirname(os.path.abspath(manifest_path))
    out: Dict[str, np.ndarray] = OrderedDict()
    for group in read_manifest(manifest_path):
        chunks = []
        for shard in group["paths"]:
            try:
                with open(os.path.join(folder, shard), "rb") as f:
                    chunks.append(f.read())
            except OSError as e:
                raise WeightsFormatError(f"{manifest_path}: shard {shard!r}: {e}") from None
        source = f"{manifest_path} [{', '.join(group['paths'])}]"
        for name, values in decode_weights(b"".join(chunks), group["weights"], source).items():
            if name in out:
                raise WeightsFormatError(f"{source}: weight {name!r} appears in two groups")
            out[name] = values
    return out
