"""Ingest's image, box and landmark rules inside the serving graph, before any image is decoded.

The serving signatures (models/export.py) take image bytes, boxes and (serving_default) landmarks
from whoever calls the deployed endpoint: the same kind of input ingest checks (core/records.py).
`assert_servable` applies ingest's rules to a request, with ingest's limits (`LIMITS`, the defaults
of core.records.IngestOptions), its file signatures and its reason codes (core.records.REASONS),
all imported from core, never restated here. It is plain TensorFlow (string ops, tf.while_loop,
tf.data): no py_function, so the SavedModel runs in TF Serving.

Order, per input, as ingest's check chain (the first failing rule names the reason):
  bad_box                 x2 <= x1 or y2 <= y1
  bad_landmarks           not 0, 5 or 68 points, or a non-finite value (serving_default only)
  image_too_large         more bytes than LIMITS.max_image_bytes
  empty_file              zero bytes
  unsupported_format      GIF, BMP, WebP, TIFF, ... (core.records.OTHER_FORMATS)
  undecodable_image       not JPEG or PNG; a header that makes no sense (no IHDR first, a zero
                          side, no JPEG marker where one must be, more than MAX_JPEG_SEGMENTS
                          segments before the frame header, a component count other than 1, 3, 4)
  truncated_image         the data ends inside the header
  image_too_large         width x height over LIMITS.max_image_pixels, read from the PNG IHDR or
                          the JPEG frame header (SOFn), walking the JPEG's segments
  unsupported_color_mode  a 4-component (CMYK / YCCK) JPEG
  bad_landmarks           a point outside the image by more than the box tolerance
  box_outside_image       the box outside the image by more than the box tolerance
All of that reads at most a few dozen bytes per segment, never the pixels. Only when every input
of the request passes does a probe decode run, one image at a time (a JPEG at 1/8 scale, which still
reads all of its entropy-coded data, as ingest's draft decode does; a PNG in full): an image the
decoder refuses is `undecodable_image`, or `truncated_image` when the file lacks its end marker
(JPEG EOI, PNG IEND). Only then does the request reach the Transform's decode and crop.

A refused request fails with one InvalidArgumentError listing every refused input as
`input <position in the batch>: <reason code>: <detail>`.
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

from core import features, records

LIMITS = records.IngestOptions()
# A real JPEG has a few dozen segments before its frame header (APPn, DQT, DHT, COM); the walk
# runs one step per segment for the whole batch, so this bounds its cost for a file made of
# millions of tiny segments (1,024 steps take about 0.2 s: benchmarks/results.md).
MAX_JPEG_SEGMENTS = 1024
REFUSED = "serving request refused (reason codes: docs/serving.md)"

_HEADER_BYTES = 32
_PNG_END = b"IEND\xaeB`\x82"     # the IEND chunk's type and CRC: the last 8 bytes of a whole PNG
_JPEG_END = b"\xff\xd9"       # EOI: the last 2 bytes of a whole JPEG (bar trailing bytes)
# Frame header markers (SOF0-3, 5-7, 9-11, 13-15); 0xC4 (DHT), 0xC8 (JPG), 0xCC (DAC) are not.
_SOF_MARKERS = tuple(m for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC))
# Markers that stand alone (no length field): TEM and the restart markers.
_STANDALONE = (0x01, *range(0xD0, 0xD8))


# The reason codes a refusal can carry: ingest's (core.records.REASONS), in its checks' order.
REASON_CODES = ("bad_box", "bad_landmarks", "image_too_large", "empty_file", "unsupported_format",
                "undecodable_image", "truncated_image", "unsupported_color_mode",
                "box_outside_image")
assert set(REASON_CODES) <= set(records.REASONS)


def _code(reason: str) -> str:
    assert reason in REASON_CODES, reason
    return reason


def bytes_at(data: tf.Tensor, pos: tf.Tensor, n: int) -> tf.Tensor:
    """int32 [b, n]: the n bytes of each string from `pos` (int32 [b]), 0 past its end."""
    length = tf.strings.length(data)
    chunk = tf.strings.substr(data, tf.minimum(pos, length), tf.fill(tf.shape(data), n))
    padded = tf.strings.substr(tf.strings.join([chunk, tf.constant(b"\0" * n)]), 0, n)
    return tf.reshape(tf.cast(tf.io.decode_raw(padded, tf.uint8), tf.int32), [-1, n])


def _matches(head: tf.Tensor, length: tf.Tensor, offset: int, magic: bytes) -> tf.Tensor:
    expected = tf.constant(list(magic), tf.int32)
    return (tf.reduce_all(tf.equal(head[:, offset:offset + len(magic)], expected), axis=1)
            & (length >= offset + len(magic)))


def _big_endian(columns: tf.Tensor) -> tf.Tensor:
    value = tf.zeros(tf.shape(columns)[:1], tf.int64)
    for i in range(columns.shape[1]):
        value = value * 256 + tf.cast(columns[:, i], tf.int64)
    return value


def _walk_jpeg(data: tf.Tensor, is_jpeg: tf.Tensor):
    """The JPEG frame header of each input, found by walking its segments from the SOI marker.
    Returns (state, position, width, height, components): state 1 found, 2 truncated, 3 not a
    valid marker sequence (position names where), 4 more than MAX_JPEG_SEGMENTS segments, 5 not
    a JPEG."""
    length = tf.strings.length(data)
    n = tf.shape(data)[0]
    zeros64 = tf.zeros([n], tf.int64)
    state = tf.where(is_jpeg, 0, 5)
    pos = tf.fill([n], 2)

    def step(i, state, pos, width, height, components):
        w = bytes_at(data, pos, 10)
        running = tf.equal(state, 0)
        avail = length - pos
        marker = w[:, 1]
        seg_len = w[:, 2] * 256 + w[:, 3]
        is_sof = tf.reduce_any(tf.equal(marker[:, None], tf.constant(_SOF_MARKERS)[None, :]), 1)
        standalone = tf.reduce_any(tf.equal(marker[:, None], tf.constant(_STANDALONE)[None, :]), 1)
        # Cases in order; the first that holds decides (state, position advance).
        truncated_marker = avail < 2
        no_marker = tf.not_equal(w[:, 0], 0xFF)
        fill = tf.equal(marker, 0xFF)
        early_end = tf.reduce_any(tf.equal(marker[:, None], tf.constant([0x00, 0xD8, 0xD9, 0xDA])
                                           [None, :]), 1)
        truncated_length = avail < 4
        bad_length = seg_len < 2
        truncated_frame = is_sof & (avail < 10)
        bad_frame = is_sof & (seg_len < 8)
        decided = tf.zeros_like(running)
        new_state = state
        new_pos = pos
        for case, result, advance in (
                (truncated_marker, 2, None), (no_marker, 3, None), (fill, 0, 1),
                (standalone, 0, 2), (early_end, 3, None), (truncated_length, 2, None),
                (bad_length, 3, None), (truncated_frame, 2, None), (bad_frame, 3, None),
                (is_sof, 1, None), (tf.ones_like(running), 0, 2 + seg_len)):
            take = running & ~decided & case
            new_state = tf.where(take, result, new_state)
            if advance is not None:
                new_pos = tf.where(take, pos + advance, new_pos)
            decided = decided | take
        found = running & tf.equal(new_state, 1)
        height = tf.where(found, _big_endian(w[:, 5:7]), height)
        width = tf.where(found, _big_endian(w[:, 7:9]), width)
        components = tf.where(found, w[:, 9], components)
        return i + 1, new_state, new_pos, width, height, components

    _, state, pos, width, height, components = tf.while_loop(
        lambda i, state, *_: (i < MAX_JPEG_SEGMENTS) & tf.reduce_any(tf.equal(state, 0)),
        step, (tf.constant(0), state, pos, zeros64, zeros64, tf.zeros([n], tf.int32)))
    state = tf.where(tf.equal(state, 0), 4, state)
    return state, pos, width, height, components


class _Verdicts:
    """Per input: the first failing rule's reason code and detail ("" while none failed)."""

    def __init__(self, n: tf.Tensor):
        self.reason = tf.fill([n], "")
        self.detail = tf.fill([n], "")

    def rule(self, failed: tf.Tensor, reason: str, detail) -> None:
        take = failed & tf.equal(self.reason, "")
        self.reason = tf.where(take, _code(reason), self.reason)
        self.detail = tf.where(take, detail, self.detail)

    def ok(self) -> tf.Tensor:
        return tf.equal(self.reason, "")

    def assertion(self, name: str) -> tf.Operation:
        refused = tf.where(~self.ok())[:, 0]
        lines = tf.strings.join([
            "input ", tf.strings.as_string(refused), ": ", tf.gather(self.reason, refused), ": ",
            tf.gather(self.detail, refused)])
        return tf.debugging.Assert(tf.reduce_all(self.ok()),
                                   [REFUSED + "; " + tf.strings.reduce_join(lines, separator="; ")],
                                   summarize=1, name=name)


def _s(value: tf.Tensor) -> tf.Tensor:
    return tf.strings.as_string(value)


def _landmark_rules(landmarks: tf.SparseTensor, n: tf.Tensor, width, height, slack_x, slack_y):
    """(bad count or non-finite [n], outside the image [n], count [n]) of each input's landmarks."""
    row = landmarks.indices[:, 0]
    values = tf.cast(landmarks.values, tf.float64)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(row), row, n)
    allowed = tf.constant([0] + [2 * c for c in features.LANDMARK_COUNTS], tf.int64)
    bad_count = ~tf.reduce_any(tf.equal(counts[:, None], allowed[None, :]), axis=1)
    not_finite = tf.math.unsorted_segment_max(
        tf.cast(~tf.math.is_finite(values), tf.int32), row, n) > 0
    is_x = tf.equal(landmarks.indices[:, 1] % 2, 0)
    extent = tf.where(is_x, tf.gather(width, row), tf.gather(height, row))
    slack = tf.where(is_x, tf.gather(slack_x, row), tf.gather(slack_y, row))
    outside = (values < -slack) | (values > extent + slack)
    outside = tf.math.unsorted_segment_max(tf.cast(outside, tf.int32), row, n) > 0
    return bad_count | not_finite, outside, counts


def _decodes(data: tf.Tensor, is_jpeg: tf.Tensor) -> tf.Tensor:
    """bool [n]: whether each image decodes (JPEG at 1/8 scale), one image at a time. A decoder
    error cannot be caught in a graph, but tf.data's ignore_errors drops the element."""
    n = tf.shape(data)[0]

    def probe(i, encoded, jpeg):
        shape = tf.cond(jpeg, lambda: tf.shape(tf.io.decode_jpeg(encoded, channels=3, ratio=8)),
                        lambda: tf.shape(tf.io.decode_png(encoded, channels=3)))
        return i, shape

    # The dataset is built per request: its graph rewrites and autotuning would cost more than
    # the decodes of a small request.
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    options.autotune.enabled = False
    decoded = (tf.data.Dataset.from_tensor_slices((tf.range(n), data, is_jpeg))
               .map(probe).ignore_errors().with_options(options)
               .reduce(tf.zeros([n], tf.bool),
                       lambda seen, item: tf.tensor_scatter_nd_update(seen, [[item[0]]], [True])))
    return decoded


@tf.autograph.experimental.do_not_convert   # plain graph code: no tensor-dependent Python control flow
def assert_servable(image_bytes: tf.Tensor, boxes: tf.Tensor,
                    landmarks: Optional[tf.SparseTensor] = None) -> tf.Operation:
    """An op that fails the request (InvalidArgumentError naming each refused input's position and
    reason code) unless every input passes ingest's rules; decode only after it (control
    dependency). image_bytes string [n], boxes int64 [n, 4] (x1, y1, x2, y2), landmarks the parsed
    features.LANDMARKS ([n, None] sparse, interleaved x, y) or None."""
    data = tf.reshape(image_bytes, [-1])
    n = tf.shape(data)[0]
    boxes = tf.cast(tf.reshape(boxes, [-1, 4]), tf.int64)
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    length = tf.strings.length(data)
    head = bytes_at(data, tf.zeros([n], tf.int32), _HEADER_BYTES)
    verdicts = _Verdicts(n)

    box_text = tf.strings.join(["box x1=", _s(x1), " y1=", _s(y1), " x2=", _s(x2), " y2=", _s(y2)])
    verdicts.rule((x2 <= x1) | (y2 <= y1), "bad_box",
                  box_text + " must have x1 < x2 and y1 < y2")

    # Format and header.
    is_jpeg = _matches(head, length, 0, records.JPEG_SIGNATURE)
    is_png = _matches(head, length, 0, records.PNG_SIGNATURE)
    other_name = tf.fill([n], "")
    for parts, name in reversed(records.OTHER_FORMATS):     # the first listed match wins
        match = tf.ones([n], tf.bool)
        for offset, magic in parts:
            match = match & _matches(head, length, offset, magic)
        other_name = tf.where(match, name, other_name)
    state, where, jpeg_w, jpeg_h, components = _walk_jpeg(data, is_jpeg)
    png_w, png_h = _big_endian(head[:, 16:20]), _big_endian(head[:, 20:24])
    width = tf.where(is_jpeg, jpeg_w, tf.where(is_png, png_w, 0))
    height = tf.where(is_jpeg, jpeg_h, tf.where(is_png, png_h, 0))
    width_f, height_f = tf.cast(width, tf.float64), tf.cast(height, tf.float64)
    slack_x = tf.maximum(tf.constant(1.0, tf.float64), LIMITS.box_tolerance * width_f)
    slack_y = tf.maximum(tf.constant(1.0, tf.float64), LIMITS.box_tolerance * height_f)

    bad_points = outside_points = counts = None
    if landmarks is not None:
        bad_points, outside_points, counts = _landmark_rules(landmarks, n, width_f, height_f,
                                                             slack_x, slack_y)
        verdicts.rule(bad_points, "bad_landmarks", tf.strings.join([
            "landmarks must be 5 or 68 finite [x, y] points (0, 10 or 136 values), got ",
            _s(counts), " values"]))
    verdicts.rule(length > LIMITS.max_image_bytes, "image_too_large", tf.strings.join([
        _s(length), f" bytes exceeds the {LIMITS.max_image_bytes}-byte limit"]))
    verdicts.rule(tf.equal(length, 0), "empty_file", "the image is empty (0 bytes)")
    verdicts.rule(tf.not_equal(other_name, ""), "unsupported_format",
                  other_name + " image; only JPEG and PNG are accepted")
    verdicts.rule(~is_jpeg & ~is_png, "undecodable_image", "not a JPEG or PNG file")
    at = tf.strings.join([" at byte ", _s(where)])
    verdicts.rule(is_jpeg & tf.equal(state, 2), "truncated_image",
                  "JPEG data ends inside its header" + at)
    verdicts.rule(is_jpeg & tf.equal(state, 3), "undecodable_image",
                  "JPEG header cannot be read: no valid marker" + at)
    verdicts.rule(is_jpeg & tf.equal(state, 4), "undecodable_image",
                  f"JPEG has more than {MAX_JPEG_SEGMENTS} segments before its frame header")
    verdicts.rule(is_png & (length < 29), "truncated_image", "PNG data ends inside its IHDR chunk")
    verdicts.rule(is_png & ~(_matches(head, length, 8, b"\0\0\0\x0dIHDR")), "undecodable_image",
                  "PNG header cannot be read: the first chunk is not a 13-byte IHDR")
    size_text = tf.strings.join([_s(width), "x", _s(height)])
    verdicts.rule((width <= 0) | (height <= 0) | (width >= 2 ** 31) | (height >= 2 ** 31),
                  "undecodable_image", "the header declares a " + size_text + " image")
    pixels = width * height
    verdicts.rule(pixels > LIMITS.max_image_pixels, "image_too_large", tf.strings.join([
        size_text, " = ", _s(pixels), f" pixels exceeds the limit of {LIMITS.max_image_pixels} "
        "(decompression-bomb guard, read from the header)"]))
    verdicts.rule(is_jpeg & tf.equal(components, records.CMYK_COMPONENTS), "unsupported_color_mode",
                  "CMYK/YCCK JPEG (4 components); convert it to RGB")
    verdicts.rule(is_jpeg & tf.not_equal(components, 1) & tf.not_equal(components, 3),
                  "undecodable_image", tf.strings.join(["JPEG with ", _s(components),
                                                         " components (1 or 3 are decodable)"]))
    tolerance = f"by more than the tolerance ({LIMITS.box_tolerance:.0%} of a side)"
    if landmarks is not None:
        verdicts.rule(outside_points, "bad_landmarks", tf.strings.join([
            "a landmark lies outside the ", size_text, f" image {tolerance}"]))
    xf1, yf1, xf2, yf2 = (tf.cast(v, tf.float64) for v in (x1, y1, x2, y2))
    outside = ((xf1 < -slack_x) | (yf1 < -slack_y) | (xf2 > width_f + slack_x)
               | (yf2 > height_f + slack_y) | (x2 <= 0) | (y2 <= 0) | (x1 >= width)
               | (y1 >= height))
    verdicts.rule(outside, "box_outside_image", tf.strings.join([
        box_text, " exceeds the ", size_text, f" image {tolerance}"]))
    header_check = verdicts.assertion("image_header_check")

    # Only a request whose every input passed: the probe decode.
    with tf.control_dependencies([header_check]):
        decodes = _decodes(tf.identity(data), is_jpeg)
    def tail(k):
        return tf.strings.substr(data, tf.maximum(length - k, 0), tf.minimum(length, k))

    ends = tf.where(is_jpeg, tf.equal(tail(2), _JPEG_END), tf.equal(tail(8), _PNG_END))
    decode_verdicts = _Verdicts(n)
    fmt = tf.where(is_jpeg, "JPEG", "PNG")
    decode_verdicts.rule(~decodes & ~ends, "truncated_image", fmt + " data ends early")
    decode_verdicts.rule(~decodes, "undecodable_image", fmt + " data cannot be decoded")
    return decode_verdicts.assertion("image_decode_check")


def guarded(check: tf.Operation, tensors: dict) -> dict:
    """`tensors` (a dict of Tensors / SparseTensors) that run only after `check`."""
    out = {}
    with tf.control_dependencies([check]):
        for key, value in tensors.items():
            if isinstance(value, tf.SparseTensor):
                out[key] = tf.SparseTensor(tf.identity(value.indices), tf.identity(value.values),
                                           tf.identity(value.dense_shape))
            else:
                out[key] = tf.identity(value)
    return out

