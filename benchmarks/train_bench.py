"""Training throughput: the Trainer's run_fn training step against a plain tf.keras `fit`.

Both train the same embedding network and ArcFace head on the same transformed images with the
same global batch, on this machine's CPU:

    run_fn step   FaceTrainingModel.fit over the TFX DataAccessor's dataset of transformed Examples
                  (gzip TFRecords parsed by TFXIO, uint8 crops decoded to float32), the run_fn's
                  optimizer (with augmentation on and off)
    plain fit     a functional Keras model (image, label) -> ArcFace logits, compile(loss=CE), fit on
                  the same images (the decoded crops) held in memory as float32 NumPy arrays

Throughput is images/s over `steps` timed steps after one warm-up epoch (tracing excluded); the
three cases run interleaved `repeats` times and each reports its median (a shared 2-core machine
varies by several per cent from one run to the next).
"""
from __future__ import annotations

import glob
import os
import time
from typing import Dict, List

import numpy as np
import tensorflow as tf

keras = tf.keras


class _StepTimer(keras.callbacks.Callback):
    def __init__(self, skip: int):
        super().__init__()
        self.skip, self.seen, self.start, self.end = skip, 0, None, None

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.skip:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def _data_accessor(transformed_uri: str):
    from tfx.components.trainer import fn_args_utils
    from tfx.types import standard_artifacts

    examples = standard_artifacts.Examples()
    examples.uri = transformed_uri
    examples.split_names = '["train", "eval"]'
    from tfx.components.util import tfxio_utils
    from tfx_bsl.tfxio import dataset_options  # noqa: F401  (loaded by the factory)

    return fn_args_utils.DataAccessor(
        tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact([examples], []),
        record_batch_factory=None, data_view_decode_fn=None)


def run_fn_step(transformed_uri: str, transform_graph_uri: str, config: Dict, steps: int,
                augment: bool) -> float:
    """images/s of the run_fn's own model, optimizer and input pipeline."""
    import tensorflow_transform as tft

    from models import data, preprocessing, trainer
    from models.face_model import FaceTrainingModel, build_embedding_model

    output = tft.TFTransformOutput(transform_graph_uri)
    train_files = [os.path.join(transformed_uri, "Split-train", "*")]
    size = data.crop_side(train_files)
    model_config, training = trainer.configs_from_settings(config, size)
    classes = output.vocabulary_size_by_name(preprocessing.IDENTITY_VOCABULARY)
    model = FaceTrainingModel(build_embedding_model(model_config), model_config, classes)
    model.compile(optimizer=trainer.make_optimizer(training, 10 * steps, steps))
    dataset = data.transformed_dataset(
        train_files, _data_accessor(transformed_uri), output.transformed_metadata.schema,
        training.batch_size, training=True, augmentation={"enabled": augment}, image_size=size)
    timer = _StepTimer(skip=steps)
    model.fit(dataset, epochs=2, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    return training.batch_size * (steps - 1) / (timer.end - timer.start)


def _load_crops(transformed_uri: str):
    from components.artifacts import crop_side
    from models import preprocessing

    files = sorted(glob.glob(os.path.join(transformed_uri, "Split-train", "*")))
    records = list(tf.data.TFRecordDataset(files, compression_type="GZIP"))
    size = crop_side(files)
    spec = {preprocessing.IMAGE: tf.io.FixedLenFeature([], tf.string),
            preprocessing.CLASS_INDEX: tf.io.FixedLenFeature([], tf.int64)}
    parsed = tf.io.parse_example(tf.stack(records), spec)
    return (preprocessing.decode_crops(parsed[preprocessing.IMAGE], size).numpy(),
            parsed[preprocessing.CLASS_INDEX].numpy(), size)


def plain_fit(transformed_uri: str, config: Dict, steps: int) -> float:
    """images/s of a textbook Keras fit of the same network and loss, data in memory."""
    from models import losses, trainer
    from models.face_model import EMBEDDING, build_embedding_model
    from models.layers import CosineClassifier

    images, labels, size = _load_crops(transformed_uri)
    model_config, _ = trainer.configs_from_settings(config, size)
    embedding_model = build_embedding_model(model_config)
    image = keras.Input((size, size, 3))
    label = keras.Input((), dtype=tf.int64)
    cosine = CosineClassifier(int(labels.max()) + 1)(embedding_model(image)[EMBEDDING])
    logits = keras.layers.Lambda(lambda args: losses.arcface_logits(
        args[0], args[1], model_config.loss_value("margin"),
        model_config.loss_value("scale")))([cosine, label])
    model = keras.Model([image, label], logits)
    model.compile(optimizer=keras.optimizers.Adam(config.get("learning_rate", 1e-3)),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batch = config["batch_size"]
    dataset = (tf.data.Dataset.from_tensor_slices(((images, labels), labels)).shuffle(4096)
               .repeat().batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
    timer = _StepTimer(skip=steps)
    model.fit(dataset, epochs=2, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    return batch * (steps - 1) / (timer.end - timer.start)


def run(transformed_uri: str, transform_graph_uri: str, config: Dict, steps: int = 30,
        repeats: int = 3) -> List[Dict]:
    cases = [("plain tf.keras fit (in-memory arrays)",
              lambda: plain_fit(transformed_uri, config, steps)),
             ("run_fn step, augmentation off",
              lambda: run_fn_step(transformed_uri, transform_graph_uri, config, steps,
                                  augment=False)),
             ("run_fn step, augmentation on (as trained)",
              lambda: run_fn_step(transformed_uri, transform_graph_uri, config, steps,
                                  augment=True))]
    measured = {name: [] for name, _ in cases}
    for _ in range(repeats):
        for name, measure in cases:
            measured[name].append(measure())
    rows = [{"case": name, "images_per_s": float(np.median(measured[name])),
             "runs": measured[name]} for name, _ in cases]
    for row in rows:
        row["vs_plain_fit"] = row["images_per_s"] / rows[0]["images_per_s"]
    return rows


def markdown_table(rows: List[Dict], config: Dict) -> str:
    lines = [f"| training ({config['loss']}, {config['backbone']}, batch {config['batch_size']}) "
             f"| images/s (median) | vs plain fit | every run, images/s |", "|---|---:|---:|---|"]
    lines += [f"| {r['case']} | {r['images_per_s']:.0f} | {r['vs_plain_fit']:.2f}x | "
              f"{', '.join(f'{v:.0f}' for v in r['runs'])} |" for r in rows]
    return "\n".join(lines)
