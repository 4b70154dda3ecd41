"""Public face data sets' 5-point landmark files -> the pipeline's face list (the original's
`generate_bbox` step); the CLI is `tools.landmarks_to_boxes`.

Input layouts. Landmarks are always five (x, y) points in image pixels, in the order left eye, right
eye, nose tip, left mouth corner, right mouth corner, written x1 y1 x2 y2 ... x5 y5 (interleaved).

One module per format (`rfw`, `vggface2`, `trillion`) says where its layout was learned; `lines` holds
what they share, `geometry` the box, `conversion` the whole conversion and the writers.
"""
from core.landmark_files.conversion import FORMATS, convert, write_face_list, write_rejected
from core.landmark_files.geometry import box_from_landmarks, round_box
from core.landmark_files.lines import REASONS, LandmarkFormatError

__all__ = ["FORMATS", "REASONS", "LandmarkFormatError", "box_from_landmarks", "convert", "round_box",
           "write_face_list", "write_rejected"]
