"""The operating point inside a TFLite model: the pushed SavedModel's operating_point.json
(core/operating_point.py) as a named entry of the flatbuffer's `metadata` (TFLite's own mechanism
for data beside the graph; interpreters ignore entries they do not know). An on-device caller reads
it with `read_operating_point` (or any flatbuffer reader: the entry named METADATA_NAME, its buffer
the UTF-8 JSON) and decides `score >= threshold` on the normalized embeddings' cosine, as the
SavedModel's `verify` / `compare` do."""
from __future__ import annotations

import os
from typing import Optional, Tuple

import tensorflow as tf

from core import operating_point

METADATA_NAME = "ffem_operating_point"


def saved_model_operating_point(saved_model_dir: str,
                                pushed: bool = False) -> Tuple[Optional[str], Optional[str]]:
    """(text, None): the SavedModel's assets/operating_point.json, a valid operating point
    (core.operating_point.loads, what the Pusher checked before writing it). (None, None): the
    model carries none and need not, an exported model (no asset, or the export's placeholder
    with a null threshold). (None, the reason, naming the file): it must carry one and does not,
    so the TFLite check fails. A model must carry one when it was pushed: `pushed` says so, or its
    directory holds the GuardedPusher's PUSH_MARKER; then a missing asset, the placeholder, or an
    unreadable document is the reason. An asset that is neither the placeholder nor valid is one
    in any model. Files are read with tf.io.gfile: the pushed model may be on gs://."""
    path = os.path.join(saved_model_dir, operating_point.ASSET)
    pushed = pushed or tf.io.gfile.exists(os.path.join(saved_model_dir, operating_point.PUSH_MARKER))
    if not tf.io.gfile.exists(path):
        if pushed:
            return None, (f"{path} is missing: a pushed model carries the operating point it was "
                          f"blessed at (the GuardedPusher writes it)")
        return None, None
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            text = f.read().decode("utf-8")
    except (tf.errors.OpError, UnicodeDecodeError) as e:
        return None, f"{path} cannot be read: {e}"
    if not pushed and operating_point.is_placeholder(text):
        return None, None
    try:
        operating_point.loads(text, source=path)
    except ValueError as e:
        return None, str(e)
    return text, None


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
