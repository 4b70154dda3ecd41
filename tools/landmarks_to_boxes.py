"""Turns public face data sets' 5-point landmark files into the pipeline's face list (the original's
`generate_bbox` step).

    python -m tools.landmarks_to_boxes rfw --landmarks African_lmk.txt \
        --landmarks Asian_lmk.txt --image-root RFW/test/data --out rfw.json [--clip]
    python -m tools.landmarks_to_boxes vggface2 --landmarks loose_landmark_train.csv \
        [--boxes loose_bb_train.csv] --image-root VGGFace2/train --out vggface2.json
    python -m tools.landmarks_to_boxes trillion --landmarks msra_lmk --image-root glint \
        --out msra.json

Output: `{"<key>": {"label": 0, "x1": .., "y1": .., "x2": .., "y2": .., "landmarks": [[x, y] x 5]},
...}` (README "Input format"): keys are paths relative to the image root, sorted; labels 0..N-1 are
given to the identities in sorted order of their name; the box is left, top, right, bottom in
integer pixels, right/bottom exclusive; the five points are the file's, unrounded (the pretrained
network's aligned crop uses them; the networks trained here crop by the box). The list is written
atomically (temp file + rename). Every data line ends up either in the list or in the rejected
lines (`<out>.rejected.jsonl`, `{"kind", "file", "line", "reason", "detail", "text"}`; the first few
are printed); the CLI exits 2 when more than --max-bad-fraction of the landmark lines were rejected
(the list is still written), 1 when an input file is unusable as a whole (missing, wrong header,
race not known).

Input layouts. Landmarks are always five (x, y) points in image pixels, in the order left eye, right
eye, nose tip, left mouth corner, right mouth corner, written x1 y1 x2 y2 ... x5 y5 (interleaved).

* rfw: `<race>_lmk.txt` (RFW ships `test/txts/<race>/<race>_lmk.txt` next to `test/data/<race>/
  <person>/<person>_NNNN.jpg`, 400x400 loose crops). One image per line, 12 fields separated by tabs
  or spaces: path, an integer label, 10 coordinates. Learned from bob.bio.face's RFW database
  (bob/bio/face/database/rfw.py, `_fetch_landmarks`: tab-separated, path in field 0, first eye in
  fields 2-3) and from a third-party RFW loader (found by searching public code, repository not
  named) that checks exactly 12 fields, an integer label equal to the one in `<race>_images.txt`,
  and names the coordinates left_eye_x, left_eye_y, ..., right_mouth_y; RFW's own README was not
  available, so the 12-field layout is enforced strictly. The path's leading `/`, `./` and any
  folders before the race folder (e.g. `test/data/`) are dropped; the race folder is added when
  missing, and the person folder too when the path is a bare `<person>_NNNN.jpg`. Key:
  `<race>/<person>/<file>` relative to `test/data`; group = race; identity = person (the same
  person listed under two races, which RFW has a dozen times, keeps one label). The race is taken
  from the file name `<race>_lmk.txt` (or `<race>_lmk`), or from --group for a single file.
* vggface2: `loose_landmark_<split>.csv`, a header `NAME_ID,P1X,P1Y,P2X,P2Y,P3X,P3Y,P4X,P4Y,P5X,P5Y`
  then rows like `"n000001/0001_01",75.81253,110.2077,...`; optional `loose_bb_<split>.csv`, header
  `NAME_ID,X,Y,W,H`, rows like `"n000001/0001_01",60,60,79,109` (MTCNN detections in the loose
  crops). Learned from Graviti's tensorbay-python-sdk loader (tensorbay/opendataset/VGGFace2/
  loader.py) and ox-vgg/vgg_face2 (README, issues #10 and #12). The point order P1..P5 is not
  spelled out there; it is assumed to be MTCNN's (the order above). The box formula below only needs
  points 1-2 to be the eyes and 4-5 the mouth corners. With --boxes, a face's box is the box file's
  (x1 = X, y1 = Y, x2 = X + W, y2 = Y + H) and its landmarks are only validated; without it the box
  is derived from the landmarks. Key: `NAME_ID + ".jpg"`, relative to the split folder (`train/`);
  identity = the `n000001` part. The group is the key's first component, which is the identity
  here: VGGFace2 has no demographic groups. Pass --key-prefix train with the image root one level
  up to make the split the group instead (keys stay real relative paths: `train/n000001/...`).
* trillion: DeepGlint's Trillion Pairs training lists `msra_lmk` (MS-Celeb-1M-v1c, 86,876
  identities) and `celebrity_lmk` (Asian-Celeb, 93,979 identities). One image per line, 12 fields
  separated by spaces: path, an integer label, 10 coordinates. Learned from deepinsight/insightface
  src/data/glint2lst.py (splits on ' ', asserts 12 fields for training lists, reshapes the last 10
  as (5, 2) points) and the data set's README as quoted in deepinsight/insightface issues #256 and
  #1977 (label 0..86,875; "(x,y) is the coordinate of a key point on the aligned images"; left eye,
  right eye, nose tip, mouth left, mouth right). Those sources do not show what the path looks like
  (which folders it starts with), so it is taken as written (leading `/`, `./` dropped), relative
  to the folder the list refers to; identity = the folder that holds the image. The images are
  said (one user comment, not the README) to be 400x400 loose crops. The test set's 11-field lines
  (no label, no identity folders) are rejected as wrong_value_count. If the paths do not start
  with a source folder, --key-prefix msra (or celebrity) makes the source the group.

Box from landmarks (`box_from_landmarks`), in pixels: e = midpoint of the eyes, m = midpoint of the
mouth corners, D = max(|right eye - left eye|, |m - e|) (the larger one survives yaw and pitch
foreshortening), centre c = e + 0.25 (m - e), square side 3.0 D. In units of the eye-to-mouth
distance the box spans 1.25 above the eyes to 1.75 below them: forehead to chin. The factors were
checked against VGGFace2's MTCNN boxes in the three sample rows tensorbay quotes (eyes at 0.42-0.44
of the box height from the top, height 3.3-3.9 inter-ocular distances; here 0.42 and about 3.5 for
a frontal face, whose eye-to-mouth distance is about 1.15 inter-ocular distances) and against the
standard 112x112 ArcFace alignment template (its points give (-5.1, 0.7, 117.0, 122.8): the same
crop, 9 % larger and 6 px lower). MTCNN boxes are narrower (2.4-2.8 inter-ocular distances); this
box is square because the pipeline resizes every crop to a square (models/preprocessing.py), so
the face stays undistorted. The nose tip is validated but not used: it moves the most with yaw.
Coordinates are rounded half up (floor(v + 0.5)).

With --image-root every image's header is read (Pillow, no decoding): a missing or unreadable image
is rejected. With --clip the box is then clipped to the image (rejected if nothing is left);
without it a box exceeding the image by more than the ingest's tolerance (2 % of the side) is
rejected as the ingest would.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from PIL import Image

from core import records as ingest_records

FORMATS = ("rfw", "vggface2", "trillion")

# Stable reason codes of rejected lines.
REASONS: Dict[str, str] = {
    "malformed_line": "blank, not UTF-8, not parseable CSV, or a path without an identity folder",
    "wrong_value_count": "not the number of fields the format has",
    "non_numeric_value": "a coordinate is not a finite decimal number, or a label not an integer",
    "bad_path": "the ingest would reject the key (absolute, '..', backslash, too long, ...)",
    "empty_box": "degenerate landmarks or box (zero width or height), or nothing left after clip",
    "duplicate_path": "the same image is listed more than once (every occurrence is rejected)",
    "missing_box": "--boxes was given but has no usable box for this face",
    "unmatched_box": "a line of the box file for a face that has no landmark line",
    "missing_image": "--image-root was given and there is no file at the key",
    "path_escape": "the key is a symlink leading outside --image-root",
    "unreadable_image": "the image's header cannot be read, or it is a named pipe, socket or device",
    "box_outside_image": "the box exceeds the image by more than the ingest's tolerance",
    "landmarks_outside_image": "a landmark lies outside the image by more than the ingest's tolerance",
}

# Box geometry, see the module docstring.
BOX_SIDE_FACTOR = 3.0        # side = factor * max(inter-ocular, eye-to-mouth distance)
BOX_CENTRE_POSITION = 0.25   # centre = eyes + position * (mouth - eyes)

VGGFACE2_LANDMARK_HEADER = ["NAME_ID", "P1X", "P1Y", "P2X", "P2Y", "P3X", "P3Y", "P4X", "P4Y",
                            "P5X", "P5Y"]
VGGFACE2_BOX_HEADER = ["NAME_ID", "X", "Y", "W", "H"]
# Python's float() also takes "nan", "inf", "1_000" and surrounding blanks; a data file should not.
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"\d+")
_RFW_FILE_NAME = re.compile(r"(?P<identity>.+)_\d{4}\.[A-Za-z]+")
_RFW_LIST_NAME = re.compile(r"(?P<race>[^/\\]+?)_lmk(?:\.txt)?")
_TEXT_LIMIT = 300            # characters of a rejected line kept in the report
_PRINTED_REJECTIONS = 20

Box = Tuple[float, float, float, float]
IntBox = Tuple[int, int, int, int]


class LandmarkFormatError(ValueError):
    """An input file that cannot be converted at all (names the file and, if any, the line)."""


@dataclass
class _Face:
    key: str
    identity: str
    box: IntBox
    file: str
    line: int
    text: str
    box_name: Optional[str] = None    # vggface2 with --boxes: the NAME_ID whose box line it uses
    landmarks: Optional[List[List[float]]] = None    # the five (x, y) points of the line


def box_from_landmarks(points: Sequence[Sequence[float]]) -> Box:
    """(x1, y1, x2, y2) floats of the square face box of five (x, y) points (module docstring)."""
    if len(points) != 5 or any(len(point) != 2 for point in points):
        raise ValueError(f"expected five (x, y) points, got {points!r}")
    (lx, ly), (rx, ry), _nose, (mlx, mly), (mrx, mry) = [(float(x), float(y)) for x, y in points]
    eyes_x, eyes_y = (lx + rx) / 2, (ly + ry) / 2
    mouth_x, mouth_y = (mlx + mrx) / 2, (mly + mry) / 2
    scale = max(math.hypot(rx - lx, ry - ly), math.hypot(mouth_x - eyes_x, mouth_y - eyes_y))
    half = BOX_SIDE_FACTOR * scale / 2
    centre_x = eyes_x + BOX_CENTRE_POSITION * (mouth_x - eyes_x)
    centre_y = eyes_y + BOX_CENTRE_POSITION * (mouth_y - eyes_y)
    return centre_x - half, centre_y - half, centre_x + half, centre_y + half


def round_box(box: Box) -> IntBox:
    # Half up rather than Python's round-half-even: the same rule for every coordinate and sign.
    x1, y1, x2, y2 = (math.floor(value + 0.5) for value in box)
    return x1, y1, x2, y2


class _LineError(Exception):
    def __init__(self, reason: str, detail: str):
        assert reason in REASONS, reason
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _rejection(kind: str, file: str, line: int, text: str, reason: str, detail: str) -> dict:
    return {"kind": kind, "file": file, "line": line, "reason": reason, "detail": detail,
            "text": text[:_TEXT_LIMIT]}


def _numbers(fields: Sequence[str], what: str) -> List[float]:
    values = []
    for index, field in enumerate(fields):
        field = field.strip()
        if not _DECIMAL.fullmatch(field):
            raise _LineError("non_numeric_value", f"{what} {index + 1} is {field!r}, not a number")
        value = float(field)
        if not math.isfinite(value):   # "1e999"
            raise _LineError("non_numeric_value", f"{what} {index + 1} is {field!r}, not finite")
        values.append(value)
    return values


def _points(coordinates: List[float]) -> List[List[float]]:
    return [coordinates[i:i + 2] for i in range(0, 10, 2)]


def _landmark_box(points: List[List[float]]) -> IntBox:
    box = round_box(box_from_landmarks(points))
    if box[0] >= box[2] or box[1] >= box[3]:
        raise _LineError("empty_box", f"the landmarks give an empty box {box} (points {points})")
    return box


def _label_field(field: str) -> None:
    # The file's own label is not used (labels are re-assigned by identity name), only validated:
    # a non-integer there means the columns are not what this parser expects.
    if not _INTEGER.fullmatch(field):
        raise _LineError("non_numeric_value", f"the label field is {field!r}, not an integer")


def _relative_parts(path: str) -> List[str]:
    """The path's components without a leading '/' or './'; '.', '..' and empty parts are errors."""
    while path.startswith("./") or path.startswith("/"):
        path = path[2:] if path.startswith("./") else path[1:]
    parts = path.split("/")
    if not path or any(part in ("", ".", "..") for part in parts):
        raise _LineError("bad_path", f"path {path!r} has an empty, '.' or '..' component")
    return parts


def _checked_key(key: str) -> str:
    try:
        return ingest_records.check_key(key)
    except ingest_records.Rejected as e:
        raise _LineError("bad_path", e.detail)


def _read_lines(path: str) -> Iterator[Tuple[int, Optional[str], str]]:
    """(line number, text or None when not UTF-8, printable text), without line endings."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            raw = raw.rstrip(b"\r\n")
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):   # a BOM from Windows editors
                raw = raw[3:]
            try:
                yield number, raw.decode("utf-8"), raw.decode("utf-8", "replace")
            except UnicodeDecodeError:
                yield number, None, raw.decode("utf-8", "replace")


def _parse_file(path: str, parse_line, header: Optional[List[str]], kind: str,
                rejected: List[dict]) -> Iterator[Tuple[int, str, object]]:
    """Runs parse_line(text) on every data line; failures go to `rejected`."""
    data_lines = 0
    for number, text, printable in _read_lines(path):
        if header is not None and number == 1:
            try:
                fields = next(csv.reader([text or ""]), [])
            except csv.Error:
                fields = []
            if [field.strip() for field in fields] != header:
                raise LandmarkFormatError(f"{path}:1: expected the header {','.join(header)}, "
                                          f"got {printable[:200]!r}")
            continue
        data_lines += 1
        try:
            if text is None:
                raise _LineError("malformed_line", "the line is not valid UTF-8")
            if not text.strip():
                raise _LineError("malformed_line", "blank line")
            yield number, printable, parse_line(text)
        except _LineError as e:
            rejected.append(_rejection(kind, path, number, printable, e.reason, e.detail))
    if not data_lines:
        raise LandmarkFormatError(f"{path}: no data lines" + (
            f" (expected the header {','.join(header)} and one line per face)" if header else ""))


def _whitespace_fields(text: str, count: int, layout: str) -> List[str]:
    fields = text.split()
    if len(fields) != count:
        raise _LineError("wrong_value_count", f"{len(fields)} fields, expected {count} ({layout})")
    return fields


def _csv_fields(text: str, count: int, layout: str) -> List[str]:
    try:
        fields = next(csv.reader([text]))
    except csv.Error as e:
        raise _LineError("malformed_line", f"not a CSV row: {e}")
    if len(fields) != count:
        raise _LineError("wrong_value_count", f"{len(fields)} fields, expected {count} ({layout})")
    return fields


def _join_key(prefix: str, parts: List[str]) -> str:
    return _checked_key("/".join(([prefix] if prefix else []) + parts))


def _rfw_race(path: str, group: Optional[str]) -> str:
    if group:
        return group
    match = _RFW_LIST_NAME.fullmatch(os.path.basename(path))
    if not match:
        raise LandmarkFormatError(f"{path}: cannot tell the race from the file name (expected "
                                  "<race>_lmk.txt); pass --group")
    return match.group("race")


def _path_label_landmarks(text: str) -> Tuple[str, List[str], Tuple[IntBox, List[List[float]]]]:
    """A "path label x1 y1 ... x5 y5" line (RFW, Trillion Pairs): (path, its parts, (box, points))."""
    fields = _whitespace_fields(text, 12, "path, label, 10 landmark coordinates")
    _label_field(fields[1])
    points = _points(_numbers(fields[2:], "coordinate"))
    return fields[0], _relative_parts(fields[0]), (_landmark_box(points), points)


def _rfw_faces(path: str, race: str, prefix: str, rejected: List[dict]) -> Iterator[_Face]:
    def parse(text: str) -> Tuple[str, str, Tuple[IntBox, List[List[float]]]]:
        image_path, parts, box = _path_label_landmarks(text)
        # Keep the path from the race folder on (drops e.g. "test/data/"), or add the race folder.
        parts = parts[parts.index(race):] if race in parts else [race] + parts
        if len(parts) < 2:
            raise _LineError("malformed_line", f"path {image_path!r} names no image")
        if len(parts) == 2:   # "<race>/<person>_0003.jpg": RFW stores it in the person's folder
            match = _RFW_FILE_NAME.fullmatch(parts[1])
            if not match:
                raise _LineError("malformed_line", f"no person folder in {image_path!r} and the "
                                                   "file name is not <person>_NNNN.jpg")
            parts.insert(1, match.group("identity"))
        return _join_key(prefix, parts), parts[-2], box

    for number, text, (key, identity, (box, points)) in _parse_file(path, parse, None, "landmarks",
                                                                    rejected):
        yield _Face(key, identity, box, path, number, text, landmarks=points)


def _trillion_faces(path: str, prefix: str, rejected: List[dict]) -> Iterator[_Face]:
    def parse(text: str) -> Tuple[str, str, Tuple[IntBox, List[List[float]]]]:
        image_path, parts, box = _path_label_landmarks(text)
        if len(parts) < 2:
            raise _LineError("malformed_line", f"path {image_path!r} has no identity folder")
        return _join_key(prefix, parts), parts[-2], box

    for number, text, (key, identity, (box, points)) in _parse_file(path, parse, None, "landmarks",
                                                                    rejected):
        yield _Face(key, identity, box, path, number, text, landmarks=points)


def _vggface2_name_parts(name_id: str) -> List[str]:
    parts = _relative_parts(name_id.strip())
    if len(parts) != 2:
        raise _LineError("malformed_line", f"NAME_ID {name_id!r} is not <identity>/<image>")
    if parts[1].lower().endswith((".jpg", ".jpeg", ".png")):
        raise _LineError("bad_path", f"NAME_ID {name_id!r} has an extension; VGGFace2's have none")
    return parts


@dataclass
class _BoxLine:
    line: int
    text: str
    box: IntBox


def _vggface2_boxes(path: str, rejected: List[dict]) -> Dict[str, Union[_BoxLine, str]]:
    """NAME_ID -> its box line, or NAME_ID -> why there is no usable box for it."""
    layout = ",".join(VGGFACE2_BOX_HEADER)
    unusable: Dict[str, str] = {}

    def parse(text: str) -> Tuple[str, IntBox]:
        fields = _csv_fields(text, 5, layout)
        name = "/".join(_vggface2_name_parts(fields[0]))
        try:
            x, y, width, height = _numbers(fields[1:], "value")
            box = round_box((x, y, x + width, y + height))
            if box[0] >= box[2] or box[1] >= box[3]:
                raise _LineError("empty_box", f"W={width} H={height} gives an empty box")
        except _LineError as e:
            unusable.setdefault(name, f"the box line of {name} in {path} was rejected "
                                      f"({e.reason}: {e.detail})")
            raise
        return name, box

    lines_by_name: Dict[str, List[_BoxLine]] = {}
    for number, text, (name, box) in _parse_file(path, parse, VGGFACE2_BOX_HEADER, "boxes",
                                                 rejected):
        lines_by_name.setdefault(name, []).append(_BoxLine(number, text, box))
    boxes: Dict[str, Union[_BoxLine, str]] = dict(unusable)
    for name, lines in lines_by_name.items():
        if len(lines) == 1 and name not in unusable:
            boxes[name] = lines[0]
            continue
        # Two boxes for one face (or a good and a rejected line): which one is right is unknown.
        good = ", ".join(str(line.line) for line in lines)
        detail = (f"{name} has more than one box line in {path} (lines {good}"
                  + (" and rejected ones)" if name in unusable else ")"))
        for line in lines:
            rejected.append(_rejection("boxes", path, line.line, line.text, "duplicate_path",
                                       detail))
        boxes[name] = detail
    return boxes


def _vggface2_faces(path: str, boxes: Optional[Dict[str, Union[_BoxLine, str]]], prefix: str,
                    rejected: List[dict]) -> Iterator[_Face]:
    layout = ",".join(VGGFACE2_LANDMARK_HEADER)

    def parse(text: str) -> Tuple[str, str, IntBox, Optional[str], List[List[float]]]:
        fields = _csv_fields(text, 11, layout)
        parts = _vggface2_name_parts(fields[0])
        name = "/".join(parts)
        points = _points(_numbers(fields[1:], "coordinate"))
        if boxes is None:
            box, box_name = _landmark_box(points), None
        else:
            found = boxes.get(name)
            if found is None:
                raise _LineError("missing_box", f"{name} is not in the box file")
            if isinstance(found, str):
                raise _LineError("missing_box", found)
            box, box_name = found.box, name
        return _join_key(prefix, [parts[0], parts[1] + ".jpg"]), parts[0], box, box_name, points

    for number, text, (key, identity, box, box_name, points) in _parse_file(
            path, parse, VGGFACE2_LANDMARK_HEADER, "landmarks", rejected):
        yield _Face(key, identity, box, path, number, text, box_name, points)


def _unused_box_lines(boxes: Dict[str, Union[_BoxLine, str]], kept: List[_Face],
                      boxes_path: str) -> List[dict]:
    """Usable box lines whose face is not in the output, so that every box line is accounted for."""
    used = {face.box_name for face in kept}
    return [_rejection("boxes", boxes_path, found.line, found.text, "unmatched_box",
                       f"{name}: no landmark line, or its landmark line was rejected")
            for name, found in boxes.items() if isinstance(found, _BoxLine) and name not in used]


def _check_image(face: _Face, image_root: str, clip: bool) -> IntBox:
    path = os.path.join(image_root, face.key)
    try:   # the key passed check_key; a symlink may still lead outside the root
        ingest_records.check_local_containment(image_root, path, face.key)
    except ingest_records.Rejected as e:
        raise _LineError("path_escape", e.detail)
    try:   # ingest's own test: only a regular file is opened (a named pipe would block)
        ingest_records.check_regular_file(path, face.key)
    except ingest_records.Rejected as e:
        raise _LineError("missing_image" if e.reason == "missing_file" else "unreadable_image",
                         e.detail)
    try:
        with Image.open(path) as image:    # reads the header only
            width, height = image.size
    except Exception as e:   # Pillow raises several types for unreadable files
        raise _LineError("unreadable_image", f"{path}: {e}")
    x1, y1, x2, y2 = face.box
    if clip:
        box = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
        if box[0] >= box[2] or box[1] >= box[3]:
            raise _LineError("empty_box", f"box {face.box} lies outside the {width}x{height} image")
    else:
        box = face.box
        record = ingest_records.FaceRecord(face.key, 0, x1, y1, x2, y2)
        try:
            ingest_records.check_box_inside(record, width, height,
                                            ingest_records.IngestOptions().box_tolerance)
        except ingest_records.Rejected as e:
            raise _LineError("box_outside_image", e.detail + "; --clip clips boxes to the image")
    if face.landmarks is not None:   # never clipped: moving a point would move the aligned crop
        inside = ingest_records.FaceRecord(face.key, 0, 0, 0, width, height,
                                           ingest_records.check_landmarks(face.landmarks))
        try:
            ingest_records.check_box_inside(inside, width, height,
                                            ingest_records.IngestOptions().box_tolerance)
        except ingest_records.Rejected as e:
            raise _LineError("landmarks_outside_image", e.detail)
    return box


def _normalised_prefix(key_prefix: Optional[str]) -> str:
    if not key_prefix:
        return ""
    prefix = key_prefix.strip("/")
    try:
        _checked_key(prefix)
    except _LineError as e:
        raise LandmarkFormatError(f"--key-prefix {key_prefix!r}: {e.detail}")
    return prefix


def convert(fmt: str, landmarks_path: Union[str, Sequence[str]], boxes_path: Optional[str] = None,
            image_root: Optional[str] = None, clip: bool = False, group: Optional[str] = None,
            key_prefix: Optional[str] = None) -> Tuple[Dict[str, dict], List[dict]]:
    """(records by key, sorted; rejected lines) for one or more landmark files of format `fmt`.

    Raises LandmarkFormatError (or OSError) when an input file cannot be used at all.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    paths = [landmarks_path] if isinstance(landmarks_path, str) else list(landmarks_path)
    if not paths:
        raise ValueError("no landmark file given")
    if boxes_path and fmt != "vggface2":
        raise ValueError("a box file exists only for vggface2")
    if group and fmt != "rfw":
        raise ValueError("group names the race of an RFW file; other formats keep the real paths "
                         "(see key_prefix)")
    if group and len(paths) > 1:
        raise ValueError("group names the race of a single RFW file; name several files "
                         "<race>_lmk.txt instead")
    if group and ("/" in group or not group.strip()):
        raise ValueError(f"group {group!r} must be one folder name")
    if clip and not image_root:
        raise ValueError("clipping needs the image root to read the image sizes")
    prefix = _normalised_prefix(key_prefix)

    rejected: List[dict] = []
    boxes = _vggface2_boxes(boxes_path, rejected) if boxes_path else None
    faces: List[_Face] = []
    for path in paths:
        if fmt == "rfw":
            faces.extend(_rfw_faces(path, _rfw_race(path, group), prefix, rejected))
        elif fmt == "vggface2":
            faces.extend(_vggface2_faces(path, boxes, prefix, rejected))
        else:
            faces.extend(_trillion_faces(path, prefix, rejected))

    # Which of two lines for one image is right is unknown: reject all of them (as the ingest does).
    lines_by_key: Dict[str, List[_Face]] = {}
    for face in faces:
        lines_by_key.setdefault(face.key, []).append(face)
    unique: List[_Face] = []
    for key, same in lines_by_key.items():
        if len(same) == 1:
            unique.append(same[0])
            continue
        where = ", ".join(f"{os.path.basename(face.file)}:{face.line}" for face in same)
        for face in same:
            rejected.append(_rejection("landmarks", face.file, face.line, face.text,
                                       "duplicate_path", f"{key} is listed {len(same)} times "
                                                         f"({where})"))

    kept: List[_Face] = []
    for face in unique:
        if image_root:
            try:
                face.box = _check_image(face, image_root, clip)
            except _LineError as e:
                rejected.append(_rejection("landmarks", face.file, face.line, face.text, e.reason,
                                           e.detail))
                continue
        kept.append(face)
    if boxes is not None:
        rejected.extend(_unused_box_lines(boxes, kept, boxes_path))

    labels = {identity: label
              for label, identity in enumerate(sorted({face.identity for face in kept}))}
    records = {}
    for face in sorted(kept, key=lambda face: face.key):
        x1, y1, x2, y2 = face.box
        records[face.key] = {"label": labels[face.identity], "x1": x1, "y1": y1, "x2": x2,
                             "y2": y2}
        if face.landmarks is not None:
            records[face.key]["landmarks"] = face.landmarks
    order = {path: index for index, path in enumerate([boxes_path] + paths)}
    rejected.sort(key=lambda entry: (order.get(entry["file"], len(order)), entry["line"]))
    return records, rejected


def _write_atomic(path: str, lines: Iterator[str]) -> None:
    """Writes the lines to a temporary file next to `path`, then renames it: a reader (or a crash)
    never sees a half-written file."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_face_list(path: str, records: Dict[str, dict]) -> None:
    """The original format, one record per line, keys sorted."""
    def lines():
        yield "{\n"
        keys = sorted(records)
        for index, key in enumerate(keys):
            separator = ",\n" if index < len(keys) - 1 else "\n"
            yield f"{json.dumps(key)}: {json.dumps(records[key])}{separator}"
        yield "}\n"
    _write_atomic(path, lines())


def write_rejected(path: str, rejected: List[dict]) -> None:
    _write_atomic(path, (json.dumps(entry, sort_keys=True) + "\n" for entry in rejected))


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m tools.landmarks_to_boxes", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("format", choices=FORMATS)
    parser.add_argument("--landmarks", action="append", required=True, metavar="FILE",
                        help="landmark file; repeat for several (e.g. one per RFW race)")
    parser.add_argument("--boxes", metavar="FILE", help="vggface2: loose_bb_<split>.csv")
    parser.add_argument("--image-root", metavar="DIR",
                        help="folder the keys are relative to; every image's header is read")
    parser.add_argument("--clip", action="store_true", help="clip boxes to the image (needs "
                                                            "--image-root)")
    parser.add_argument("--group", metavar="NAME",
                        help="rfw: the race, when the file is not named <race>_lmk.txt")
    parser.add_argument("--key-prefix", metavar="DIR",
                        help="folder put before every listed path (image root one level up)")
    parser.add_argument("--out", required=True, metavar="FILE", help="face list to write (.json)")
    parser.add_argument("--rejected", metavar="FILE",
                        help="rejected lines as JSON Lines (default: <out>.rejected.jsonl)")
    parser.add_argument("--max-bad-fraction", type=float, default=0.01,
                        help="exit 2 when more than this fraction of landmark lines is rejected")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    rejected_path = args.rejected or args.out + ".rejected.jsonl"
    try:
        records, rejected = convert(args.format, args.landmarks, args.boxes, args.image_root,
                                    args.clip, args.group, args.key_prefix)
    except (LandmarkFormatError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    write_face_list(args.out, records)
    write_rejected(rejected_path, rejected)

    bad_landmark_lines = sum(1 for entry in rejected if entry["kind"] == "landmarks")
    landmark_lines = len(records) + bad_landmark_lines
    bad_fraction = bad_landmark_lines / landmark_lines if landmark_lines else 1.0
    groups = Counter(key.partition("/")[0] for key in records)
    identities = len({record["label"] for record in records.values()})
    print(f"landmark lines: {landmark_lines}, written: {len(records)} faces of {identities} "
          f"identities -> {args.out}")
    print(f"groups: {len(groups)} " + ", ".join(f"{name}={count}"
                                                 for name, count in sorted(groups.items())[:8])
          + (" ..." if len(groups) > 8 else ""))
    print(f"rejected: {bad_landmark_lines} landmark lines ({bad_fraction:.2%}), "
          f"{len(rejected) - bad_landmark_lines} box lines -> {rejected_path}")
    for reason, count in Counter(entry["reason"] for entry in rejected).most_common():
        print(f"  {reason}: {count}")
    for entry in rejected[:_PRINTED_REJECTIONS]:
        print(f"  {entry['file']}:{entry['line']}: {entry['reason']}: {entry['detail']}",
              file=sys.stderr)
    if len(rejected) > _PRINTED_REJECTIONS:
        print(f"  ... {len(rejected) - _PRINTED_REJECTIONS} more in {rejected_path}",
              file=sys.stderr)
    if bad_fraction > args.max_bad_fraction:
        print(f"error: {bad_fraction:.2%} of the landmark lines were rejected, more than "
              f"--max-bad-fraction {args.max_bad_fraction:.2%}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
