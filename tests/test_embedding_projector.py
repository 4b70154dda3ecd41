"""The projector export: rows in list order, embeddings equal to the signature's (called here
independently), sprite geometry and content, and a config TensorBoard's projector plugin loads."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins.projector import projector_config_pb2

from models import preprocessing
from tests.conftest import REPO_ROOT
from tools import embedding_projector

IMAGE_SIZE = 32
EMBEDDING_SIZE = 16
THUMBNAIL = 8


class LinearEmbedImages(tf.Module):
    """An `embed_images`-compatible SavedModel without Keras (fast to build and save): the serving
    crop, flattened, through a random linear map, L2-normalized. Each image gets its own vector."""

    def __init__(self):
        super().__init__()
        self.projection = tf.Variable(tf.random.stateless_normal(
            [IMAGE_SIZE * IMAGE_SIZE * 3, EMBEDDING_SIZE], seed=[1, 2]))
        self.embed_images = tf.function(
            self._embed,
            input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")]
            + [tf.TensorSpec([None], tf.int64, name=k) for k in preprocessing.BOX_KEYS])

    def _embed(self, image_bytes, x1, y1, x2, y2):
        crops = preprocessing.crop_faces(image_bytes, tf.stack([x1, y1, x2, y2], axis=1),
                                         IMAGE_SIZE)
        flat = tf.reshape(crops, [-1, IMAGE_SIZE * IMAGE_SIZE * 3]) - 0.5
        return {"embedding": tf.math.l2_normalize(flat @ self.projection, axis=-1)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("linear_model") / "1")
    module = LinearEmbedImages()
    tf.saved_model.save(module, path, signatures={"embed_images": module.embed_images})
    return path


@pytest.fixture(scope="module")
def listing(small_sample):
    with open(os.path.join(small_sample, "test.json")) as f:
        records = json.load(f)
    return records, small_sample


@pytest.fixture(scope="module")
def projected(model_dir, listing, tmp_path_factory):
    records, sample = listing
    out = str(tmp_path_factory.mktemp("projector"))
    # batch size 5: several embed_images calls, the last one partial.
    rc = embedding_projector.main(["--model", model_dir,
                                   "--list", os.path.join(sample, "test.json"),
                                   "--image-root", os.path.join(sample, "images"), "--out", out,
                                   "--thumbnail", str(THUMBNAIL), "--batch-size", "5"])
    assert rc == 0
    return out


def read_tsv(path):
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f]


def test_rows_follow_the_list(projected, listing):
    records, _ = listing
    metadata = read_tsv(os.path.join(projected, "metadata.tsv"))
    embeddings = read_tsv(os.path.join(projected, "embeddings.tsv"))
    assert metadata[0] == ["label", "group", "path"]
    expected = [[str(v["label"]), key.split("/")[0], key] for key, v in records.items()]
    assert metadata[1:] == expected
    assert len(embeddings) == len(records) == 32
    assert {len(row) for row in embeddings} == {EMBEDDING_SIZE}


def test_embeddings_equal_the_signatures_output(projected, listing, model_dir):
    records, sample = listing
    keys = list(records)
    image_bytes = []
    for key in keys:
        with open(os.path.join(sample, "images", key), "rb") as f:
            image_bytes.append(f.read())
    box = {k: tf.constant([records[key][k] for key in keys], tf.int64)
           for k in ("x1", "y1", "x2", "y2")}
    signature = tf.saved_model.load(model_dir).signatures["embed_images"]
    expected = signature(image_bytes=tf.constant(image_bytes), **box)["embedding"].numpy()
    written = np.loadtxt(os.path.join(projected, "embeddings.tsv"), delimiter="\t")
    np.testing.assert_allclose(written, expected, atol=1e-6)
    assert np.min(np.linalg.norm(expected[:, None] - expected[None], axis=-1)
                  + np.eye(len(keys))) > 0.1       # distinct rows: an order mix-up would show


def test_sprite_is_a_square_grid_of_the_crops_in_row_major_order(projected, listing):
    records, sample = listing
    sprite = np.asarray(Image.open(os.path.join(projected, "sprite.png")).convert("RGB"))
    grid = math.ceil(math.sqrt(len(records)))                               # 6 for 32 images
    assert sprite.shape == (grid * THUMBNAIL, grid * THUMBNAIL, 3)
    for i, (key, record) in enumerate(records.items()):
        with open(os.path.join(sample, "images", key), "rb") as f:
            box = [[record[k] for k in ("x1", "y1", "x2", "y2")]]
            crop = preprocessing.crop_faces(tf.constant([f.read()]), tf.constant(box),
                                            THUMBNAIL).numpy()[0]
        row, col = i // grid, i % grid
        cell = sprite[row * THUMBNAIL:(row + 1) * THUMBNAIL, col * THUMBNAIL:(col + 1) * THUMBNAIL]
        np.testing.assert_array_equal(cell, np.round(crop * np.float32(255)), err_msg=key)
    unused = sprite[(len(records) // grid) * THUMBNAIL:, (len(records) % grid) * THUMBNAIL:]
    assert unused.max() == 0


def test_config_references_the_written_files(projected, listing):
    config = projector_config_pb2.ProjectorConfig()
    with open(os.path.join(projected, "projector_config.pbtxt")) as f:
        text_format.Parse(f.read(), config)
    [embedding] = config.embeddings
    for path in (embedding.tensor_path, embedding.metadata_path, embedding.sprite.image_path):
        assert not os.path.isabs(path) and os.path.isfile(os.path.join(projected, path)), path
    assert list(embedding.sprite.single_image_dim) == [THUMBNAIL, THUMBNAIL]
    assert list(embedding.tensor_shape) == [len(listing[0]), EMBEDDING_SIZE]


def test_tensorboards_projector_plugin_loads_it(projected, listing):
    """The real plugin (private entry points, but the code path `tensorboard --logdir` takes)."""
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.projector import projector_plugin

    class NoRuns:
        def list_runs(self, ctx, experiment_id):
            return []

    plugin = projector_plugin.ProjectorPlugin(
        base_plugin.TBContext(logdir=projected, data_provider=NoRuns()))
    plugin._update_configs()
    [embedding] = plugin._configs["."].embeddings
    assert list(embedding.tensor_shape) == [len(listing[0]), EMBEDDING_SIZE]
    tensor = plugin.tensor_cache.get((".", embedding.tensor_name))
    np.testing.assert_allclose(
        tensor, np.loadtxt(os.path.join(projected, "embeddings.tsv"), delimiter="\t"), atol=1e-6)


def test_max_images_keeps_whole_identities_in_list_order(listing):
    records, _ = listing
    keys = embedding_projector.choose_keys(records, max_images=10)
    per_label = {}
    for key, record in records.items():
        per_label.setdefault(record["label"], []).append(key)
    chosen_labels = {records[key]["label"] for key in keys}
    assert len(keys) == 8                     # identities of 4 images: two fit in 10, not three
    assert all(set(per_label[label]) <= set(keys) for label in chosen_labels)
    assert keys == [key for key in records if key in set(keys)]
    assert embedding_projector.choose_keys(records, max_images=1000) == list(records)


def test_cli_in_a_subprocess_with_max_images(model_dir, listing, tmp_path):
    _, sample = listing
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "tools.embedding_projector", "--model", model_dir,
         "--list", os.path.join(sample, "test.json"), "--image-root",
         os.path.join(sample, "images"), "--out", str(out), "--max-images", "10",
         "--thumbnail", "4"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(read_tsv(out / "embeddings.tsv")) == 8
    assert len(read_tsv(out / "metadata.tsv")) == 9
    assert Image.open(out / "sprite.png").size == (3 * 4, 3 * 4)     # ceil(sqrt(8)) = 3


def test_errors_name_the_bad_input(model_dir, listing, tmp_path, capsys):
    _, sample = listing
    image_root = os.path.join(sample, "images")
    test_list = os.path.join(sample, "test.json")
    with pytest.raises(FileNotFoundError, match="no_model_here"):
        embedding_projector.project(str(tmp_path / "no_model_here"), test_list, image_root,
                                    str(tmp_path / "o"))

    other = tf.Module()
    other.f = tf.function(lambda x: {"y": x + 1.0}, input_signature=[tf.TensorSpec([None])])
    tf.saved_model.save(other, str(tmp_path / "other"), signatures={"serving_default": other.f})
    with pytest.raises(KeyError, match="embed_images.*serving_default"):
        embedding_projector.project(str(tmp_path / "other"), test_list, image_root,
                                    str(tmp_path / "o"))

    (tmp_path / "empty.json").write_text("{}")
    assert embedding_projector.main(["--model", model_dir, "--list", str(tmp_path / "empty.json"),
                                     "--image-root", image_root, "--out", str(tmp_path / "o")]) == 2
    assert "empty.json" in capsys.readouterr().err

    with pytest.raises(FileNotFoundError, match="not found at"):
        embedding_projector.project(model_dir, test_list, str(tmp_path), str(tmp_path / "o"))
