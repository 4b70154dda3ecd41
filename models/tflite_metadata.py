"""The operating point inside a TFLite model: the pushed SavedModel's operating_point.json
(core/operating_point.py) as a named entry of the flatbuffer's `metadata` (TFLite's own mechanism
for data beside the graph; interpreters ignore entries they do not know). An on-device caller reads
it with `read_operating_point` (or any flatbuffer reader: the entry named METADATA_NAME, its buffer
the UTF-8 JSON) and decides `score >= threshold` on the normalized embeddings' cosine, as the
SavedModel's `verify` / `compare` do."""
from __future__ import annotations

import os
from typing import Optional

from core import operating_point

METADATA_NAME = "ffem_operating_point"


def saved_model_operating_point(saved_model_dir: str) -> Optional[str]:
    """The SavedModel's operating_point.json text when it holds a threshold (a pushed model), else
    None (an exported model's placeholder, or a model exported before the asset)."""
    path = os.path.join(saved_model_dir, operating_point.ASSET)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read()
    return text if operating_point.threshold_of(text) is not None else None


def with_operating_point(tflite_model: bytes, text: str) -> bytes:
    """The model with `text` as its METADATA_NAME entry (replacing an earlier one)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite_model))
    buffer = schema.BufferT()
    buffer.data = list(text.encode("utf-8"))
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if _name(m) != METADATA_NAME] + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_operating_point(tflite_path: str) -> Optional[str]:
    """The METADATA_NAME entry's text of the model at `tflite_path`, or None."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(tflite_path)
    for entry in model.metadata or []:
        if _name(entry) == METADATA_NAME:
            return bytes(bytearray(model.buffers[entry.buffer].data)).decode("utf-8")
    return None


def _name(entry) -> str:
    name = entry.name
    return name.decode("utf-8") if isinstance(name, bytes) else str(name)
