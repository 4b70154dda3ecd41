"""Every feature name of the pipeline, in one place.

Raw features are what FaceExampleGen writes (schema/schema.pbtxt describes them); transformed
features are what the Transform's `preprocessing_fn` returns. Face lists use the box names too.
"""

# Raw Example features (FaceExampleGen -> StatisticsGen, Transform, serving_default).
IMAGE_RAW = "image_raw"          # bytes: the image file, unchanged
LABEL = "label"                  # int64: identity label
X1, Y1, X2, Y2 = "x1", "y1", "x2", "y2"   # int64: face box, pixels, right/bottom exclusive
BOX_KEYS = (X1, Y1, X2, Y2)
IMAGE_HEIGHT = "image_height"    # int64
IMAGE_WIDTH = "image_width"      # int64
GROUP = "group"                  # bytes: first path component of the key (the original's race)
PATH = "path"                    # bytes: the key, relative to the image root
# float: the face's landmarks, photo pixels, interleaved x0, y0, x1, y1, ... (5 or 68 points; the
# feature is absent when the face list gives none). 5 points: left eye, right eye, nose tip, left
# and right mouth corner (MTCNN's order, as RFW / VGGFace2 / Trillion Pairs lists give them);
# 68 points: the iBUG 300-W layout (dlib, face-api).
LANDMARKS = "landmarks"
LANDMARK_COUNTS = (5, 68)

# Transformed features.
IMAGE = "image"                  # bytes: the crop, uint8 [size, size, 3] row-major (models/preprocessing.py)
CLASS_INDEX = "class_index"      # int64: 0..C-1 over the train identities, -1 for unseen ones
IDENTITY_VOCABULARY = "identities"

# The scope of metrics over every group at once (never a group's name).
OVERALL = "overall"
# The group of a key without a folder.
UNGROUPED = "ungrouped"
