"""DeepGlint's Trillion Pairs landmark lists.

The file: DeepGlint's Trillion Pairs training lists `msra_lmk` (MS-Celeb-1M-v1c, 86,876
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
"""
from typing import Iterator, List, Tuple

from core.landmark_files.geometry import IntBox
from core.landmark_files.lines import Face, LineError, join_key, parse_file, path_label_landmarks


def faces(path: str, prefix: str, rejected: List[dict]) -> Iterator[Face]:
    def parse(text: str) -> Tuple[str, str, Tuple[IntBox, List[List[float]]]]:
        image_path, parts, box = path_label_landmarks(text)
        if len(parts) < 2:
            raise LineError("malformed_line", f"path {image_path!r} has no identity folder")
        return join_key(prefix, parts), parts[-2], box

    for number, text, (key, identity, (box, points)) in parse_file(path, parse, None, "landmarks",
                                                                    rejected):
        yield Face(key, identity, box, path, number, text, landmarks=points)
