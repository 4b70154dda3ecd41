"""The Trainer's run_fn on transformed sample data: export, warm start, resume after a kill."""
import json
import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
import tensorflow as tf

from models import data, export, preprocessing, trainer
from models.face_model import ModelConfig, build_embedding_model
from tests.conftest import REPO_ROOT
from tests.pipeline_helpers import examples_by_path, feature_value, read_examples
from tests.test_preprocessing import is_rounding_of
from tests.trainer_helpers import TINY_TRAINING, run_trainer

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def trained(transformed_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    model_uri = run_trainer(transformed_sample, str(out), {**TINY_TRAINING,
                                                           "loss": "SoftmaxCenter"})
    return model_uri


def test_model_config_records_identities_derived_from_the_data(trained, transformed_sample):
    config = export.read_model_config(os.path.join(trained, "Format-Serving"))
    with open(os.path.join(transformed_sample["data"], "train.json")) as f:
        train_identities = {v["label"] for v in json.load(f).values()}
    assert config["num_classes"] == len(train_identities)
    assert config["train_images"] == 36 and config["image_size"] == 32
    assert config["resumed_from_step"] == 0
    assert [entry["epoch"] for entry in config["recall_history"]] == [1, 2]


def test_three_signatures_agree_on_the_same_images(trained, transformed_sample):
    loaded = tf.saved_model.load(os.path.join(trained, "Format-Serving"))
    raw = examples_by_path(os.path.join(transformed_sample["examples"], "Split-eval"))
    paths = sorted(raw)[:6]
    serialized = tf.constant([raw[p].SerializeToString() for p in paths])
    by_examples = loaded.signatures[export.SERVING_DEFAULT](examples=serialized)["embedding"]

    box = {k: tf.constant([feature_value(raw[p], k) for p in paths], tf.int64)
           for k in preprocessing.BOX_KEYS}
    image_bytes = tf.constant([feature_value(raw[p], "image_raw") for p in paths])
    by_images = loaded.signatures[export.EMBED_IMAGES](image_bytes=image_bytes, **box)["embedding"]

    # embed_transformed on the Transform's stored crops of the same images, decoded as uint8 / 255
    # in NumPy (found in the transformed eval split as the rounding of their crop: its order is not
    # the raw split's).
    stored = list(stored_crops(transformed_sample, "eval"))
    crops = preprocessing.crop_faces(image_bytes, tf.stack([box[k] for k in preprocessing.BOX_KEYS],
                                                           axis=1), 32).numpy()
    mine = [next(value for value in stored if is_rounding_of(value, crop)) for crop in crops]
    decoded = np.stack([np.frombuffer(b, np.uint8).reshape(32, 32, 3) for b in mine])
    by_crops = loaded.signatures[export.EMBED_TRANSFORMED](
        image=tf.constant(decoded.astype(np.float32) / np.float32(255)))["embedding"]

    np.testing.assert_allclose(by_images.numpy(), by_examples.numpy(), atol=1e-5)
    np.testing.assert_allclose(by_crops.numpy(), by_examples.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(by_examples.numpy(), axis=1), 1.0, atol=1e-5)
    assert by_examples.shape == (6, TINY_TRAINING["embedding_size"])
    # A serving request needs only the image and the box.
    minimal = tf.train.Example()
    for name in ("image_raw", *preprocessing.BOX_KEYS):
        minimal.features.feature[name].CopyFrom(raw[paths[0]].features.feature[name])
    only_needed = loaded.signatures[export.SERVING_DEFAULT](
        examples=tf.constant([minimal.SerializeToString()]))["embedding"]
    np.testing.assert_allclose(only_needed.numpy()[0], by_examples.numpy()[0], atol=1e-5)


def stored_crops(transformed_sample, split):
    """{stored crop bytes: the transformed Example} of one transformed split."""
    examples = read_examples(os.path.join(transformed_sample["transformed_examples"],
                                          f"Split-{split}"))
    return {feature_value(e, preprocessing.IMAGE): e for e in examples}


def test_datasets_feed_the_models_the_stored_crops_as_uint8_over_255(transformed_sample):
    """The Trainer's eval dataset (and its train dataset without augmentation) yield the stored
    uint8 crops as float32 uint8 / 255, decoded here with NumPy."""
    import tensorflow_transform as tft
    from tfx.components.trainer import fn_args_utils
    from tfx.components.util import tfxio_utils
    from tfx.types import standard_artifacts

    examples = standard_artifacts.Examples()
    examples.uri = transformed_sample["transformed_examples"]
    examples.split_names = '["train", "eval"]'
    accessor = fn_args_utils.DataAccessor(
        tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact([examples], []),
        record_batch_factory=None, data_view_decode_fn=None)
    schema = tft.TFTransformOutput(transformed_sample["transform_graph"]).transformed_metadata.schema
    pattern = [os.path.join(examples.uri, "Split-eval", "*")]
    stored = stored_crops(transformed_sample, "eval")
    seen = 0
    for features in data.evaluation_dataset(pattern, accessor, schema, batch_size=5,
                                            image_size=32):
        images = features[preprocessing.IMAGE].numpy()
        assert images.dtype == np.float32 and images.shape[1:] == (32, 32, 3)
        for image, label in zip(images, features[preprocessing.LABEL].numpy().reshape(-1)):
            example = stored[np.round(image * np.float32(255)).astype(np.uint8).tobytes()]
            expected = np.frombuffer(feature_value(example, preprocessing.IMAGE), np.uint8)
            np.testing.assert_array_equal(image.reshape(-1),
                                          expected.astype(np.float32) / np.float32(255))
            assert label == feature_value(example, preprocessing.LABEL)
            seen += 1
    assert seen == len(stored)
    batch, classes = next(iter(data.transformed_dataset(
        [os.path.join(examples.uri, "Split-train", "*")], accessor, schema, 4, training=True,
        augmentation={"enabled": False}, image_size=32)))
    train = stored_crops(transformed_sample, "train")
    for image, class_index in zip(batch.numpy(), classes.numpy()):
        quantized = np.round(image * np.float32(255)).astype(np.uint8)
        np.testing.assert_array_equal(image, quantized.astype(np.float32) / np.float32(255))
        assert feature_value(train[quantized.tobytes()], preprocessing.CLASS_INDEX) == class_index


def _h5_layer_weights(path, layer):
    """Every array stored under one top-level layer of a Keras h5 weights file, by name."""
    arrays = {}
    with h5py.File(path, "r") as f:
        f[layer].visititems(lambda name, obj: arrays.__setitem__(name, obj[()])
                            if isinstance(obj, h5py.Dataset) else None)
    return arrays


@pytest.mark.parametrize("target_loss", ["ArcFace", "GroupAware"])
def test_warm_start_copies_backbone_weights(trained, target_loss):
    """SoftmaxCenter pretraining -> ArcFace / GroupAware fine-tuning (the original's recipe)."""
    weights_file = os.path.join(trained, trainer.WARMSTART_DIR, trainer.WARMSTART_WEIGHTS)
    stored = _h5_layer_weights(weights_file, "small_cnn")
    config = ModelConfig(loss=target_loss, backbone="small_cnn", image_size=32, embedding_size=16)
    model = build_embedding_model(config)
    loaded = trainer.warm_start(model, os.path.join(trained, "Format-Serving"))
    assert "small_cnn" in loaded and "gnap" in loaded
    backbone = model.get_layer("small_cnn")
    by_name = {w.name: w.numpy() for w in backbone.weights}
    assert len(stored) == len(by_name) > 10
    for name, value in stored.items():
        matches = [v for n, v in by_name.items() if name.endswith(n.split("/", 1)[-1])]
        assert any(np.array_equal(value, v) for v in matches), name
    if target_loss == "GroupAware":
        assert "groupface" not in loaded     # a different head: freshly initialized


def test_warm_start_refuses_an_incompatible_model(trained):
    config = ModelConfig(loss="ArcFace", backbone="small_cnn", image_size=32,
                         embedding_size=8)
    model = build_embedding_model(config)
    loaded = trainer.warm_start(model, os.path.join(trained, "Format-Serving"))
    assert "embedding_fc" not in loaded      # shape mismatch skipped, backbone still loaded
    with pytest.raises(FileNotFoundError):
        trainer.warm_start(model, "/nonexistent/Format-Serving")


def test_tensorboard_logs_loss_accuracy_recall_and_learning_rate(trained):
    """The ModelRun holds per-epoch scalars; Recall@1 equals what the model config recorded."""
    run_dir = os.path.join(os.path.dirname(trained), "model_run", "1")
    scalars = {}     # Keras writes "val_*" logs to validation/ without the prefix
    for writer in ("train", "validation"):
        for event_file in tf.io.gfile.glob(os.path.join(run_dir, writer, "events.out.*")):
            for event in tf.compat.v1.train.summary_iterator(event_file):
                for value in event.summary.value:
                    scalars.setdefault(f"{writer}/{value.tag}", []).append(
                        float(tf.make_ndarray(value.tensor)))
    for tag in ("train/epoch_loss", "train/epoch_accuracy", "train/epoch_learning_rate",
                "validation/epoch_recall@1", "validation/epoch_recall@1/north"):
        assert len(scalars.get(tag, [])) == TINY_TRAINING["epochs"], (tag, sorted(scalars))
    history = export.read_model_config(os.path.join(trained, "Format-Serving"))["recall_history"]
    np.testing.assert_allclose(scalars["validation/epoch_recall@1"],
                               [entry["overall"]["recall@1"] for entry in history], rtol=1e-6)
    # Cosine decay from 2e-3 over 8 steps (36 images, batch 8), logged after steps 4 and 8.
    peak = TINY_TRAINING["learning_rate"]
    expected = [peak * 0.5 * (1 + np.cos(np.pi * step / 8)) for step in (4, 8)]
    np.testing.assert_allclose(scalars["train/epoch_learning_rate"], expected, atol=1e-7)


def test_run_fn_warm_starts_from_a_base_model_with_sgd_mixed_precision_and_accumulation(
        trained, transformed_sample, tmp_path):
    """The two-stage recipe through run_fn itself (the Trainer's base_model input). With a zero
    learning rate every trainable backbone weight must still be the base model's after training,
    which also runs the SGD + step schedule, mixed precision and gradient accumulation paths."""
    config = {**TINY_TRAINING, "loss": "ArcFace", "learning_rate": 0.0, "optimizer": "sgd",
              "schedule": "step", "mixed_precision": True, "accumulation_steps": 2, "epochs": 1,
              "checkpoint_every_steps": 100}
    model_uri = run_trainer(transformed_sample, str(tmp_path), config,
                            base_model_uri=trained)
    base = _h5_layer_weights(os.path.join(trained, trainer.WARMSTART_DIR,
                                          trainer.WARMSTART_WEIGHTS), "small_cnn")
    tuned = _h5_layer_weights(os.path.join(model_uri, trainer.WARMSTART_DIR,
                                           trainer.WARMSTART_WEIGHTS), "small_cnn")
    trainable = [name for name in base if "moving" not in name]
    assert len(trainable) > 5 and set(base) == set(tuned)
    for name in trainable:
        np.testing.assert_array_equal(tuned[name], base[name], err_msg=name)
    summary = export.read_model_config(os.path.join(model_uri, "Format-Serving"))
    assert summary["loss"] == "ArcFace" and summary["total_steps"] == 4


KILLER = """
import os, signal, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow as tf
original = tf.keras.callbacks.BackupAndRestore._backup
def backup_then_die(self, epoch, batch=0):
    original(self, epoch, batch)
    if int(self.model.optimizer.iterations.numpy()) >= 4:
        os.kill(os.getpid(), signal.SIGKILL)      # killed right after the step-4 backup
tf.keras.callbacks.BackupAndRestore._backup = backup_then_die
from tests.trainer_helpers import run_trainer
run_trainer({paths!r}, {out!r}, {config!r})
"""


@pytest.mark.slow
def test_killed_trainer_resumes_from_its_last_checkpoint(transformed_sample, tmp_path):
    config = {**TINY_TRAINING, "epochs": 3}           # 36 images / batch 8 = 4 steps per epoch
    script = KILLER.format(paths=transformed_sample, out=str(tmp_path), config=config)
    killed = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not os.path.exists(os.path.join(tmp_path, "model", "Format-Serving"))

    model_uri = run_trainer(transformed_sample, str(tmp_path), config)
    summary = export.read_model_config(os.path.join(model_uri, "Format-Serving"))
    assert summary["total_steps"] == 12
    assert summary["resumed_from_step"] == 4          # 8 of 12 steps run, not 12
    assert not os.listdir(os.path.join(tmp_path, "resume"))   # backup removed when done
