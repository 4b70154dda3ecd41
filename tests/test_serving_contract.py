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
    assert "x1 < x2 and y1 < y2" in message
    assert "[1]" in message                                     # the request index
    assert "[[{} {} {} {}]]".format(*bad_box) in message        # the box itself


def test_serving_default_refuses_an_inverted_box(serving):
    loaded, examples = serving
    good = [e.SerializeToString() for e in examples]
    assert np.isfinite(loaded.signatures[export.SERVING_DEFAULT](
        examples=tf.constant(good))["embedding"].numpy()).all()
    bad = good[:2] + [_with_box(examples[2], (25, 3, 5, 20))]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"x1 < x2 and y1 < y2.*\[2\]"):
        loaded.signatures[export.SERVING_DEFAULT](examples=tf.constant(bad))
