"""Per-record checks (core/records.py + beam_ingest.check_record)."""
import contextlib
import os
import socket
import threading

import numpy as np
import pytest

from components.face_example_gen import beam_ingest
from core import records
from core.records import IngestOptions, Rejected
from tests import image_factory as images

BOX = {"label": 3, "x1": 4, "y1": 5, "x2": 40, "y2": 45}   # inside a 64x48 image


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    return root


def check(root, key, value=BOX, options=IngestOptions()):
    """(parsed Example, record)."""
    import tensorflow as tf

    serialized, record = beam_ingest.check_record(str(root), key, value, options, local_root=True)
    return tf.train.Example.FromString(serialized), record


def reason_of(root, key, value=BOX, options=IngestOptions()):
    with pytest.raises(Rejected) as info:
        check(root, key, value, options)
    assert key is None or str(key)[:20] in str(info.value) or info.value.detail
    return info.value.reason


def write(root, key, data):
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_valid_record_becomes_an_example_with_exact_features(root):
    data = images.jpeg(64, 48)
    write(root, "Asian/p14/profile2.jpg", data)
    example, record = check(root, "Asian/p14/profile2.jpg")
    f = example.features.feature
    assert f["image_raw"].bytes_list.value == [data]
    assert [f[k].int64_list.value[0] for k in ("label", "x1", "y1", "x2", "y2")] == [3, 4, 5, 40,
                                                                                     45]
    assert (f["image_height"].int64_list.value[0], f["image_width"].int64_list.value[0]) == (48, 64)
    assert f["group"].bytes_list.value == [b"Asian"]
    assert f["path"].bytes_list.value == [b"Asian/p14/profile2.jpg"]
    assert sorted(f.keys()) == sorted(["image_raw", "label", "x1", "y1", "x2", "y2", "image_height",
                                       "image_width", "group", "path"])
    assert record.group == "Asian"


def test_key_without_folder_is_ungrouped(root):
    write(root, "flat.png", images.png())
    example, _ = check(root, "flat.png")
    assert example.features.feature["group"].bytes_list.value == [b"ungrouped"]


def test_extra_fields_are_accepted_and_ignored(root):
    write(root, "a/b.jpg", images.jpeg())
    example, _ = check(root, "a/b.jpg", {**BOX, "score": 0.9, "pose": [1, 2], "landmarks": None})
    assert "score" not in example.features.feature and "pose" not in example.features.feature
    assert "landmarks" not in example.features.feature


@pytest.mark.parametrize("count", [5, 68])
def test_given_landmarks_are_written_as_float32_pairs(root, count):
    write(root, "a/b.jpg", images.jpeg(64, 48))
    points = [[4 + 0.37 * i, 5 + (i % 7) * 1.25] for i in range(count)]
    points[0] = [0, 48]                       # integers and the image's edge are fine
    example, _ = check(root, "a/b.jpg", {**BOX, "landmarks": points})
    written = list(example.features.feature["landmarks"].float_list.value)
    expected = np.asarray(points, dtype=np.float32).reshape(-1)
    assert written == expected.tolist()


@pytest.mark.parametrize("landmarks, detail", [
    ([[1, 2]] * 4, "5 or 68 [x, y] points, got 4 items"),
    ({"x": 1}, "got object"),
    ([[1, 2]] * 4 + [[1]], "landmark 4 must be [x, y]"),
    ([[1, 2]] * 4 + [[1, True]], "landmark 4 must be [x, y]"),
    ([[1, 2]] * 4 + [["1", 2]], "landmark 4 must be [x, y]"),
    ([[1, 2]] * 4 + [[float("nan"), 2]], "landmark 4 is not finite"),
    ([[1, 2]] * 67 + [[1, float("inf")]], "landmark 67 is not finite"),
    ([[1, 2]] * 4 + [[70, 2]], "landmark 4 (70, 2) lies outside the 64x48 image"),
    ([[1, -3]] + [[1, 2]] * 4, "landmark 0 (1, -3) lies outside"),
])
def test_bad_landmarks_are_rejected_naming_the_point(root, landmarks, detail):
    write(root, "a/b.jpg", images.jpeg(64, 48))
    with pytest.raises(Rejected) as e:
        check(root, "a/b.jpg", {**BOX, "landmarks": landmarks})
    assert e.value.reason == "bad_landmarks" and detail in e.value.detail, e.value.detail


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_jpeg_modes_accepted(root, mode):
    write(root, "a/x.jpg", images.jpeg(mode=mode))
    check(root, "a/x.jpg")


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "I;16", "1"])
def test_png_modes_accepted(root, mode):
    write(root, "a/x.png", images.png(mode=mode))
    check(root, "a/x.png")


@pytest.mark.parametrize("value,reason", [
    ({"label": 1, "x1": 1, "y1": 1, "x2": 2}, "missing_field"),
    ({**BOX, "label": "0"}, "bad_label"),
    ({**BOX, "label": 1.0}, "bad_label"),
    ({**BOX, "label": 1.5}, "bad_label"),
    ({**BOX, "label": -1}, "bad_label"),
    ({**BOX, "label": True}, "bad_label"),
    ({**BOX, "label": None}, "bad_label"),
    ({**BOX, "label": 2 ** 63}, "bad_label"),
    ({**BOX, "x1": "4"}, "bad_box"),
    ({**BOX, "x2": 40.0}, "bad_box"),
    ({**BOX, "y1": False}, "bad_box"),
    ({**BOX, "x1": 40, "x2": 4}, "bad_box"),       # inverted
    ({**BOX, "y1": 45, "y2": 45}, "bad_box"),      # zero height
    ({**BOX, "x2": 80}, "box_outside_image"),
    ({**BOX, "y1": -10}, "box_outside_image"),
    ({**BOX, "x1": 70, "x2": 90}, "box_outside_image"),   # entirely right of the image
    ([1, 2, 3], "malformed_record"),
    ("label", "malformed_record"),
])
def test_bad_fields(root, value, reason):
    write(root, "g/x.jpg", images.jpeg(64, 48))
    assert reason_of(root, "g/x.jpg", value) == reason


def test_box_tolerance_boundary(root):
    """2 % of the side by default: a 64-px wide image allows x2 up to 64 + 1.28."""
    write(root, "g/x.jpg", images.jpeg(64, 48))
    check(root, "g/x.jpg", {**BOX, "x2": 65})             # 1 px over: within 1.28
    assert reason_of(root, "g/x.jpg", {**BOX, "x2": 66}) == "box_outside_image"
    check(root, "g/x.jpg", {**BOX, "x1": -1})
    assert reason_of(root, "g/x.jpg", {**BOX, "x1": -2}) == "box_outside_image"
    loose = IngestOptions(box_tolerance=0.25)               # 16 px on a 64-px side
    check(root, "g/x.jpg", {**BOX, "x2": 80}, loose)
    assert reason_of(root, "g/x.jpg", {**BOX, "x2": 81}, loose) == "box_outside_image"
    strict = IngestOptions(box_tolerance=0.0)               # at least one pixel of slack remains
    check(root, "g/x.jpg", {**BOX, "x2": 65}, strict)
    assert reason_of(root, "g/x.jpg", {**BOX, "x2": 66}, strict) == "box_outside_image"


@pytest.mark.parametrize("key,reason", [
    ("", "bad_path"),
    ("a/\x00b.jpg", "bad_path"),
    ("a\\b.jpg", "bad_path"),
    ("bad\udcff.jpg", "bad_path"),                 # lone surrogate: not encodable as UTF-8
    ("a/" + "x" * 300 + ".jpg", "bad_path"),        # component longer than 255 bytes
    ("/".join(["abcdefgh"] * 600), "bad_path"),     # whole key longer than 4096 bytes
    ("../outside.jpg", "path_escape"),
    ("a/../../outside.jpg", "path_escape"),
    ("/etc/passwd", "path_escape"),
    ("C:/x.jpg", "path_escape"),
    ("gs://bucket/x.jpg", "path_escape"),
    ("a/missing.jpg", "missing_file"),
    ("a", "missing_file"),                          # a directory, not a file
])
def test_bad_keys(root, key, reason):
    write(root, "a/present.jpg", images.jpeg())
    assert reason_of(root, key) == reason


def test_symlink_pointing_outside_the_root_is_an_escape(root, tmp_path):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(images.jpeg())
    (root / "faces").mkdir()
    os.symlink(secret, root / "faces" / "link.jpg")
    os.symlink(tmp_path, root / "dirlink")
    assert reason_of(root, "faces/link.jpg") == "path_escape"
    assert reason_of(root, "dirlink/secret.jpg") == "path_escape"
    # A symlink that stays inside the root is fine.
    write(root, "faces/real.jpg", images.jpeg())
    os.symlink(root / "faces" / "real.jpg", root / "faces" / "inside.jpg")
    check(root, "faces/inside.jpg")


@pytest.mark.parametrize("name,data,reason", [
    ("empty.jpg", b"", "empty_file"),
    ("text.jpg", b"this is a text file, not a JPEG\n", "undecodable_image"),
    ("trunc.jpg", images.jpeg(64, 48)[:700], "truncated_image"),
    ("trunc.png", images.png(64, 48)[:900], "truncated_image"),
    ("badhead.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 40, "undecodable_image"),
    ("x.gif", images.encode(images.pixels(), "GIF"), "unsupported_format"),
    ("x.bmp", images.encode(images.pixels(), "BMP"), "unsupported_format"),
    ("x.webp", images.encode(images.pixels(), "WEBP"), "unsupported_format"),
    ("x.tif", images.encode(images.pixels(), "TIFF"), "unsupported_format"),
    ("cmyk.jpg", images.encode(images.pixels(), "JPEG", mode="CMYK"), "unsupported_color_mode"),
    ("bomb.png", images.png_bomb(), "image_too_large"),
    ("bomb.jpg", images.jpeg_declaring(30000, 30000), "image_too_large"),
])
def test_bad_image_files(root, name, data, reason):
    write(root, f"g/{name}", data)
    assert reason_of(root, f"g/{name}") == reason


def test_pixel_and_byte_limits_are_configurable(root):
    write(root, "g/x.jpg", images.jpeg(64, 48))
    assert reason_of(root, "g/x.jpg", options=IngestOptions(max_image_pixels=64 * 48 - 1)) \
        == "image_too_large"
    check(root, "g/x.jpg", options=IngestOptions(max_image_pixels=64 * 48))
    size = os.path.getsize(root / "g/x.jpg")
    assert reason_of(root, "g/x.jpg", options=IngestOptions(max_image_bytes=size - 1)) \
        == "image_too_large"
    check(root, "g/x.jpg", options=IngestOptions(max_image_bytes=size))


def test_the_bomb_is_rejected_before_decoding(root, monkeypatch):
    """The declared size is checked before Image.load() ever runs."""
    from PIL import ImageFile

    def refuse(self):
        raise AssertionError("decoded a decompression bomb")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    write(root, "g/bomb.png", images.png_bomb())
    assert reason_of(root, "g/bomb.png") == "image_too_large"


def test_unreadable_file_is_a_read_error(root, monkeypatch):
    write(root, "g/x.jpg", images.jpeg())

    def broken_open(*args, **kwargs):
        raise OSError("Input/output error")

    monkeypatch.setattr(beam_ingest.FileSystems, "open", broken_open)
    assert reason_of(root, "g/x.jpg") == "read_error"


def test_every_reason_code_is_documented():
    assert all(isinstance(text, str) and text for text in records.REASONS.values())
    with pytest.raises(AssertionError):
        Rejected("not_a_reason", "x")


def test_every_reason_code_has_a_row_in_the_data_page_table():
    from tests.conftest import REPO_ROOT

    with open(os.path.join(REPO_ROOT, "docs", "data.md"), encoding="utf-8") as f:
        section = f.read().split("\n## ", 1)[0]        # the face list, before "Your own data"
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert [r for r in records.REASONS if not any(f"`{r}`" in row.split("|")[1] for row in rows)] \
        == []


@contextlib.contextmanager
def fifo_watchdog(fifos):
    """Fails the test, instead of hanging it, when anything opens one of `fifos` for reading.

    A writer end opened with O_NONBLOCK only succeeds while some reader has the pipe open (or is
    blocked opening it); opening and closing it at once lets that reader see end of file and go
    on, and the open is reported when the block ends."""
    done, opened = threading.Event(), []

    def watch():
        while not done.wait(0.02):
            for fifo in fifos:
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:        # ENXIO: nobody has it open for reading
                    continue
                opened.append(str(fifo))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    assert not opened, f"named pipes were opened for reading: {sorted(set(opened))}"


def test_named_pipe_is_not_a_regular_file_and_is_never_opened(root, monkeypatch):
    (root / "g").mkdir()
    fifo = root / "g" / "pipe.jpg"
    os.mkfifo(fifo)
    os.symlink(fifo, root / "g" / "link.jpg")        # a symlink inside the root to the pipe
    opened = []
    real_open = beam_ingest.FileSystems.open
    monkeypatch.setattr(beam_ingest.FileSystems, "open",
                        lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    with fifo_watchdog([fifo]):
        assert reason_of(root, "g/pipe.jpg") == "not_a_regular_file"
        assert reason_of(root, "g/link.jpg") == "not_a_regular_file"
    assert opened == []


def test_socket_is_not_a_regular_file(tmp_path):
    root = tmp_path / "r"           # AF_UNIX paths are limited to about 100 bytes
    root.mkdir()
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(root / "s.jpg"))
        assert reason_of(root, "s.jpg") == "not_a_regular_file"
    finally:
        server.close()


def test_a_directory_at_the_key_is_still_a_missing_file(root):
    (root / "g" / "x.jpg").mkdir(parents=True)
    assert reason_of(root, "g/x.jpg") == "missing_file"


def test_non_local_roots_are_not_checked_with_os_stat(root, monkeypatch):
    """gs:// and other Beam filesystems have no os.stat: their images are read as before."""
    write(root, "g/x.jpg", images.jpeg(64, 48))

    def no_stat(*args, **kwargs):
        raise AssertionError("os.stat on a non-local root")

    monkeypatch.setattr(records.os, "stat", no_stat)
    serialized, record = beam_ingest.check_record(str(root), "g/x.jpg", BOX, IngestOptions(),
                                                  local_root=False)
    assert record.key == "g/x.jpg" and serialized
