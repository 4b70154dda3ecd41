"""The exported signatures' request contract: boxes ingest would reject are refused, not embedded."""
import numpy as np
import pytest
import tensorflow as tf

from models import export, preprocessing
from models.face_model import ModelConfig, build_embedding_model
from tests.pipeline_helpers import examples_by_path, feature_value

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def serving(transformed_sample, tmp_path_factory):
    """An untrained small network exported with the sample's Transform graph (32x32 crops), and
    a few raw eval Examples."""
    import os

    import tensorflow_transform as tft

    tf.keras.utils.set_random_seed(0)
    model = build_embedding_model(ModelConfig(backbone="small_cnn", image_size=32,
                                              embedding_size=8))
    path = str(tmp_path_factory.mktemp("serving") / "model")
    export.export_saved_model(model, tft.TFTransformOutput(transformed_sample["transform_graph"]),
                              32, path, {"image_size": 32})
    raw = examples_by_path(os.path.join(transformed_sample["examples"], "Split-eval"))
    examples = [raw[p] for p in sorted(raw)[:3]]
    return tf.saved_model.load(path), examples


def _request(examples, boxes=None):
    """embed_images arguments from Examples, with the boxes replaced when given."""
    if boxes is None:
        boxes = [[feature_value(e, k) for k in preprocessing.BOX_KEYS] for e in examples]
    columns = np.array(boxes, np.int64).T
    return {"image_bytes": tf.constant([feature_value(e, "image_raw") for e in examples]),
            **{k: tf.constant(columns[i]) for i, k in enumerate(preprocessing.BOX_KEYS)}}


def _with_box(example, box):
    copy = tf.train.Example()
    copy.CopyFrom(example)
    for name, value in zip(preprocessing.BOX_KEYS, box):
        copy.features.feature[name].int64_list.value[:] = [value]
    return copy.SerializeToString()


def test_valid_boxes_are_embedded(serving):
    loaded, examples = serving
    embedding = loaded.signatures[export.EMBED_IMAGES](**_request(examples))["embedding"].numpy()
    assert np.isfinite(embedding).all()
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("bad_box", [
    (20, 4, 10, 28),      # x2 < x1: would be cropped mirrored left-right
    (4, 28, 30, 6),       # y2 < y1: mirrored top-bottom
    (12, 4, 12, 28),      # x2 == x1: empty
    (4, 9, 30, 9),        # y2 == y1: empty
])
def test_embed_images_refuses_an_inverted_or_empty_box_naming_it(serving, bad_box):
    loaded, examples = serving
    boxes = [[feature_value(e, k) for k in preprocessing.BOX_KEYS] for e in examples]
    boxes[1] = list(bad_box)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        loaded.signatures[export.EMBED_IMAGES](**_request(examples, boxes))
    message = str(error.value)
    # The request index, ingest's reason code and the box itself.
    assert "input 1: bad_box: box x1={} y1={} x2={} y2={} must have x1 < x2 and y1 < y2".format(
        *bad_box) in message
    assert "input 0" not in message and "input 2" not in message


def test_serving_default_refuses_an_inverted_box(serving):
    loaded, examples = serving
    good = [e.SerializeToString() for e in examples]
    assert np.isfinite(loaded.signatures[export.SERVING_DEFAULT](
        examples=tf.constant(good))["embedding"].numpy()).all()
    bad = good[:2] + [_with_box(examples[2], (25, 3, 5, 20))]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"input 2: bad_box: .*x1 < x2 and y1 < y2"):
        loaded.signatures[export.SERVING_DEFAULT](examples=tf.constant(bad))


def test_the_three_signatures_embed_the_stored_crop_alike(serving, transformed_sample):
    """serving_default and embed_images (which run the Transform, uint8 crop included) and
    embed_transformed given the Transform's stored crop decoded in NumPy (uint8 / 255, float32:
    its input stays float crops in [0, 1]) return the same embedding."""
    import os

    from tests.pipeline_helpers import read_examples
    from tests.test_preprocessing import is_rounding_of

    loaded, examples = serving
    transformed = read_examples(os.path.join(transformed_sample["transformed_examples"],
                                             "Split-eval"))
    stored = [feature_value(e, preprocessing.IMAGE) for e in transformed]
    request = _request(examples)
    crops = preprocessing.crop_faces(
        request["image_bytes"], tf.stack([request[k] for k in preprocessing.BOX_KEYS], axis=1),
        32).numpy()
    mine = []
    for crop in crops:      # the stored crop of each request image: the one rounding its crop
        [found] = [value for value in stored if is_rounding_of(value, crop)]
        mine.append(found)
    decoded = np.stack([np.frombuffer(b, np.uint8).reshape(32, 32, 3) for b in mine])

    transformed_signature = loaded.signatures[export.EMBED_TRANSFORMED]
    [spec] = transformed_signature.structured_input_signature[1].values()
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, 32, 32, 3]
    by_crops = transformed_signature(
        image=tf.constant(decoded.astype(np.float32) / np.float32(255)))["embedding"].numpy()
    by_images = loaded.signatures[export.EMBED_IMAGES](**request)["embedding"].numpy()
    by_examples = loaded.signatures[export.SERVING_DEFAULT](
        examples=tf.constant([e.SerializeToString() for e in examples]))["embedding"].numpy()
    np.testing.assert_allclose(by_images, by_examples, atol=1e-5)
    np.testing.assert_allclose(by_crops, by_examples, atol=1e-5)
    # The float crop before rounding embeds measurably differently: serving really embeds the
    # stored (rounded) crop, as training does.
    unrounded = transformed_signature(image=tf.constant(crops))["embedding"].numpy()
    assert np.abs(unrounded - by_examples).max() > 1e-4
