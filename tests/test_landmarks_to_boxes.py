"""core.landmark_files and its CLI (tools/landmarks_to_boxes): landmark files of RFW, VGGFace2 and
Trillion Pairs -> the face list.

Expected boxes are computed here from the documented formula (eyes' midpoint e, mouth's midpoint m,
square side 3 * max(|right eye - left eye|, |m - e|), centre e + 0.25 (m - e), rounded half up),
either by hand or with NumPy, never taken from the module.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from core import landmark_files as l2b
from core import records as ingest_records
from core.landmark_files import vggface2

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Landmark sets (x1 y1 ... x5 y5: left eye, right eye, nose, left mouth, right mouth), their boxes.
# A: e = (50, 50), m = (50, 74); |eyes| = 20 < |m - e| = 24 -> side 72, centre (50, 56).
A = [40, 50, 60, 50, 50, 60, 42, 74, 58, 74]
BOX_A = (14, 20, 86, 92)
# B: e = (105, 99), m = (105, 109); both distances 10 -> side 30, centre (105, 101.5):
# y1 = 86.5 and y2 = 116.5 round half up to 87 and 117 (round-half-even would give 86 and 116).
B = [100, 99, 110, 99, 105, 104, 100, 109, 110, 109]
BOX_B = (90, 87, 120, 117)
# C: e = (50, 40), m = (50, 60); |eyes| = 60 > |m - e| = 20 -> side 180, centre (50, 45).
C = [20, 40, 80, 40, 50, 50, 40, 60, 60, 60]
BOX_C = (-40, -45, 140, 135)
# D: a tilted face with fractional coordinates; its box comes from NumPy below.
D = [151.3, 180.2, 232.9, 168.6, 190.0, 225.4, 160.7, 262.1, 225.2, 252.9]


def numpy_box(coordinates):
    points = np.asarray(coordinates, dtype=np.float64).reshape(5, 2)
    eyes = points[0:2].mean(axis=0)
    mouth = points[3:5].mean(axis=0)
    side = 3.0 * max(np.linalg.norm(points[1] - points[0]), np.linalg.norm(mouth - eyes))
    centre = eyes + 0.25 * (mouth - eyes)
    corners = np.concatenate([centre - side / 2, centre + side / 2])
    return tuple(int(v) for v in np.floor(corners + 0.5))


BOX_D = numpy_box(D)
BOX_POINTS = {BOX_A: A, BOX_B: B, BOX_C: C, BOX_D: D}


def numbers(coordinates, separator=" "):
    return separator.join(str(value) for value in coordinates)


def record(label, box, coordinates=None):
    """An output record: the box and the five points it came from (found by the box's name when
    not given)."""
    x1, y1, x2, y2 = box
    coordinates = coordinates if coordinates is not None else BOX_POINTS[tuple(box)]
    points = [[float(coordinates[i]), float(coordinates[i + 1])] for i in range(0, 10, 2)]
    return {"label": label, "x1": x1, "y1": y1, "x2": x2, "y2": y2, "landmarks": points}


def summary(rejected):
    return [(entry["kind"], os.path.basename(entry["file"]), entry["line"], entry["reason"])
            for entry in rejected]


def write(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


def assert_ingest_accepts(records):
    assert records
    for key, value in records.items():
        ingest_records.check_key(key)
        ingest_records.check_fields(key, value)


# --- the box formula ------------------------------------------------------------------------------

def test_box_from_landmarks_hand_computed():
    assert l2b.box_from_landmarks(np.reshape(A, (5, 2)).tolist()) == (14.0, 20.0, 86.0, 92.0)
    assert l2b.box_from_landmarks(np.reshape(C, (5, 2)).tolist()) == (-40.0, -45.0, 140.0, 135.0)
    assert l2b.box_from_landmarks(np.reshape(B, (5, 2)).tolist()) == (90.0, 86.5, 120.0, 116.5)
    # Eyes 50 apart on a slant (3-4-5), eye-to-mouth 30: the Euclidean distance sets the side, 150.
    tilted = [(0, 0), (30, 40), (0, 0), (15, 50), (15, 50)]
    assert l2b.box_from_landmarks(tilted) == (-60.0, -47.5, 90.0, 102.5)
    # The nose tip does not move the box.
    moved_nose = np.reshape(A, (5, 2)).tolist()
    moved_nose[2] = [0.0, 500.0]
    assert l2b.box_from_landmarks(moved_nose) == (14.0, 20.0, 86.0, 92.0)


def test_rounding_is_half_up_and_wrong_shapes_raise():
    assert l2b.round_box((-0.5, 0.5, 1.5, 2.5)) == (0, 1, 2, 3)
    assert l2b.round_box((-1.5, 86.5, 116.5, 0.49)) == (-1, 87, 117, 0)
    with pytest.raises(ValueError):
        l2b.box_from_landmarks([(0, 0)] * 4)
    with pytest.raises(ValueError):
        l2b.box_from_landmarks([(0, 0, 0)] * 5)


# --- RFW ------------------------------------------------------------------------------------------

def rfw_files(folder):
    african = write(folder / "African_lmk.txt", [
        "/test/data/African/m.0b/m.0b_0001.jpg\t0\t" + numbers(A, "\t"),    # 1 duplicate of 7
        "m.0a/m.0a_0002.jpg 1 " + numbers(B),                                 # 2 no race folder
        "m.0a_0003.jpg 1 " + numbers(D),                                      # 3 bare file name
        "m.0c/m.0c_0001.jpg 2 1 2 3",                                         # 4 too few
        "m.0c/m.0c_0002.jpg 2 40 50 60 50 50 sixty 42 74 58 74",              # 5 not a number
        "m.0c/m.0c_0003.jpg 2 " + numbers([5] * 10),                          # 6 one point
        "./African/m.0b/m.0b_0001.jpg 0 " + numbers(C),                       # 7 duplicate of 1
        "African/m.0b/m.0b_0002.jpg 0 " + numbers(C),                         # 8
        "",                                                                   # 9 blank
        "m.0c/m.0c_0004.jpg 2 nan 50 60 50 50 60 42 74 58 74",                # 10 nan
        "m.0c/m.0c_0005.jpg x " + numbers(A),                                 # 11 label
        "../m.0c/m.0c_0006.jpg 2 " + numbers(A),                              # 12 leaves the root
    ])
    asian = write(folder / "Asian_lmk.txt", [
        "Asian/m.01/m.01_0001.jpg 0 " + numbers(A),
        "m.0a/m.0a_0001.jpg 3 " + numbers(B),     # the same person under a second race
    ])
    return african, asian


# Identities that keep a face: m.01, m.0a, m.0b -> labels 0, 1, 2 in sorted order (m.0b appears
# first in the files; m.0c loses every line and gets no label).
RFW_EXPECTED = {
    "African/m.0a/m.0a_0002.jpg": record(1, BOX_B),
    "African/m.0a/m.0a_0003.jpg": record(1, BOX_D),
    "African/m.0b/m.0b_0002.jpg": record(2, BOX_C),
    "Asian/m.01/m.01_0001.jpg": record(0, BOX_A),
    "Asian/m.0a/m.0a_0001.jpg": record(1, BOX_B),
}
RFW_REJECTED = [
    ("landmarks", "African_lmk.txt", 1, "duplicate_path"),
    ("landmarks", "African_lmk.txt", 4, "wrong_value_count"),
    ("landmarks", "African_lmk.txt", 5, "non_numeric_value"),
    ("landmarks", "African_lmk.txt", 6, "empty_box"),
    ("landmarks", "African_lmk.txt", 7, "duplicate_path"),
    ("landmarks", "African_lmk.txt", 9, "malformed_line"),
    ("landmarks", "African_lmk.txt", 10, "non_numeric_value"),
    ("landmarks", "African_lmk.txt", 11, "non_numeric_value"),
    ("landmarks", "African_lmk.txt", 12, "bad_path"),
]


def test_rfw_records_labels_and_rejected_lines(tmp_path):
    african, asian = rfw_files(tmp_path)
    records, rejected = l2b.convert("rfw", [african, asian])
    assert records == RFW_EXPECTED
    assert list(records) == sorted(records)
    assert summary(rejected) == RFW_REJECTED
    assert all(entry["detail"] for entry in rejected)
    assert "m.0b_0001.jpg is listed 2 times" in rejected[0]["detail"]
    assert rejected[1]["text"] == "m.0c/m.0c_0001.jpg 2 1 2 3"
    # Every line is either a record or a rejected line.
    assert len(records) + len(rejected) == 12 + 2
    assert_ingest_accepts(records)


def test_labels_do_not_depend_on_file_or_line_order(tmp_path):
    african, asian = rfw_files(tmp_path)
    with open(african) as f:
        reversed_lines = f.read().splitlines()[::-1]
    (tmp_path / "reversed").mkdir()
    reversed_african = write(tmp_path / "reversed" / "African_lmk.txt", reversed_lines)
    records, _ = l2b.convert("rfw", [asian, reversed_african])
    assert records == RFW_EXPECTED


def test_rfw_race_from_group_or_file_name(tmp_path):
    path = write(tmp_path / "landmarks.txt", ["m.0a/m.0a_0001.jpg 0 " + numbers(A)])
    with pytest.raises(l2b.LandmarkFormatError, match="landmarks.txt.*--group"):
        l2b.convert("rfw", path)
    records, rejected = l2b.convert("rfw", path, group="Indian")
    assert records == {"Indian/m.0a/m.0a_0001.jpg": record(0, BOX_A)} and rejected == []


# --- VGGFace2 -------------------------------------------------------------------------------------

def vggface2_files(folder):
    landmarks = write(folder / "loose_landmark_train.csv", [
        ",".join(vggface2.VGGFACE2_LANDMARK_HEADER),
        '"n000002/0001_01",' + numbers(A, ","),       # 2
        '"n000002/0002_01",' + numbers(D, ","),       # 3
        '"n000001/0001_01",' + numbers(B, ","),       # 4 duplicate of 7
        '"n000003/0001_01",1,2',                      # 5 too few
        '"n000003/0002_01",' + numbers(A[:9], ",") + ",x",   # 6 not a number
        '"n000001/0001_01",' + numbers(C, ","),       # 7 duplicate of 4
        '"n000001/0003_01",' + numbers(C, ","),       # 8
        '"n000004",' + numbers(A, ","),               # 9 no identity folder
        '"n000005/0001_01",' + numbers(A, ","),       # 10 no box line
        '"n000006/0001_01",' + numbers(B, ","),       # 11 two box lines
        '"n000007/0001_01",' + numbers(A, ","),       # 12 its box line has W = 0
    ])
    boxes = write(folder / "loose_bb_train.csv", [
        "NAME_ID,X,Y,W,H",
        '"n000002/0001_01",60,60,79,109',             # 2
        '"n000002/0002_01",134,81,207,295',           # 3
        '"n000001/0003_01",58,-3,75,103',             # 4
        '"n000009/0001_01",1,2,3,4',                  # 5 no landmark line
        '"n000001/0001_01",10,10,20,20',              # 6 its landmark lines are duplicates
        '"n000006/0001_01",1,1,50,50',                # 7 twice
        '"n000006/0001_01",2,2,50,50',                # 8 twice
        '"n000007/0001_01",5,5,0,10',                 # 9 empty
    ])
    return landmarks, boxes


VGG_LANDMARK_REJECTED = [
    ("landmarks", "loose_landmark_train.csv", 4, "duplicate_path"),
    ("landmarks", "loose_landmark_train.csv", 5, "wrong_value_count"),
    ("landmarks", "loose_landmark_train.csv", 6, "non_numeric_value"),
    ("landmarks", "loose_landmark_train.csv", 7, "duplicate_path"),
    ("landmarks", "loose_landmark_train.csv", 9, "malformed_line"),
]


def test_vggface2_boxes_from_landmarks(tmp_path):
    landmarks, _ = vggface2_files(tmp_path)
    records, rejected = l2b.convert("vggface2", landmarks)
    assert records == {
        "n000001/0003_01.jpg": record(0, BOX_C),
        "n000002/0001_01.jpg": record(1, BOX_A),
        "n000002/0002_01.jpg": record(1, BOX_D),
        "n000005/0001_01.jpg": record(2, BOX_A),
        "n000006/0001_01.jpg": record(3, BOX_B),
        "n000007/0001_01.jpg": record(4, BOX_A),
    }
    assert summary(rejected) == VGG_LANDMARK_REJECTED
    assert_ingest_accepts(records)


def test_vggface2_with_the_box_file(tmp_path):
    landmarks, boxes = vggface2_files(tmp_path)
    records, rejected = l2b.convert("vggface2", landmarks, boxes)
    # x1 = X, y1 = Y, x2 = X + W, y2 = Y + H
    assert records == {
        "n000001/0003_01.jpg": record(0, (58, -3, 133, 100), C),   # the box file's box, the
        "n000002/0001_01.jpg": record(1, (60, 60, 139, 169), A),   # landmark line's points
        "n000002/0002_01.jpg": record(1, (134, 81, 341, 376), D),
    }
    assert summary(rejected) == [
        ("boxes", "loose_bb_train.csv", 5, "unmatched_box"),
        ("boxes", "loose_bb_train.csv", 6, "unmatched_box"),
        ("boxes", "loose_bb_train.csv", 7, "duplicate_path"),
        ("boxes", "loose_bb_train.csv", 8, "duplicate_path"),
        ("boxes", "loose_bb_train.csv", 9, "empty_box"),
    ] + VGG_LANDMARK_REJECTED[:4] + [
        ("landmarks", "loose_landmark_train.csv", 9, "malformed_line"),
        ("landmarks", "loose_landmark_train.csv", 10, "missing_box"),
        ("landmarks", "loose_landmark_train.csv", 11, "missing_box"),
        ("landmarks", "loose_landmark_train.csv", 12, "missing_box"),
    ]
    details = {(entry["kind"], entry["line"]): entry["detail"] for entry in rejected}
    assert "more than one box line" in details[("landmarks", 11)]
    assert "empty_box" in details[("landmarks", 12)]
    # Every line of both files (headers aside) is a record, used by one, or rejected.
    assert len(records) + sum(e["kind"] == "landmarks" for e in rejected) == 11
    assert len(records) + sum(e["kind"] == "boxes" for e in rejected) == 8
    assert_ingest_accepts(records)


def test_vggface2_key_prefix_makes_the_split_the_group(tmp_path):
    landmarks, _ = vggface2_files(tmp_path)
    records, _ = l2b.convert("vggface2", landmarks, key_prefix="train")
    assert records["train/n000002/0001_01.jpg"] == record(1, BOX_A)
    assert {ingest_records.FaceRecord(key, 0, 0, 0, 1, 1).group for key in records} == {"train"}


def test_vggface2_wrong_header_is_a_file_error(tmp_path):
    path = write(tmp_path / "loose_landmark_test.csv",
                 ['"n000001/0001_01",' + numbers(A, ",")])
    with pytest.raises(l2b.LandmarkFormatError, match=r"loose_landmark_test.csv:1: expected the "
                                                      r"header NAME_ID,P1X"):
        l2b.convert("vggface2", path)


# --- Trillion Pairs -------------------------------------------------------------------------------

def test_trillion_pairs(tmp_path):
    msra = write(tmp_path / "msra_lmk", [
        "msra/m.0xx/0-FaceId-0.jpg 0 " + numbers(A),
        "msra/m.0xx/1-FaceId-0.jpg 0 " + numbers(D),
        "msra/m.0aa/0-FaceId-0.jpg 1 " + numbers(B),
        "msra/m.0aa/1-FaceId-0.jpg " + numbers(B),        # 11 fields: the test set's layout
        "0-FaceId-0.jpg 2 " + numbers(A),                 # no identity folder
        "msra/m.0bb/0-FaceId-0.jpg 2.5 " + numbers(A),    # label not an integer
    ])
    records, rejected = l2b.convert("trillion", msra)
    assert records == {
        "msra/m.0aa/0-FaceId-0.jpg": record(0, BOX_B),
        "msra/m.0xx/0-FaceId-0.jpg": record(1, BOX_A),
        "msra/m.0xx/1-FaceId-0.jpg": record(1, BOX_D),
    }
    assert summary(rejected) == [("landmarks", "msra_lmk", 4, "wrong_value_count"),
                                 ("landmarks", "msra_lmk", 5, "malformed_line"),
                                 ("landmarks", "msra_lmk", 6, "non_numeric_value")]
    assert_ingest_accepts(records)

    celebrity = write(tmp_path / "celebrity_lmk", ["m.0cc/0-FaceId-0.jpg 0 " + numbers(C)])
    records, rejected = l2b.convert("trillion", [msra, celebrity], key_prefix="glint/")
    # Identities m.0aa < m.0cc < m.0xx.
    assert records["glint/m.0cc/0-FaceId-0.jpg"] == record(1, BOX_C)
    assert records["glint/msra/m.0aa/0-FaceId-0.jpg"] == record(0, BOX_B)
    assert records["glint/msra/m.0xx/1-FaceId-0.jpg"] == record(2, BOX_D)
    assert len(rejected) == 3


# --- images: clipping, missing and unreadable files ----------------------------------------------

def make_image_root(root):
    def image(key, size, fmt):
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (120, 90, 60)).save(path, fmt)

    image("African/m.0a/m.0a_0001.jpg", (100, 100), "JPEG")   # box C overshoots on every side
    image("African/m.0a/m.0a_0002.jpg", (200, 150), "PNG")    # box A lies inside
    (root / "African/m.0b").mkdir(parents=True)
    (root / "African/m.0b/m.0b_0002.jpg").write_bytes(b"not an image")
    image("African/m.0c/m.0c_0001.jpg", (50, 50), "JPEG")     # box A + 200 px: beyond the image
    return str(root)


def clip_landmarks(folder):
    shifted = [value + 200 for value in A]
    return write(folder / "African_lmk.txt", [
        "m.0a/m.0a_0001.jpg 0 " + numbers(C),
        "m.0a/m.0a_0002.jpg 0 " + numbers(A),
        "m.0b/m.0b_0001.jpg 1 " + numbers(A),      # no such file
        "m.0b/m.0b_0002.jpg 1 " + numbers(A),      # not an image
        "m.0c/m.0c_0001.jpg 2 " + numbers(shifted),
    ])


def test_clipping_to_the_image(tmp_path):
    root = make_image_root(tmp_path / "images")
    records, rejected = l2b.convert("rfw", clip_landmarks(tmp_path), image_root=root, clip=True)
    assert records == {
        "African/m.0a/m.0a_0001.jpg": record(0, (0, 0, 100, 100), C),   # BOX_C clipped, C kept
        "African/m.0a/m.0a_0002.jpg": record(0, BOX_A),
    }
    assert summary(rejected) == [("landmarks", "African_lmk.txt", 3, "missing_image"),
                                 ("landmarks", "African_lmk.txt", 4, "unreadable_image"),
                                 ("landmarks", "African_lmk.txt", 5, "empty_box")]
    assert_ingest_accepts(records)
    sizes = {"African/m.0a/m.0a_0001.jpg": (100, 100), "African/m.0a/m.0a_0002.jpg": (200, 150)}
    for key, value in records.items():
        face = ingest_records.check_fields(key, value)
        ingest_records.check_box_inside(face, *sizes[key], tolerance=0.02)


def test_landmarks_outside_the_image_are_reported_not_clipped(tmp_path):
    root = make_image_root(tmp_path / "images")        # m.0a_0002.jpg is 200 x 150
    wide = list(A)
    wide[2] = 205.0                      # the right eye 5 px past the edge: more than 2 % of 200
    path = write(tmp_path / "African_lmk.txt", ["m.0a/m.0a_0002.jpg 0 " + numbers(wide)])
    records, rejected = l2b.convert("rfw", path, image_root=root, clip=True)
    assert records == {}
    assert summary(rejected) == [("landmarks", "African_lmk.txt", 1, "landmarks_outside_image")]
    assert "landmark 1 (205, 50) lies outside the 200x150 image" in rejected[0]["detail"]


def test_without_clipping_boxes_the_ingest_would_reject_are_reported(tmp_path):
    root = make_image_root(tmp_path / "images")
    records, rejected = l2b.convert("rfw", clip_landmarks(tmp_path), image_root=root)
    assert records == {"African/m.0a/m.0a_0002.jpg": record(0, BOX_A)}
    assert summary(rejected) == [("landmarks", "African_lmk.txt", 1, "box_outside_image"),
                                 ("landmarks", "African_lmk.txt", 3, "missing_image"),
                                 ("landmarks", "African_lmk.txt", 4, "unreadable_image"),
                                 ("landmarks", "African_lmk.txt", 5, "box_outside_image")]
    with pytest.raises(ValueError, match="image root"):
        l2b.convert("rfw", clip_landmarks(tmp_path), clip=True)


# --- the CLI -------------------------------------------------------------------------------------

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tools.landmarks_to_boxes", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


def test_cli_writes_the_list_and_exits_2_above_the_bad_fraction(tmp_path):
    african, asian = rfw_files(tmp_path)
    out = tmp_path / "out" / "rfw.json"
    out.parent.mkdir()
    # 9 of 14 landmark lines rejected: 64 %.
    result = run_cli("rfw", "--landmarks", african, "--landmarks", asian, "--out", str(out),
                     "--max-bad-fraction", "0.7")
    assert result.returncode == 0, result.stderr
    with open(out) as f:
        text = f.read()
    assert json.loads(text) == RFW_EXPECTED
    lines = text.splitlines()
    assert lines[0] == "{" and lines[-1] == "}" and len(lines) == len(RFW_EXPECTED) + 2
    assert [json.loads("{" + line.rstrip(",") + "}").popitem()[0] for line in lines[1:-1]] \
        == sorted(RFW_EXPECTED)
    with open(str(out) + ".rejected.jsonl") as f:
        rejected = [json.loads(line) for line in f]
    assert summary(rejected) == RFW_REJECTED
    assert "rejected: 9 landmark lines" in result.stdout
    assert sorted(os.listdir(out.parent)) == ["rfw.json", "rfw.json.rejected.jsonl"]  # no temp file
    assert_ingest_accepts(json.loads(text))

    result = run_cli("rfw", "--landmarks", african, "--landmarks", asian, "--out", str(out))
    assert result.returncode == 2
    assert "more than --max-bad-fraction" in result.stderr
    with open(out) as f:
        assert json.load(f) == RFW_EXPECTED     # still written, for inspection


def test_cli_clean_vggface2_run_and_file_errors(tmp_path):
    landmarks = write(tmp_path / "loose_landmark_test.csv", [
        ",".join(vggface2.VGGFACE2_LANDMARK_HEADER),
        '"n000009/0001_01",' + numbers(A, ","),
        '"n000008/0001_01",' + numbers(B, ","),
    ])
    out = tmp_path / "vgg.json"
    result = run_cli("vggface2", "--landmarks", landmarks, "--out", str(out))
    assert result.returncode == 0, result.stderr
    with open(out) as f:
        produced = json.load(f)
    assert produced == {"n000008/0001_01.jpg": record(0, BOX_B),
                        "n000009/0001_01.jpg": record(1, BOX_A)}
    assert_ingest_accepts(produced)

    bad_header = write(tmp_path / "loose_landmark_val.csv",
                       ['"n000001/0001_01",' + numbers(A, ",")])
    result = run_cli("vggface2", "--landmarks", bad_header, "--out", str(tmp_path / "bad.json"))
    assert result.returncode == 1
    assert "loose_landmark_val.csv:1: expected the header" in result.stderr
    assert not (tmp_path / "bad.json").exists()
