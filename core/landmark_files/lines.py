"""What every landmark format shares: reading lines, numbers, paths and keys, and the
rejected-line record (`{"kind", "file", "line", "reason", "detail", "text"}`).

A data line that cannot be used raises `LineError` with one of the stable `REASONS`; `parse_file`
turns it into a rejected line, so every line ends up in the face list or in the rejected lines. A
file that cannot be used at all raises `LandmarkFormatError`.
"""
import csv
import math
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from core import records as ingest_records
from core.landmark_files.geometry import IntBox, box_from_landmarks, round_box

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

# Python's float() also takes "nan", "inf", "1_000" and surrounding blanks; a data file should not.
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"\d+")
TEXT_LIMIT = 300            # characters of a rejected line kept in the report


class LandmarkFormatError(ValueError):
    """An input file that cannot be converted at all (names the file and, if any, the line)."""


@dataclass
class Face:
    key: str
    identity: str
    box: IntBox
    file: str
    line: int
    text: str
    box_name: Optional[str] = None    # vggface2 with --boxes: the NAME_ID whose box line it uses
    landmarks: Optional[List[List[float]]] = None    # the five (x, y) points of the line


class LineError(Exception):
    def __init__(self, reason: str, detail: str):
        assert reason in REASONS, reason
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def rejection(kind: str, file: str, line: int, text: str, reason: str, detail: str) -> dict:
    return {"kind": kind, "file": file, "line": line, "reason": reason, "detail": detail,
            "text": text[:TEXT_LIMIT]}


def numbers(fields: Sequence[str], what: str) -> List[float]:
    values = []
    for index, field in enumerate(fields):
        field = field.strip()
        if not _DECIMAL.fullmatch(field):
            raise LineError("non_numeric_value", f"{what} {index + 1} is {field!r}, not a number")
        value = float(field)
        if not math.isfinite(value):   # "1e999"
            raise LineError("non_numeric_value", f"{what} {index + 1} is {field!r}, not finite")
        values.append(value)
    return values


def five_points(coordinates: List[float]) -> List[List[float]]:
    return [coordinates[i:i + 2] for i in range(0, 10, 2)]


def landmark_box(points: List[List[float]]) -> IntBox:
    box = round_box(box_from_landmarks(points))
    if box[0] >= box[2] or box[1] >= box[3]:
        raise LineError("empty_box", f"the landmarks give an empty box {box} (points {points})")
    return box


def label_field(field: str) -> None:
    # The file's own label is not used (labels are re-assigned by identity name), only validated:
    # a non-integer there means the columns are not what this parser expects.
    if not _INTEGER.fullmatch(field):
        raise LineError("non_numeric_value", f"the label field is {field!r}, not an integer")


def relative_parts(path: str) -> List[str]:
    """The path's components without a leading '/' or './'; '.', '..' and empty parts are errors."""
    while path.startswith("./") or path.startswith("/"):
        path = path[2:] if path.startswith("./") else path[1:]
    parts = path.split("/")
    if not path or any(part in ("", ".", "..") for part in parts):
        raise LineError("bad_path", f"path {path!r} has an empty, '.' or '..' component")
    return parts


def checked_key(key: str) -> str:
    try:
        return ingest_records.check_key(key)
    except ingest_records.Rejected as e:
        raise LineError("bad_path", e.detail)


def read_lines(path: str) -> Iterator[Tuple[int, Optional[str], str]]:
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


def parse_file(path: str, parse_line, header: Optional[List[str]], kind: str,
                rejected: List[dict]) -> Iterator[Tuple[int, str, object]]:
    """Runs parse_line(text) on every data line; failures go to `rejected`."""
    data_lines = 0
    for number, text, printable in read_lines(path):
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
                raise LineError("malformed_line", "the line is not valid UTF-8")
            if not text.strip():
                raise LineError("malformed_line", "blank line")
            yield number, printable, parse_line(text)
        except LineError as e:
            rejected.append(rejection(kind, path, number, printable, e.reason, e.detail))
    if not data_lines:
        raise LandmarkFormatError(f"{path}: no data lines" + (
            f" (expected the header {','.join(header)} and one line per face)" if header else ""))


def whitespace_fields(text: str, count: int, layout: str) -> List[str]:
    fields = text.split()
    if len(fields) != count:
        raise LineError("wrong_value_count", f"{len(fields)} fields, expected {count} ({layout})")
    return fields


def csv_fields(text: str, count: int, layout: str) -> List[str]:
    try:
        fields = next(csv.reader([text]))
    except csv.Error as e:
        raise LineError("malformed_line", f"not a CSV row: {e}")
    if len(fields) != count:
        raise LineError("wrong_value_count", f"{len(fields)} fields, expected {count} ({layout})")
    return fields


def join_key(prefix: str, parts: List[str]) -> str:
    return checked_key("/".join(([prefix] if prefix else []) + parts))


def path_label_landmarks(text: str) -> Tuple[str, List[str], Tuple[IntBox, List[List[float]]]]:
    """A "path label x1 y1 ... x5 y5" line (RFW, Trillion Pairs): (path, its parts, (box, points))."""
    fields = whitespace_fields(text, 12, "path, label, 10 landmark coordinates")
    label_field(fields[1])
    points = five_points(numbers(fields[2:], "coordinate"))
    return fields[0], relative_parts(fields[0]), (landmark_box(points), points)
