"""RFW's landmark lists.

The file: `<race>_lmk.txt` (RFW ships `test/txts/<race>/<race>_lmk.txt` next to `test/data/<race>/
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
"""
import os
import re
from typing import Iterator, List, Optional, Tuple

from core.landmark_files.geometry import IntBox
from core.landmark_files.lines import (
    Face,
    LandmarkFormatError,
    LineError,
    join_key,
    parse_file,
    path_label_landmarks,
)

_RFW_FILE_NAME = re.compile(r"(?P<identity>.+)_\d{4}\.[A-Za-z]+")
_RFW_LIST_NAME = re.compile(r"(?P<race>[^/\\]+?)_lmk(?:\.txt)?")


def race(path: str, group: Optional[str]) -> str:
    if group:
        return group
    match = _RFW_LIST_NAME.fullmatch(os.path.basename(path))
    if not match:
        raise LandmarkFormatError(f"{path}: cannot tell the race from the file name (expected "
                                  "<race>_lmk.txt); pass --group")
    return match.group("race")


def faces(path: str, race: str, prefix: str, rejected: List[dict]) -> Iterator[Face]:
    def parse(text: str) -> Tuple[str, str, Tuple[IntBox, List[List[float]]]]:
        image_path, parts, box = path_label_landmarks(text)
        # Keep the path from the race folder on (drops e.g. "test/data/"), or add the race folder.
        parts = parts[parts.index(race):] if race in parts else [race] + parts
        if len(parts) < 2:
            raise LineError("malformed_line", f"path {image_path!r} names no image")
        if len(parts) == 2:   # "<race>/<person>_0003.jpg": RFW stores it in the person's folder
            match = _RFW_FILE_NAME.fullmatch(parts[1])
            if not match:
                raise LineError("malformed_line", f"no person folder in {image_path!r} and the "
                                                   "file name is not <person>_NNNN.jpg")
            parts.insert(1, match.group("identity"))
        return join_key(prefix, parts), parts[-2], box

    for number, text, (key, identity, (box, points)) in parse_file(path, parse, None, "landmarks",
                                                                    rejected):
        yield Face(key, identity, box, path, number, text, landmarks=points)
