"""face-api's "dlib style" face alignment as pure TensorFlow ops, for the Transform graph.

The pretrained FaceRecognitionNet was trained on dlib's aligned crops, so it only works on crops
made the way face-api makes them before `computeFaceDescriptor` (`withFaceDescriptors()`, i.e.
`landmarks.align(null, {useDlibAlignment: true})` then `extractFaceTensors`). Recipe, written from
the package's source (src/classes/FaceLandmarks.ts, FaceLandmarks5.ts, FaceLandmarks68.ts,
Box.ts, src/dom/extractFaceTensors.ts, NetInput.ts toBatchTensor, src/ops/padToSquare.ts and
src/faceLandmarkNet/FaceLandmark68NetBase.ts postProcess):

1. Landmarks. Given ones (5 or 68 points, photo pixels) are used as they are. Otherwise the face
   box is clipped to the photo and floored to whole pixels (Box.clipAtImageBorders), the crop is
   padded to a centred square with zeros (padToSquare: floor(d/2) before, the rest after), resized
   to 112 x 112 (TF.js resizeBilinear without half-pixel centres, TF's legacy ResizeBilinear) and
   run through FaceLandmark68Net; its outputs are mapped back to the crop the way postProcess does
   (it removes |w - h|/2 of padding, in 112-pixel units) and shifted by the crop's origin.
   The landmark network was trained on face-api's detector boxes; a face list's box is often
   another shape (a tall head box), which gives poor landmarks. So the search is done twice: the
   second time in face-api's own box of the first landmarks (`landmarks.align()`, alignMinBbox:
   their bounding box grown by 20 % of its width and height, centred), which is close to what the
   detector gives. `REFINE_PASSES` is that number of extra passes.
2. Reference points: the centres of the left eye (points 36-41), right eye (42-47) and mouth
   (48-67) of 68 points, or points 0, 1 and the mean of 3 and 4 of 5 points (FaceLandmarks5).
3. Box (alignDlib): size = floor(mean distance eye centre -> mouth centre / 0.45), centre c = mean
   of the three points, x = floor(max(0, c.x - 0.5 size)), y = floor(max(0, c.y - 0.43 size)),
   width = min(size, W + x), height = min(size, H + y) where W, H are the dimensions the landmarks
   were found in (the landmark crop; the photo for given landmarks).
4. Crop: that box clipped to the photo and floored, sliced, padded to a centred square, resized to
   150 x 150 as in step 1: exactly the tensor FaceRecognitionNet receives.

One deliberate difference: face-api's own pipeline shifts detector landmarks by the unclipped,
unrounded detection box; here they are shifted by the clipped whole-pixel box the landmark crop
really starts at (the same thing for a whole-pixel box inside the photo, as face lists have).

TFT's preprocessing_fn cannot hold tf.Variables, so the landmark network runs here as plain TF
ops with its weights baked in as constants (`LandmarkNet`); its outputs equal the Keras port's
(models/pretrained/landmark_net.py). All functions work on float32 RGB values 0..255.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from core import features
from models.pretrained import loading
from models.pretrained.landmark_net import DENSE_BLOCKS
from models.pretrained.landmark_net import INPUT_SIZE as LANDMARK_INPUT_SIZE
from models.pretrained.landmark_net import MODEL_NAME as LANDMARK_MODEL
from models.pretrained.layers import INPUT_DIVISOR, MEAN_RGB

CROP_SIZE = 150
REFINE_PASSES = 1
MIN_BOX_PADDING = 0.2          # FaceLandmarks.align()'s default minBoxPadding
# FaceLandmarks.ts alignDlib's constants.
SIZE_DIVISOR = 0.45
LEFT_FRACTION = 0.5
TOP_FRACTION = 0.43


def _ref_points(points: tf.Tensor) -> tf.Tensor:
    """[n, 2] landmarks (n = 5 or 68, static) -> [3, 2]: left eye, right eye, mouth centres."""
    count = int(points.shape[0])
    if count == 68:
        groups = (points[36:42], points[42:48], points[48:68])
    elif count == 5:
        groups = (points[0:1], points[1:2], points[3:5])
    else:
        raise ValueError(f"face-api alignment needs 5 or 68 landmarks, got {count}")
    return tf.stack([tf.reduce_sum(g, axis=0) / tf.cast(tf.shape(g)[0], g.dtype) for g in groups])


def dlib_box(points: tf.Tensor, width, height) -> tf.Tensor:
    """face-api's alignDlib: landmarks [n, 2] (photo pixels) and the dimensions they were found in
    -> int32 [4] (x, y, width, height). Computed in float64, as JavaScript numbers are."""
    points = tf.cast(points, tf.float64)
    left, right, mouth = tf.unstack(_ref_points(points))
    distance = (tf.norm(mouth - left) + tf.norm(mouth - right)) / 2.0
    size = tf.floor(distance / SIZE_DIVISOR)
    centre = (left + right + mouth) / 3.0
    x = tf.floor(tf.maximum(tf.constant(0.0, tf.float64), centre[0] - LEFT_FRACTION * size))
    y = tf.floor(tf.maximum(tf.constant(0.0, tf.float64), centre[1] - TOP_FRACTION * size))
    w = tf.minimum(size, tf.cast(width, tf.float64) + x)
    h = tf.minimum(size, tf.cast(height, tf.float64) + y)
    return tf.cast(tf.stack([x, y, w, h]), tf.int32)


def clip_box(x, y, w, h, image_width, image_height) -> tf.Tensor:
    """Box.clipAtImageBorders then floor: int32 [4] (x, y, width, height), at least 1 x 1 (face-api
    drops a face whose clipped box is empty; a crop must come out of every record here)."""
    x, y, w, h = (tf.cast(v, tf.float64) for v in (x, y, w, h))
    image_width, image_height = tf.cast(image_width, tf.float64), tf.cast(image_height, tf.float64)
    zero = tf.constant(0.0, tf.float64)
    left, top = tf.maximum(x, zero), tf.maximum(y, zero)
    # face-api takes the width from the unfloored left edge, then floors each of x, y, w, h.
    width = tf.floor(tf.minimum(x + w - left, image_width - left))
    height = tf.floor(tf.minimum(y + h - top, image_height - top))
    left = tf.minimum(tf.floor(left), image_width - 1.0)
    top = tf.minimum(tf.floor(top), image_height - 1.0)
    one = tf.constant(1.0, tf.float64)
    return tf.cast(tf.stack([left, top, tf.maximum(width, one), tf.maximum(height, one)]), tf.int32)


def square_resize(crop: tf.Tensor, size: int) -> tf.Tensor:
    """NetInput.toBatchTensor(size, true) on one [h, w, 3] crop: zero-pad to a centred square
    (padToSquare: the shorter side gets floor(d/2) before and ceil(d/2) after), then resize to
    size x size without half-pixel centres unless it already is. -> float32 [size, size, 3]."""
    crop = tf.cast(crop, tf.float32)
    h, w = tf.shape(crop)[0], tf.shape(crop)[1]
    diff = tf.abs(h - w)
    before, after = diff // 2, diff - diff // 2
    pad_rows = tf.where(h < w, tf.stack([before, after]), tf.zeros([2], tf.int32))
    pad_cols = tf.where(w < h, tf.stack([before, after]), tf.zeros([2], tf.int32))
    square = tf.pad(crop, tf.stack([pad_rows, pad_cols, tf.zeros([2], tf.int32)]))
    side = tf.maximum(h, w)
    resized = tf.cond(
        tf.equal(side, size), lambda: square,
        lambda: tf.raw_ops.ResizeBilinear(images=square[tf.newaxis], size=[size, size],
                                          align_corners=False, half_pixel_centers=False)[0])
    return tf.ensure_shape(resized, [size, size, 3])


class LandmarkNet:
    """FaceLandmark68Net as plain TF ops with constant weights: float32 [b, 112, 112, 3] 0..255 ->
    [b, 68, 2] relative to the input (0..1), as the Keras port (landmark_net.py) computes it."""

    def __init__(self, weights: Optional[Dict[str, np.ndarray]] = None, cache: Optional[str] = None):
        self.weights = dict(weights) if weights is not None else loading.package_weights(LANDMARK_MODEL,
                                                                                           cache)

    def _w(self, name: str) -> tf.Tensor:
        return tf.constant(np.asarray(self.weights[name], np.float32), name=name.replace("/", "_"))

    def _separable(self, x, prefix: str, stride: int):
        x = tf.nn.separable_conv2d(x, self._w(f"{prefix}/depthwise_filter"),
                                   self._w(f"{prefix}/pointwise_filter"), [1, stride, stride, 1], "SAME")
        return x + self._w(f"{prefix}/bias")

    def _dense_block(self, x, block: str, first: bool):
        if first:
            out1 = tf.nn.conv2d(x, self._w(f"{block}/conv0/filters"), 2, "SAME") + self._w(
                f"{block}/conv0/bias")
        else:
            out1 = self._separable(x, f"{block}/conv0", 2)
        out1 = tf.nn.relu(out1)
        out2 = self._separable(out1, f"{block}/conv1", 1)
        out3 = self._separable(tf.nn.relu(out1 + out2), f"{block}/conv2", 1)
        out4 = self._separable(tf.nn.relu(out1 + (out2 + out3)), f"{block}/conv3", 1)
        return tf.nn.relu(out1 + (out2 + (out3 + out4)))

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        x = (tf.cast(images, tf.float32) - tf.constant(MEAN_RGB, tf.float32)) / INPUT_DIVISOR
        for i, (block, _) in enumerate(DENSE_BLOCKS):
            x = self._dense_block(x, block, i == 0)
        x = tf.nn.avg_pool2d(x, 7, 2, "VALID")
        x = tf.reshape(x, [-1, int(self.weights["fc/weights"].shape[0])])
        x = tf.matmul(x, self._w("fc/weights")) + self._w("fc/bias")
        return tf.reshape(x, [-1, 68, 2])


def detect_landmarks(image: tf.Tensor, box: tf.Tensor, net: LandmarkNet) -> Tuple[tf.Tensor, tf.Tensor]:
    """One photo [H, W, 3] and its face box (x1, y1, x2, y2) -> (float64 [68, 2] landmarks in photo
    pixels, int32 [4] the whole-pixel crop (x, y, w, h) they were found in)."""
    shape = tf.shape(image)
    box = tf.cast(box, tf.float64)
    crop_box = clip_box(box[0], box[1], box[2] - box[0], box[3] - box[1], shape[1], shape[0])
    x, y, w, h = tf.unstack(crop_box)
    crop = image[y:y + h, x:x + w]
    relative = tf.cast(net(square_resize(crop, LANDMARK_INPUT_SIZE)[tf.newaxis])[0], tf.float32)
    # postProcess: relative positions of the padded square -> relative positions of the crop.
    size = float(LANDMARK_INPUT_SIZE)
    wf, hf = tf.cast(w, tf.float32), tf.cast(h, tf.float32)
    scale = size / tf.maximum(wf, hf)
    sw, sh = wf * scale, hf * scale
    pad_x = tf.where(sw < sh, tf.abs(sw - sh) / 2.0, 0.0)
    pad_y = tf.where(sh < sw, tf.abs(sw - sh) / 2.0, 0.0)
    rel = (relative * size - tf.stack([pad_x, pad_y])) / tf.stack([sw, sh])
    points = tf.cast(rel, tf.float64) * tf.cast(tf.stack([w, h]), tf.float64) + tf.cast(
        tf.stack([x, y]), tf.float64)
    return points, crop_box


def min_bbox_box(points: tf.Tensor, padding: float = MIN_BOX_PADDING) -> tf.Tensor:
    """FaceLandmarks.alignMinBbox: the landmarks' bounding box grown by `padding` x its width and
    height (half on each side) -> float64 [4] (x1, y1, x2, y2)."""
    points = tf.cast(points, tf.float64)
    low, high = tf.reduce_min(points, axis=0), tf.reduce_max(points, axis=0)
    grow = (high - low) * padding / 2.0
    return tf.concat([low - grow, high + grow], axis=0)


def align_face(image: tf.Tensor, box: tf.Tensor, net: Optional[LandmarkNet] = None,
               landmarks: Optional[tf.Tensor] = None, size: int = CROP_SIZE,
               refine_passes: int = REFINE_PASSES):
    """One photo (uint8 or float [H, W, 3], 0..255) and its face box (x1, y1, x2, y2) -> dict:
    "crop" float32 [size, size, 3] 0..255 (what FaceRecognitionNet receives), "landmarks" float64
    [n, 2] photo pixels, "box" int32 [4] (x, y, w, h) the aligned box before clipping.

    `landmarks` ([5 or 68, 2] photo pixels) skips the landmark network; else `net` finds them
    (in `box`, then `refine_passes` times in the box of the landmarks found before).
    """
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    if landmarks is not None:
        points = tf.cast(landmarks, tf.float64)
        found_w, found_h = shape[1], shape[0]
    else:
        if net is None:
            raise ValueError("align_face needs landmarks or a LandmarkNet to find them")
        points, crop_box = detect_landmarks(image, box, net)
        for _ in range(refine_passes):
            points, crop_box = detect_landmarks(image, min_bbox_box(points), net)
        found_w, found_h = crop_box[2], crop_box[3]
    aligned = dlib_box(points, found_w, found_h)
    x, y, w, h = tf.unstack(clip_box(*tf.unstack(aligned), shape[1], shape[0]))
    crop = square_resize(image[y:y + h, x:x + w], size)
    return {"crop": crop, "landmarks": points, "box": aligned}


def crop_faces_aligned(image_bytes: tf.Tensor, boxes: tf.Tensor, size: int = CROP_SIZE,
                       net: Optional[LandmarkNet] = None, landmarks=None) -> tf.Tensor:
    """Encoded JPEG/PNG bytes [batch] and pixel boxes [batch, 4] (x1, y1, x2, y2) -> float32
    [batch, size, size, 3] in [0, 1]: the face-api aligned crop of each. The Transform's
    "face_api_aligned" crop recipe.

    `landmarks`: the raw `features.LANDMARKS` ([batch, None] tf.SparseTensor or tf.RaggedTensor of
    interleaved x, y photo pixels, as parsing the Examples gives it), or None. A face with 5 or 68
    given points is aligned on them; a face with none gets them from the 68-landmark network
    inside its box; any other count fails with an InvalidArgumentError naming it."""
    boxes = tf.cast(boxes, tf.float32)
    batch = tf.shape(image_bytes)[0]
    width = 2 * max(features.LANDMARK_COUNTS)
    allowed = tf.constant([0] + [2 * c for c in features.LANDMARK_COUNTS], tf.int64)
    if landmarks is None:
        points = tf.zeros([batch, width], tf.float32)
        counts = tf.zeros([batch], tf.int64)
    else:
        if isinstance(landmarks, tf.SparseTensor):
            landmarks = tf.RaggedTensor.from_sparse(landmarks)
        landmarks = tf.cast(landmarks, tf.float32)
        counts = tf.cast(landmarks.row_lengths(), tf.int64)
        check = tf.debugging.Assert(
            tf.reduce_all(tf.reduce_any(tf.equal(counts[:, None], allowed[None, :]), axis=1)),
            [f"{features.LANDMARKS!r} must hold 0, 10 or 136 values (5 or 68 x, y points) per "
             "face; got counts", counts], summarize=20)
        with tf.control_dependencies([check]):
            points = landmarks.to_tensor(default_value=0.0, shape=[None, width])
    net = net or LandmarkNet()

    def one(args):
        encoded, box, row, count = args
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8)
        row = tf.reshape(row, [max(features.LANDMARK_COUNTS), 2])
        given = [lambda c=c: align_face(image, box, landmarks=row[:c], size=size)["crop"]
                 for c in features.LANDMARK_COUNTS]

        def found():
            return align_face(image, box, net, size=size)["crop"]

        # Branch 0 (no points: the network), then one per allowed count.
        index = tf.argmax(tf.cast(tf.equal(count, allowed), tf.int32), output_type=tf.int32)
        crop = tf.switch_case(index, [found] + given)
        return tf.clip_by_value(tf.ensure_shape(crop, [size, size, 3]) / 255.0, 0.0, 1.0)

    return tf.map_fn(one, (image_bytes, boxes, points, counts),
                     fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))


# The Transform's crop recipes (custom_config "crop"): "box" is preprocessing.crop_faces (the face
# box resized, for the networks trained here); "face_api_aligned" is `crop_faces_aligned`.
BOX = "box"
FACE_API_ALIGNED = "face_api_aligned"
CROP_RECIPES = (BOX, FACE_API_ALIGNED)
CROP_KEY = "crop"


def crop_recipe(custom_config) -> str:
    """The crop recipe named by a Transform custom_config ("box" when absent); ValueError naming the
    setting for any other value."""
    recipe = (custom_config or {}).get(CROP_KEY) or BOX
    if recipe not in CROP_RECIPES:
        raise ValueError(f"Transform setting {CROP_KEY}={recipe!r} is not a crop recipe; choose one "
                         f"of {', '.join(CROP_RECIPES)}")
    return recipe


def recipe_crop_fn(custom_config, box_crop):
    """The function (image_bytes [b], boxes [b, 4], size, landmarks) -> [b, size, size, 3] in [0, 1]
    of the configured recipe; `box_crop` is the box recipe's (passed in: models.preprocessing owns
    it), which crops by the box alone and ignores the landmarks."""
    if crop_recipe(custom_config) == FACE_API_ALIGNED:
        return lambda image_bytes, boxes, size, landmarks=None: crop_faces_aligned(
            image_bytes, boxes, size, landmarks=landmarks)
    return lambda image_bytes, boxes, size, landmarks=None: box_crop(image_bytes, boxes, size)
