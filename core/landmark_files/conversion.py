"""Landmark files -> the face list: `convert` and the writers.

Output: `{"<key>": {"label": 0, "x1": .., "y1": .., "x2": .., "y2": .., "landmarks": [[x, y] x 5]},
...}` (docs/data.md): keys are paths relative to the image root, sorted; labels 0..N-1 are
given to the identities in sorted order of their name; the box is left, top, right, bottom in
integer pixels, right/bottom exclusive; the five points are the file's, unrounded (the pretrained
network's aligned crop uses them; the networks trained here crop by the box). The list is written
atomically (temp file + rename). Every data line ends up either in the list or in the rejected
lines (`<out>.rejected.jsonl`, `{"kind", "file", "line", "reason", "detail", "text"}`; the first few
are printed); the CLI exits 2 when more than --max-bad-fraction of the landmark lines were rejected
(the list is still written), 1 when an input file is unusable as a whole (missing, wrong header,
race not known).

With --image-root every image's header is read (Pillow, no decoding): a missing or unreadable image
is rejected. With --clip the box is then clipped to the image (rejected if nothing is left);
without it a box exceeding the image by more than the ingest's tolerance (2 % of the side) is
rejected as the ingest would.
"""
import json
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from PIL import Image

from core import records as ingest_records
from core.landmark_files import rfw, trillion, vggface2
from core.landmark_files.geometry import IntBox
from core.landmark_files.lines import Face, LandmarkFormatError, LineError, checked_key, rejection

FORMATS = ("rfw", "vggface2", "trillion")


def check_image(face: Face, image_root: str, clip: bool) -> IntBox:
    """The face's box once its image passed the ingest's checks (header only); LineError names why not."""
    path = os.path.join(image_root, face.key)
    try:   # the key passed check_key; a symlink may still lead outside the root
        ingest_records.check_local_containment(image_root, path, face.key)
    except ingest_records.Rejected as e:
        raise LineError("path_escape", e.detail)
    try:   # ingest's own test: only a regular file is opened (a named pipe would block)
        ingest_records.check_regular_file(path, face.key)
    except ingest_records.Rejected as e:
        raise LineError("missing_image" if e.reason == "missing_file" else "unreadable_image",
                         e.detail)
    try:
        with Image.open(path) as image:    # reads the header only
            width, height = image.size
    except Exception as e:   # Pillow raises several types for unreadable files
        raise LineError("unreadable_image", f"{path}: {e}")
    x1, y1, x2, y2 = face.box
    if clip:
        box = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
        if box[0] >= box[2] or box[1] >= box[3]:
            raise LineError("empty_box", f"box {face.box} lies outside the {width}x{height} image")
    else:
        box = face.box
        record = ingest_records.FaceRecord(face.key, 0, x1, y1, x2, y2)
        try:
            ingest_records.check_box_inside(record, width, height,
                                            ingest_records.IngestOptions().box_tolerance)
        except ingest_records.Rejected as e:
            raise LineError("box_outside_image", e.detail + "; --clip clips boxes to the image")
    if face.landmarks is not None:   # never clipped: moving a point would move the aligned crop
        inside = ingest_records.FaceRecord(face.key, 0, 0, 0, width, height,
                                           ingest_records.check_landmarks(face.landmarks))
        try:
            ingest_records.check_box_inside(inside, width, height,
                                            ingest_records.IngestOptions().box_tolerance)
        except ingest_records.Rejected as e:
            raise LineError("landmarks_outside_image", e.detail)
    return box


def _normalised_prefix(key_prefix: Optional[str]) -> str:
    if not key_prefix:
        return ""
    prefix = key_prefix.strip("/")
    try:
        checked_key(prefix)
    except LineError as e:
        raise LandmarkFormatError(f"--key-prefix {key_prefix!r}: {e.detail}")
    return prefix


def _check_arguments(fmt: str, paths: List[str], boxes_path: Optional[str], image_root: Optional[str],
                     clip: bool, group: Optional[str]) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not paths:
        raise ValueError("no landmark file given")
    if boxes_path and fmt != "vggface2":
        raise ValueError("a box file exists only for vggface2")
    if clip and not image_root:
        raise ValueError("clipping needs the image root to read the image sizes")
    if not group:
        return
    if fmt != "rfw":
        raise ValueError("group names the race of an RFW file; other formats keep the real paths "
                         "(see key_prefix)")
    if len(paths) > 1:
        raise ValueError("group names the race of a single RFW file; name several files "
                         "<race>_lmk.txt instead")
    if "/" in group or not group.strip():
        raise ValueError(f"group {group!r} must be one folder name")


def _file_faces(fmt: str, path: str, boxes, prefix: str, group: Optional[str],
                rejected: List[dict]) -> Iterator[Face]:
    if fmt == "rfw":
        return rfw.faces(path, rfw.race(path, group), prefix, rejected)
    if fmt == "vggface2":
        return vggface2.faces(path, boxes, prefix, rejected)
    return trillion.faces(path, prefix, rejected)


def _without_duplicates(faces: List[Face], rejected: List[dict]) -> List[Face]:
    """Which of two lines for one image is right is unknown: all of them are rejected (as the
    ingest does)."""
    lines_by_key: Dict[str, List[Face]] = {}
    for face in faces:
        lines_by_key.setdefault(face.key, []).append(face)
    unique: List[Face] = []
    for key, same in lines_by_key.items():
        if len(same) == 1:
            unique.append(same[0])
            continue
        where = ", ".join(f"{os.path.basename(face.file)}:{face.line}" for face in same)
        for face in same:
            rejected.append(rejection("landmarks", face.file, face.line, face.text,
                                      "duplicate_path", f"{key} is listed {len(same)} times "
                                                        f"({where})"))
    return unique


def _with_images(faces: List[Face], image_root: str, clip: bool, rejected: List[dict]) -> List[Face]:
    """The faces whose image passes `check_image` (its box clipped when asked); the rest rejected."""
    kept: List[Face] = []
    for face in faces:
        try:
            face.box = check_image(face, image_root, clip)
        except LineError as e:
            rejected.append(rejection("landmarks", face.file, face.line, face.text, e.reason,
                                      e.detail))
            continue
        kept.append(face)
    return kept


def _records(kept: List[Face]) -> Dict[str, dict]:
    """Face-list records by key, sorted; labels 0..N-1 by sorted identity name."""
    labels = {identity: label
              for label, identity in enumerate(sorted({face.identity for face in kept}))}
    records = {}
    for face in sorted(kept, key=lambda face: face.key):
        x1, y1, x2, y2 = face.box
        records[face.key] = {"label": labels[face.identity], "x1": x1, "y1": y1, "x2": x2,
                             "y2": y2}
        if face.landmarks is not None:
            records[face.key]["landmarks"] = face.landmarks
    return records


def convert(fmt: str, landmarks_path: Union[str, Sequence[str]], boxes_path: Optional[str] = None,
            image_root: Optional[str] = None, clip: bool = False, group: Optional[str] = None,
            key_prefix: Optional[str] = None) -> Tuple[Dict[str, dict], List[dict]]:
    """(records by key, sorted; rejected lines) for one or more landmark files of format `fmt`.

    Raises LandmarkFormatError (or OSError) when an input file cannot be used at all.
    """
    paths = [landmarks_path] if isinstance(landmarks_path, str) else list(landmarks_path)
    _check_arguments(fmt, paths, boxes_path, image_root, clip, group)
    prefix = _normalised_prefix(key_prefix)

    rejected: List[dict] = []
    boxes = vggface2.read_boxes(boxes_path, rejected) if boxes_path else None
    faces: List[Face] = []
    for path in paths:
        faces.extend(_file_faces(fmt, path, boxes, prefix, group, rejected))
    kept = _without_duplicates(faces, rejected)
    if image_root:
        kept = _with_images(kept, image_root, clip, rejected)
    if boxes is not None:
        rejected.extend(vggface2.unused_box_lines(boxes, kept, boxes_path))
    order = {path: index for index, path in enumerate([boxes_path] + paths)}
    rejected.sort(key=lambda entry: (order.get(entry["file"], len(order)), entry["line"]))
    return _records(kept), rejected


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
