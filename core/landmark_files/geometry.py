"""Face box geometry: the square box of five landmarks.

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
"""
import math
from typing import Sequence, Tuple

# Box geometry, see the module docstring.
BOX_SIDE_FACTOR = 3.0        # side = factor * max(inter-ocular, eye-to-mouth distance)
BOX_CENTRE_POSITION = 0.25   # centre = eyes + position * (mouth - eyes)

Box = Tuple[float, float, float, float]
IntBox = Tuple[int, int, int, int]


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
