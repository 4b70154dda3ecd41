"""VGGFace2's landmark and box files.

The file: `loose_landmark_<split>.csv`, a header `NAME_ID,P1X,P1Y,P2X,P2Y,P3X,P3Y,P4X,P4Y,P5X,P5Y`
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
"""
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple, Union

from core.landmark_files.geometry import IntBox, round_box
from core.landmark_files.lines import (
    Face,
    LineError,
    csv_fields,
    five_points,
    join_key,
    landmark_box,
    numbers,
    parse_file,
    rejection,
    relative_parts,
)

VGGFACE2_LANDMARK_HEADER = ["NAME_ID", "P1X", "P1Y", "P2X", "P2Y", "P3X", "P3Y", "P4X", "P4Y",
                            "P5X", "P5Y"]
VGGFACE2_BOX_HEADER = ["NAME_ID", "X", "Y", "W", "H"]


def _name_parts(name_id: str) -> List[str]:
    parts = relative_parts(name_id.strip())
    if len(parts) != 2:
        raise LineError("malformed_line", f"NAME_ID {name_id!r} is not <identity>/<image>")
    if parts[1].lower().endswith((".jpg", ".jpeg", ".png")):
        raise LineError("bad_path", f"NAME_ID {name_id!r} has an extension; VGGFace2's have none")
    return parts


@dataclass
class BoxLine:
    line: int
    text: str
    box: IntBox


def read_boxes(path: str, rejected: List[dict]) -> Dict[str, Union[BoxLine, str]]:
    """NAME_ID -> its box line, or NAME_ID -> why there is no usable box for it."""
    layout = ",".join(VGGFACE2_BOX_HEADER)
    unusable: Dict[str, str] = {}

    def parse(text: str) -> Tuple[str, IntBox]:
        fields = csv_fields(text, 5, layout)
        name = "/".join(_name_parts(fields[0]))
        try:
            x, y, width, height = numbers(fields[1:], "value")
            box = round_box((x, y, x + width, y + height))
            if box[0] >= box[2] or box[1] >= box[3]:
                raise LineError("empty_box", f"W={width} H={height} gives an empty box")
        except LineError as e:
            unusable.setdefault(name, f"the box line of {name} in {path} was rejected "
                                      f"({e.reason}: {e.detail})")
            raise
        return name, box

    lines_by_name: Dict[str, List[BoxLine]] = {}
    for number, text, (name, box) in parse_file(path, parse, VGGFACE2_BOX_HEADER, "boxes",
                                                 rejected):
        lines_by_name.setdefault(name, []).append(BoxLine(number, text, box))
    boxes: Dict[str, Union[BoxLine, str]] = dict(unusable)
    for name, lines in lines_by_name.items():
        if len(lines) == 1 and name not in unusable:
            boxes[name] = lines[0]
            continue
        # Two boxes for one face (or a good and a rejected line): which one is right is unknown.
        good = ", ".join(str(line.line) for line in lines)
        detail = (f"{name} has more than one box line in {path} (lines {good}"
                  + (" and rejected ones)" if name in unusable else ")"))
        for line in lines:
            rejected.append(rejection("boxes", path, line.line, line.text, "duplicate_path",
                                       detail))
        boxes[name] = detail
    return boxes


def faces(path: str, boxes: Optional[Dict[str, Union[BoxLine, str]]], prefix: str,
                    rejected: List[dict]) -> Iterator[Face]:
    layout = ",".join(VGGFACE2_LANDMARK_HEADER)

    def parse(text: str) -> Tuple[str, str, IntBox, Optional[str], List[List[float]]]:
        fields = csv_fields(text, 11, layout)
        parts = _name_parts(fields[0])
        name = "/".join(parts)
        points = five_points(numbers(fields[1:], "coordinate"))
        if boxes is None:
            box, box_name = landmark_box(points), None
        else:
            found = boxes.get(name)
            if found is None:
                raise LineError("missing_box", f"{name} is not in the box file")
            if isinstance(found, str):
                raise LineError("missing_box", found)
            box, box_name = found.box, name
        return join_key(prefix, [parts[0], parts[1] + ".jpg"]), parts[0], box, box_name, points

    for number, text, (key, identity, box, box_name, points) in parse_file(
            path, parse, VGGFACE2_LANDMARK_HEADER, "landmarks", rejected):
        yield Face(key, identity, box, path, number, text, box_name, points)


def unused_box_lines(boxes: Dict[str, Union[BoxLine, str]], kept: List[Face],
                      boxes_path: str) -> List[dict]:
    """Usable box lines whose face is not in the output, so that every box line is accounted for."""
    used = {face.box_name for face in kept}
    return [rejection("boxes", boxes_path, found.line, found.text, "unmatched_box",
                       f"{name}: no landmark line, or its landmark line was rejected")
            for name, found in boxes.items() if isinstance(found, BoxLine) and name not in used]
