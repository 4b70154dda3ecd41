"""Checks one face record and turns it into a tf.train.Example, or rejects it with a reason code.

Pure functions (no Beam here). `check_record` is the one check chain: the FaceExampleGen component
and the generate_tfrecord CLI run it through `beam_ingest.IngestFaceRecords`, the tools that read
lists outside the pipeline (tools/face_lists.py) call it directly. A rejection carries a stable
reason code (`REASONS`) and a detail that names what is wrong; `beam_ingest` writes it as a
quarantine line.

Decisions (docs/data.md):
* Extra fields in a record are accepted and ignored (datasets carry scores, ...), except
  `landmarks`: when present it must be a list of 5 or 68 [x, y] pairs of finite JSON numbers in
  photo pixels (features.LANDMARKS says the point order), each inside the image within the box
  tolerance; they are written to the Example (the pretrained network's aligned crop uses them
  instead of finding its own). `"landmarks": null` is the same as no landmarks.
* `label` and the box must be JSON integers: strings, floats (even 3.0) and booleans are rejected,
  nothing is coerced.
* The box is (left, top, right, bottom) in pixels, right/bottom exclusive. It must have x1 < x2 and
  y1 < y2, and may lie outside the image by at most `box_tolerance` of the image side (default 2 %,
  at least 1 pixel): detectors and landmark-derived boxes overshoot a little at image borders.
* Only regular files are opened under a local root: a named pipe, socket or device is rejected
  (`not_a_regular_file`) from os.stat, since opening or reading it can block the run forever.
  Roots on other filesystems (gs://, ...) have no such files and are read as they are.
* JPEG (grayscale or RGB) and PNG (any bit depth / colour type) are accepted; CMYK/YCCK JPEGs are
  rejected (`unsupported_color_mode`) because `image_raw` keeps the file's bytes unchanged and the
  training decoder cannot convert them. Other formats are rejected as `unsupported_format`.
"""
from __future__ import annotations

import functools
import io
import math
import os
import stat
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, Optional, Tuple

from PIL import Image

from core import features
from core.example_codec import encode_example

# The stable reason codes. Tests, docs/data.md and downstream tooling rely on these names.
REASONS: Dict[str, str] = {
    "invalid_json": "the list file (or one JSON Lines line) is not valid JSON",
    "bad_top_level": "the list is not a JSON object of records (or a JSON Lines line is not an object)",
    "malformed_record": "a record's value is not an object, or has the same field twice",
    "missing_field": "label, x1, y1, x2 or y2 is missing",
    "bad_label": "label is not a non-negative JSON integer",
    "bad_box": "a box coordinate is not an integer, or x1 >= x2 or y1 >= y2",
    "bad_landmarks": "landmarks are not 5 or 68 [x, y] pairs of finite numbers, or lie outside the image",
    "box_outside_image": "the box lies outside the image beyond the tolerance",
    "bad_path": "the key is empty, not UTF-8, too long, or contains NUL or backslash",
    "path_escape": "the key leaves the image root (.., absolute path, URL, symlink to outside)",
    "duplicate_key": "the same key appears more than once in the list",
    "missing_file": "no image file at the key",
    "not_a_regular_file": "a named pipe, socket or device at the key (never opened: reading could block)",
    "read_error": "the image file exists but could not be read",
    "empty_file": "the image file is empty",
    "unsupported_format": "the file is an image format other than JPEG or PNG",
    "undecodable_image": "the file is not a decodable JPEG or PNG",
    "truncated_image": "the image data ends early",
    "unsupported_color_mode": "a CMYK/YCCK JPEG",
    "image_too_large": "more pixels or bytes than the configured limit (decompression-bomb guard)",
}

REQUIRED_FIELDS = (features.LABEL, *features.BOX_KEYS)
INT64_MAX = (1 << 63) - 1
MAX_KEY_BYTES = 4096
MAX_COMPONENT_BYTES = 255


@dataclass(frozen=True)
class IngestOptions:
    """Limits applied to every record. Defaults are documented in docs/data.md and docs/configuration.md."""
    max_image_pixels: int = 40_000_000       # width * height; Pillow's own bomb limit is 89 M
    max_image_bytes: int = 32 * 1024 * 1024
    box_tolerance: float = 0.02              # fraction of the image side a box may overshoot

    def __post_init__(self):
        if self.max_image_pixels <= 0 or self.max_image_bytes <= 0:
            raise ValueError("max_image_pixels and max_image_bytes must be positive")
        if not 0.0 <= self.box_tolerance < 1.0:
            raise ValueError("box_tolerance must be in [0, 1)")


class Rejected(Exception):
    """A record that cannot become an Example. `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class FaceRecord:
    key: str
    label: int
    x1: int
    y1: int
    x2: int
    y2: int
    landmarks: Optional[Tuple[float, ...]] = None    # interleaved x, y (features.LANDMARKS)

    @property
    def group(self) -> str:
        """The first path component (the original's race), or features.UNGROUPED for a key without folders."""
        head, sep, _ = self.key.partition("/")
        return head if sep else features.UNGROUPED


@dataclass(frozen=True)
class ImageInfo:
    format: str   # "JPEG" or "PNG"
    width: int
    height: int
    mode: str


def printable_key(key: Any) -> Any:
    """The key as a valid UTF-8 string (lone surrogates escaped), for quarantine lines and logs."""
    if key is None:
        return None
    if not isinstance(key, str):
        return repr(key)
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def quarantine_line(key: Any, reason: str, detail: str) -> Dict[str, Any]:
    return {"key": printable_key(key), "reason": reason, "detail": printable_key(detail)}


def _is_json_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    return {bool: "boolean", str: "string", float: "float", type(None): "null", list: "list",
            dict: "object"}.get(type(value), type(value).__name__)


def check_key(key: Any) -> str:
    """Returns the key if it is a safe relative path inside the root, else raises Rejected."""
    if not isinstance(key, str) or not key:
        raise Rejected("bad_path", f"key must be a non-empty string, got {key!r}")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise Rejected("bad_path", f"key {key!r} is not valid UTF-8 (lone surrogate escape)")
    if "\x00" in key:
        raise Rejected("bad_path", f"key {key!r} contains a NUL character")
    if "\\" in key:
        raise Rejected("bad_path", f"key {key!r} contains a backslash; use '/' as separator")
    if len(encoded) > MAX_KEY_BYTES:
        raise Rejected("bad_path", f"key is {len(encoded)} bytes long (limit {MAX_KEY_BYTES})")
    if key.startswith("/") or "://" in key or (len(key) > 1 and key[1] == ":" and key[0].isalpha()):
        raise Rejected("path_escape", f"key {key!r} is absolute; keys are relative to the image root")
    parts = key.split("/")
    if ".." in parts:
        raise Rejected("path_escape", f"key {key!r} contains '..' and could leave the image root")
    for part in parts:
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise Rejected("bad_path", f"a path component of {key[:80]!r}... is longer than "
                                       f"{MAX_COMPONENT_BYTES} bytes")
    return key


def check_fields(key: str, value: Any) -> FaceRecord:
    """Validates the record's JSON value (not the image). Raises Rejected."""
    if not isinstance(value, dict):
        raise Rejected("malformed_record",
                       f"value must be an object with label/x1/y1/x2/y2, got {_type_name(value)}")
    missing = [f for f in REQUIRED_FIELDS if f not in value]
    if missing:
        raise Rejected("missing_field", f"missing {', '.join(missing)}")
    label = value[features.LABEL]
    if not _is_json_int(label):
        raise Rejected("bad_label", f"label must be an integer, got {_type_name(label)} {label!r}")
    if not 0 <= label <= INT64_MAX:
        raise Rejected("bad_label", f"label must be in [0, 2^63), got {label}")
    box = {}
    for name in features.BOX_KEYS:
        coordinate = value[name]
        if not _is_json_int(coordinate):
            raise Rejected("bad_box", f"{name} must be an integer, got {_type_name(coordinate)} "
                                      f"{coordinate!r}")
        if abs(coordinate) > INT64_MAX:
            raise Rejected("bad_box", f"{name}={coordinate} does not fit in int64")
        box[name] = coordinate
    x1, y1, x2, y2 = (box[name] for name in features.BOX_KEYS)
    if x1 >= x2 or y1 >= y2:
        raise Rejected("bad_box", f"box must have x1 < x2 and y1 < y2, got x1={x1} y1={y1} x2={x2} "
                                  f"y2={y2}")
    return FaceRecord(key=key, label=label, x1=x1, y1=y1, x2=x2, y2=y2,
                      landmarks=check_landmarks(value.get(features.LANDMARKS)))


def check_landmarks(points: Any) -> Optional[Tuple[float, ...]]:
    """None (no landmarks) or the points of a record's `landmarks` field, interleaved x, y as
    floats. Raises Rejected("bad_landmarks") naming what is wrong."""
    if points is None:
        return None
    counts = " or ".join(str(c) for c in features.LANDMARK_COUNTS)
    if not isinstance(points, list) or len(points) not in features.LANDMARK_COUNTS:
        size = f"{len(points)} items" if isinstance(points, list) else _type_name(points)
        raise Rejected("bad_landmarks", f"landmarks must be a list of {counts} [x, y] points, got {size}")
    flat = []
    for i, point in enumerate(points):
        if (not isinstance(point, list) or len(point) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point)):
            raise Rejected("bad_landmarks", f"landmark {i} must be [x, y] with two numbers, got {point!r}")
        if not all(math.isfinite(v) for v in point):
            raise Rejected("bad_landmarks", f"landmark {i} is not finite: {point!r}")
        flat += [float(point[0]), float(point[1])]
    return tuple(flat)


def check_box_inside(record: FaceRecord, width: int, height: int, tolerance: float) -> None:
    """The box, and the landmarks when given, inside the image within the tolerance."""
    slack_x = max(1.0, tolerance * width)
    slack_y = max(1.0, tolerance * height)
    if record.landmarks is not None:
        for i in range(0, len(record.landmarks), 2):
            x, y = record.landmarks[i], record.landmarks[i + 1]
            if not (-slack_x <= x <= width + slack_x and -slack_y <= y <= height + slack_y):
                raise Rejected("bad_landmarks",
                               f"landmark {i // 2} ({x:g}, {y:g}) lies outside the {width}x{height} "
                               f"image by more than the tolerance ({tolerance:.0%} of a side)")
    if (record.x1 < -slack_x or record.y1 < -slack_y or record.x2 > width + slack_x
            or record.y2 > height + slack_y or record.x2 <= 0 or record.y2 <= 0
            or record.x1 >= width or record.y1 >= height):
        raise Rejected("box_outside_image",
                       f"box x1={record.x1} y1={record.y1} x2={record.x2} y2={record.y2} exceeds the "
                       f"{width}x{height} image by more than the tolerance ({tolerance:.0%} of a side)")


# The file signatures, defined once: ingest's `sniff_format` and the serving graph's checks
# (models/serving_checks.py) both read them. JPEG and PNG are accepted; each other format is a
# tuple of (offset, bytes) parts that must all match, to name a rejected format precisely.
JPEG_SIGNATURE = b"\xff\xd8\xff"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OTHER_FORMATS = (
    (((0, b"GIF87a"),), "GIF"), (((0, b"GIF89a"),), "GIF"), (((0, b"BM"),), "BMP"),
    (((0, b"II*\x00"),), "TIFF"), (((0, b"MM\x00*"),), "TIFF"), (((0, b"\x00\x00\x01\x00"),), "ICO"),
    (((0, b"\x00\x00\x00\x0cjP  "),), "JPEG 2000"), (((0, b"\xff\x0a"),), "JPEG XL"),
    (((0, b"8BPS"),), "PSD"), (((0, b"%PDF"),), "PDF"),
    (((0, b"RIFF"), (8, b"WEBP")), "WebP"), (((4, b"ftyp"),), "HEIF/AVIF/MP4 family"),
)
# CMYK / YCCK JPEGs: 4 components in the frame header (Pillow's mode "CMYK").
CMYK_COMPONENTS = 4


def sniff_format(data: bytes) -> str:
    """"JPEG" or "PNG", else Rejected: unsupported_format for a format of OTHER_FORMATS,
    undecodable_image for anything else."""
    if data.startswith(JPEG_SIGNATURE):
        return "JPEG"
    if data.startswith(PNG_SIGNATURE):
        return "PNG"
    for parts, name in OTHER_FORMATS:
        if all(data[offset:offset + len(magic)] == magic for offset, magic in parts):
            raise Rejected("unsupported_format", f"{name} image; only JPEG and PNG are accepted")
    raise Rejected("undecodable_image", f"not a JPEG or PNG file (starts with {data[:8]!r})")


def inspect_image(data: bytes, options: IngestOptions) -> ImageInfo:
    """Checks format, declared size (before decoding: decompression bombs) and a full decode."""
    if not data:
        raise Rejected("empty_file", "the image file is empty (0 bytes)")
    fmt = sniff_format(data)
    with warnings.catch_warnings():
        # Our own pixel limit is checked below, before any pixel is decoded.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=[fmt])
        except Image.DecompressionBombError as e:
            raise Rejected("image_too_large", f"declared size is a decompression bomb: {e}")
        except Exception as e:  # Pillow raises several types for corrupt headers
            if "truncated" in str(e).lower():
                raise Rejected("truncated_image", f"{fmt} file ends inside its header: {e}")
            raise Rejected("undecodable_image", f"{fmt} header cannot be read: {e}")
        width, height = image.size
        if width <= 0 or height <= 0:
            raise Rejected("undecodable_image", f"{fmt} declares an empty {width}x{height} image")
        if width * height > options.max_image_pixels:
            raise Rejected("image_too_large",
                           f"{width}x{height} = {width * height} pixels exceeds the limit of "
                           f"{options.max_image_pixels} (decompression-bomb guard)")
        if fmt == "JPEG":
            if image.mode not in ("L", "RGB"):
                raise Rejected("unsupported_color_mode", f"{image.mode} JPEG; convert it to RGB "
                                                         "(image_raw keeps the file's bytes)")
            # Decode at 1/8 scale: the whole entropy-coded stream is still read (truncation and
            # corruption are still found), but the inverse DCT and colour work shrink.
            image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
        try:
            image.load()
        except OSError as e:
            message = str(e)
            if "truncated" in message or "broken data stream" in message:
                raise Rejected("truncated_image", f"{fmt} data ends early: {message}")
            raise Rejected("undecodable_image", f"{fmt} data cannot be decoded: {message}")
        except Exception as e:
            raise Rejected("undecodable_image", f"{fmt} data cannot be decoded: {e}")
        return ImageInfo(format=fmt, width=width, height=height, mode=image.mode)


def join_root(root: str, key: str) -> str:
    """The image's path: root and key joined with '/', for local paths and URIs alike."""
    return root.rstrip("/") + "/" + key


@functools.lru_cache(maxsize=4096)
def _real_directory(directory: str) -> str:
    return os.path.realpath(directory)


def check_local_containment(root: str, path: str, key: str, real_root: str = None) -> None:
    """A local key (already free of '..') may still point outside the root through a symlink.

    `real_root`: os.path.realpath(root), when the caller has it already (it is the same for
    every record)."""
    real_root = real_root or os.path.realpath(root)
    if os.path.islink(path):
        real_path = os.path.realpath(path)
    else:   # images share folders: resolve each folder once
        real_path = os.path.join(_real_directory(os.path.dirname(path)), os.path.basename(path))
    if real_path != real_root and not real_path.startswith(real_root.rstrip(os.sep) + os.sep):
        raise Rejected("path_escape", f"key {key!r} resolves (through a symlink) to {real_path}, "
                                      f"outside the image root {real_root}")


def is_local_path(path: str) -> bool:
    return "://" not in path


_FILE_KINDS = ((stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISSOCK, "socket"),
               (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"))


def check_regular_file(path: str, key: str) -> None:
    """A local image must be a regular file, found with os.stat (which never blocks) before it is
    opened: opening a named pipe waits for a writer forever, a device may never end. Symlinks are
    followed (containment is checked before). A directory is a `missing_file`, as before."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise Rejected("missing_file", f"no image file at {path}")
    except OSError as e:
        raise Rejected("read_error", f"{path} cannot be read: {type(e).__name__}: {e}")
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise Rejected("missing_file", f"no image file at {path} (it is a directory)")
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "special file")
    raise Rejected("not_a_regular_file", f"key {key!r} is a {kind}, not a regular file; it is not "
                                         f"opened (reading it could block forever)")


def read_local_file(path: str, max_bytes: int) -> bytes:
    """Up to max_bytes + 1 bytes of a local file (one more than the limit: the caller sees an
    oversized file). The `read` default of `check_record`."""
    try:
        with open(path, "rb") as f:
            return f.read(max_bytes + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise Rejected("missing_file", f"no image file at {path}")
    except OSError as e:
        raise Rejected("read_error", f"{path} cannot be read: {type(e).__name__}: {e}")


@dataclass(frozen=True)
class CheckedRecord:
    record: FaceRecord    # label already shifted by the label offset
    data: bytes           # the image file's bytes, unchanged
    info: ImageInfo


def check_record(image_root: str, key: Any, value: Any, options: IngestOptions, *,
                 local: Optional[bool] = None, real_root: Optional[str] = None,
                 label_offset: int = 0,
                 read: Callable[[str, int], bytes] = read_local_file) -> CheckedRecord:
    """The one per-record check chain (ingest and the tools): key, fields, containment and
    regular file (local roots only), bytes limit, image, box. Raises Rejected.

    `local`: whether the root is a local directory (default: not a URL); only local roots get the
    symlink and regular-file checks, which need the operating system's view of the file.
    `read(path, max_bytes)`: returns at most max_bytes + 1 bytes or raises Rejected
    (missing_file / read_error); ingest passes one reading through Beam FileSystems.
    `real_root`: os.path.realpath(image_root), when the caller has it already."""
    check_key(key)
    record = check_fields(key, value)
    if label_offset:
        record = replace(record, label=record.label + label_offset)
    path = join_root(image_root, key)
    if is_local_path(image_root) if local is None else local:
        check_local_containment(image_root, path, key, real_root)
        check_regular_file(path, key)
    data = read(path, options.max_image_bytes)
    if len(data) > options.max_image_bytes:
        raise Rejected("image_too_large", f"{path} is larger than the {options.max_image_bytes}-byte "
                                          f"limit")
    info = inspect_image(data, options)
    check_box_inside(record, info.width, info.height, options.box_tolerance)
    return CheckedRecord(record, data, info)


def build_example(record: FaceRecord, data: bytes, info: ImageInfo) -> bytes:
    """The serialized Example of schema/schema.pbtxt."""
    return encode_example({
        features.IMAGE_RAW: data, features.LABEL: record.label, features.X1: record.x1,
        features.Y1: record.y1, features.X2: record.x2, features.Y2: record.y2,
        features.IMAGE_HEIGHT: info.height, features.IMAGE_WIDTH: info.width,
        features.GROUP: record.group.encode("utf-8"), features.PATH: record.key.encode("utf-8"),
        **({features.LANDMARKS: list(record.landmarks)} if record.landmarks is not None else {})})

