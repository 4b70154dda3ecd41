"""models/serving_checks.py against ingest (core.records) as the oracle: for the same bytes, box and
landmarks the serving graph refuses with the reason code ingest's quarantine gives, names the
input's position, and accepts what ingest accepts. No exported model needed (the graph checks run
in a tf.function of their own); the signatures themselves are tested in test_serving_contract.py."""
import re
import struct
import time

import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings

from core import records
from models import serving_checks
from tests import image_factory as images

LIMITS = serving_checks.LIMITS
# Ingest tells a truncated file from an undecodable one by Pillow's error text, the graph by the
# file's end marker: both are "the decoder refuses it", compared as one class.
DECODE_FAILURES = {"truncated_image", "undecodable_image"}
VERDICT = re.compile(r"input (\d+): ([a-z_]+): ")


@tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None, 4], tf.int64),
                              tf.SparseTensorSpec([None, None], tf.float32)])
def _check(image_bytes, boxes, landmarks):
    with tf.control_dependencies([serving_checks.assert_servable(image_bytes, boxes, landmarks)]):
        return tf.constant(True)


def serving_verdicts(items):
    """{position: reason} of the refused inputs of one request; {} when all pass.
    items: (bytes, box, landmarks as a flat float32 list or None)."""
    rows = [list(lm or []) for _, _, lm in items]
    indices = [[i, j] for i, row in enumerate(rows) for j in range(len(row))]
    landmarks = tf.SparseTensor(tf.constant(indices, tf.int64, shape=[len(indices), 2]),
                                tf.constant([v for row in rows for v in row], tf.float32),
                                [len(items), max([len(r) for r in rows] + [0])])
    try:
        _check(tf.constant([data for data, _, _ in items], tf.string),
               tf.constant([box for _, box, _ in items], tf.int64, shape=[len(items), 4]), landmarks)
    except tf.errors.InvalidArgumentError as error:
        assert serving_checks.REFUSED in error.message
        found = {int(i): reason for i, reason in VERDICT.findall(error.message)}
        assert found and set(found.values()) <= set(records.REASONS), error.message
        return found
    return {}


def ingest_verdict(data, box, landmarks=None):
    """ingest's reason for one record (core.records.check_record's order), None when accepted."""
    value = dict(zip(("x1", "y1", "x2", "y2"), (int(v) for v in box)), label=0)
    if landmarks is not None:
        value["landmarks"] = [[float(x), float(y)] for x, y in zip(landmarks[::2], landmarks[1::2])]
    try:
        record = records.check_fields("g/x", value)
        if len(data) > LIMITS.max_image_bytes:
            return "image_too_large"
        info = records.inspect_image(data, LIMITS)
        records.check_box_inside(record, info.width, info.height, LIMITS.box_tolerance)
    except records.Rejected as rejected:
        return rejected.reason
    return None


def same_class(a, b):
    return a == b or {a, b} <= DECODE_FAILURES


def jpeg_with_segments(count):
    """A valid JPEG with `count` extra empty COM segments before its frame header."""
    data = images.jpeg(16, 16)
    return data[:2] + b"\xff\xfe\x00\x02" * count + data[2:]


GOOD = images.jpeg()          # 64 x 48
BOX = (4, 5, 40, 45)
CASES = [
    ("PNG of 14000 x 14000", images.png_bomb(14000, 14000), BOX, "image_too_large"),
    ("JPEG declaring 9000 x 5000", images.jpeg_declaring(9000, 5000), BOX, "image_too_large"),
    ("over the byte limit", GOOD + b"\0" * LIMITS.max_image_bytes, BOX, "image_too_large"),
    ("CMYK JPEG", images.jpeg(mode="CMYK"), BOX, "unsupported_color_mode"),
    ("GIF", images.encode(images.pixels(), "GIF"), BOX, "unsupported_format"),
    ("BMP", images.encode(images.pixels(), "BMP"), BOX, "unsupported_format"),
    ("WebP", images.encode(images.pixels(), "WEBP"), BOX, "unsupported_format"),
    ("TIFF", images.encode(images.pixels(), "TIFF"), BOX, "unsupported_format"),
    ("empty", b"", BOX, "empty_file"),
    ("text", b"<html>not an image</html>", BOX, "undecodable_image"),
    ("JPEG cut in its data", GOOD[:len(GOOD) // 2], BOX, "truncated_image"),
    ("PNG cut in its data", images.png()[:-40], BOX, "truncated_image"),
    ("box beyond the right edge", GOOD, (4, 5, 64 + 3, 45), "box_outside_image"),
    ("box wholly left of the image", GOOD, (-30, 5, -2, 45), "box_outside_image"),
    ("inverted box", GOOD, (40, 5, 4, 45), "bad_box"),
    ("empty box", GOOD, (4, 5, 4, 45), "bad_box"),
]


@pytest.mark.parametrize("name,data,box,reason", CASES, ids=[c[0] for c in CASES])
def test_a_refused_input_is_named_by_its_position_and_ingests_reason(name, data, box, reason):
    assert same_class(ingest_verdict(data, box), reason)       # the oracle agrees on the case
    assert serving_verdicts([(GOOD, BOX, None), (data, box, None), (GOOD, BOX, None)]) == {1: reason}


def test_every_refused_input_of_a_request_is_listed():
    verdicts = serving_verdicts([(images.png_bomb(14000, 14000), BOX, None), (GOOD, BOX, None),
                                 (images.jpeg(mode="CMYK"), BOX, None), (GOOD, (40, 5, 4, 45), None)])
    assert verdicts == {0: "image_too_large", 2: "unsupported_color_mode", 3: "bad_box"}


def test_the_tolerance_boundary_is_ingests():
    """64 x 48 image: 2 % of a side is under a pixel, so exactly one pixel of slack each way."""
    for box in [(-1, -1, 65, 49), (-2, 5, 40, 45), (4, -2, 40, 45), (4, 5, 66, 45), (4, 5, 40, 50),
                (63, 5, 70, 45), (64, 5, 70, 45), (-9, 5, 0, 45), (-9, 5, 1, 45)]:
        expected = ingest_verdict(GOOD, box)
        assert serving_verdicts([(GOOD, box, None)]) == ({0: expected} if expected else {}), box
    # On a 1000 px side the slack is 20 px.
    wide = images.jpeg(1000, 48)
    assert serving_verdicts([(wide, (-20, 5, 1020, 45), None)]) == {}
    assert serving_verdicts([(wide, (-21, 5, 1020, 45), None)]) == {0: "box_outside_image"}


@pytest.mark.parametrize("points,reason", [
    ([10.0, 10.0] * 5, None),
    ([10.0, 10.0] * 68, None),
    ([10.0, 10.0] * 4, "bad_landmarks"),                       # 4 points
    ([10.0, 10.0] * 4 + [10.0, float("nan")], "bad_landmarks"),
    ([10.0, 10.0] * 4 + [float("inf"), 10.0], "bad_landmarks"),
    ([10.0, 10.0] * 4 + [65.0, 10.0], None),                   # within one pixel of the edge
    ([10.0, 10.0] * 4 + [65.5, 10.0], "bad_landmarks"),
    ([10.0, 10.0] * 4 + [10.0, -1.5], "bad_landmarks"),
])
def test_landmarks_follow_ingests_rules(points, reason):
    assert ingest_verdict(GOOD, BOX, points) == reason
    assert serving_verdicts([(GOOD, BOX, None), (GOOD, BOX, points)]) == ({1: reason} if reason else {})


def test_jpeg_walk_reads_the_frame_header_after_many_segments_and_bounds_their_number():
    """The frame header after 1000 extra segments is found (ingest reads such a file); past the
    bound the file is refused as undecodable, in bounded time."""
    many = jpeg_with_segments(1000)
    assert ingest_verdict(many, (1, 1, 9, 9)) is None
    assert serving_verdicts([(many, (1, 1, 9, 9), None)]) == {}
    start = time.perf_counter()
    assert serving_verdicts([(jpeg_with_segments(100_000), (1, 1, 9, 9), None)]) \
        == {0: "undecodable_image"}
    assert time.perf_counter() - start < 5.0


def test_jpeg_fill_bytes_and_restart_markers_before_the_frame_are_skipped():
    data = images.jpeg(16, 16)
    padded = data[:2] + b"\xff\xff\xff\xd0" + data[2:]           # fill bytes, then RST0
    assert ingest_verdict(padded, (1, 1, 9, 9)) is None
    assert serving_verdicts([(padded, (1, 1, 9, 9), None)]) == {}


def _declared(fmt, width, height):
    return images.png_bomb(width, height) if fmt == "PNG" else images.jpeg_declaring(width, height)


@st.composite
def requests(draw):
    """A valid JPEG/PNG in any accepted or refused mode, or a file declaring an over-limit size;
    a box anywhere from inside to far outside; sometimes landmarks, some bad."""
    kind = draw(st.sampled_from(["JPEG", "PNG", "declared"]))
    if kind == "declared":
        fmt = draw(st.sampled_from(["JPEG", "PNG"]))
        side = 65535 if fmt == "JPEG" else 2 ** 31 - 1
        width = draw(st.integers(LIMITS.max_image_pixels // side + 1, side))
        height = draw(st.integers(LIMITS.max_image_pixels // width + 1, side))
        data = _declared(fmt, width, height)
    else:
        width, height = draw(st.integers(1, 80)), draw(st.integers(1, 80))
        modes = ["L", "RGB", "CMYK"] if kind == "JPEG" else ["L", "RGB", "RGBA", "P", "I;16", "1"]
        mode = draw(st.sampled_from(modes))
        data = images.encode(images.pixels(width, height, seed=draw(st.integers(0, 3))), kind,
                             mode=mode)
    far = st.integers(-(2 ** 62), 2 ** 62)
    near_x = st.integers(-width // 4 - 2, width + width // 4 + 2)
    near_y = st.integers(-height // 4 - 2, height + height // 4 + 2)
    x1, x2 = draw(near_x | far), draw(near_x | far)
    y1, y2 = draw(near_y | far), draw(near_y | far)
    landmarks = None
    if draw(st.booleans()):
        count = draw(st.sampled_from([5, 68, 3]))
        span = max(width, height)
        coordinate = st.floats(float(np.float32(-(span // 10) - 3)),
                               float(np.float32(span + span // 10 + 3)), width=32) \
            | st.sampled_from([float("nan"), float("inf"), -1e30])
        landmarks = [draw(coordinate) for _ in range(2 * count)]
    return data, (x1, y1, x2, y2), landmarks


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(requests())
def test_serving_refuses_exactly_what_ingest_refuses(request):
    """Property: for any generated image, box and landmarks, the graph's verdict (refused with a
    reason, or accepted) is ingest's."""
    data, box, landmarks = request
    expected = ingest_verdict(data, box, landmarks)
    found = serving_verdicts([(GOOD, BOX, None), (data, box, landmarks)])
    if expected is None:
        assert found == {}
    else:
        assert set(found) == {1} and same_class(found[1], expected), (found, expected)


def test_png_with_a_non_ihdr_first_chunk_or_zero_side_is_undecodable():
    good = images.png()
    renamed = good[:12] + b"IHDX" + good[16:]
    zero = good[:16] + struct.pack(">I", 0) + good[20:]
    for data in (renamed, zero):
        assert ingest_verdict(data, BOX) == "undecodable_image"
        assert serving_verdicts([(data, BOX, None)]) == {0: "undecodable_image"}


def test_accepted_images_decode_to_the_header_size():
    """The header the graph reads is the decoder's size: boxes are checked against the image the
    Transform crops."""
    for data in (images.jpeg(37, 23), images.png(37, 23), images.encode(images.pixels(37, 23),
                                                                         "JPEG", progressive=True)):
        head = serving_checks.bytes_at(tf.constant([data]), tf.constant([0]), 8).numpy()
        assert head.shape == (1, 8)
        assert np.array_equal(tf.io.decode_image(data).shape[:2], (23, 37))
        assert serving_verdicts([(data, (0, 0, 37, 23), None)]) == {}
        assert serving_verdicts([(data, (0, 0, 39, 23), None)]) == {0: "box_outside_image"}


def test_every_serving_reason_code_has_a_row_in_the_serving_contract_page():
    import os

    from tests.conftest import REPO_ROOT

    with open(os.path.join(REPO_ROOT, "docs", "serving.md"), encoding="utf-8") as f:
        section = f.read().split("## The serving contract", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| `")]
    assert sorted(rows) == sorted(f"`{code}`" for code in serving_checks.REASON_CODES)
