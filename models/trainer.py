"""TFX Trainer entry point: `run_fn` (Trainer(run_fn="models.trainer.run_fn", custom_config=...)).

custom_config carries ModelConfig fields (loss, backbone, embedding_size, ...) and TrainingConfig
fields (batch size, optimizer, schedule, epochs, mixed precision, accumulation, distribution, ...),
all defaulting to the original's values; any other key (but the pipeline's code_version) is refused,
and check_training_settings applies the same checks when the pipeline is built. The number of
identities comes from the Transform's identity vocabulary, never from a constant.

Outputs in the Model artifact: the SavedModel (models/export.py) and `warmstart/embedding.h5`, the
embedding network's weights by layer name, which a later Trainer loads from `base_model`.
TensorBoard logs (loss, accuracy, eval Recall@1 overall and per group, learning rate) go to the
ModelRun artifact. A killed Trainer resumes from its last backup (every `checkpoint_every_steps`)
when rerun with the same inputs and config.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx_v1

from core.features import OVERALL
from core.recall import recall_at_k
from core.settings.base import refuse_unknown
from core.settings.model import ModelConfig
from core.settings.training import TrainingConfig, check_batch_split
from models import backbones, data, export, preprocessing
from models.face_model import EMBEDDING, FaceTrainingModel, build_embedding_model
from models.layers import l2_normalize

keras = tf.keras
WARMSTART_DIR = "warmstart"
WARMSTART_WEIGHTS = "embedding.h5"
MODEL_SETTINGS = frozenset(f.name for f in dataclasses.fields(ModelConfig))
TRAINING_SETTINGS = frozenset(f.name for f in dataclasses.fields(TrainingConfig))
# Keys the pipeline adds to the Trainer's custom_config that are not settings: the code fingerprint,
# and the job settings of TFX's Vertex Trainer extension (multi-node training), which run_fn receives
# with the rest of custom_config.
_VERTEX = tfx_v1.extensions.google_cloud_ai_platform
PIPELINE_KEYS = frozenset({"code_version", _VERTEX.ENABLE_VERTEX_KEY, _VERTEX.VERTEX_REGION_KEY,
                           _VERTEX.TRAINING_ARGS_KEY, _VERTEX.JOB_ID_KEY, _VERTEX.LABELS_KEY,
                           _VERTEX.ENABLE_UCAIP_KEY, _VERTEX.UCAIP_REGION_KEY})


def configs_from_settings(settings: Dict[str, Any], image_size: Optional[int] = None
                          ) -> Tuple[ModelConfig, TrainingConfig]:
    """The Trainer's custom_config (ModelConfig and TrainingConfig fields, plus PIPELINE_KEYS)
    -> the two configs. Unknown keys are refused; `image_size`, when given, replaces the
    setting (run_fn takes it from the Transform's output)."""
    refuse_unknown(settings, MODEL_SETTINGS | TRAINING_SETTINGS | PIPELINE_KEYS, "Trainer settings")
    model_values = {k: v for k, v in settings.items() if k in MODEL_SETTINGS}
    if image_size is not None:
        model_values["image_size"] = int(image_size)
    training_values = {k: v for k, v in settings.items() if k in TRAINING_SETTINGS}
    model_config = ModelConfig.from_dict(model_values, "Trainer settings")
    training_config = TrainingConfig.from_dict(training_values, "Trainer settings")
    if training_config.mixed_precision and model_config.backbone.lower() in backbones.FLOAT32_ONLY:
        raise ValueError(
            f"Trainer setting mixed_precision=true cannot be used with backbone "
            f"{model_config.backbone!r}: fine-tuning it under mixed_float16 gave NaN losses within a "
            f"few steps (tests/test_pretrained_backbone.py), so it trains in float32 only")
    return model_config, training_config


def check_training_settings(settings: Dict[str, Any], replicas: Optional[int] = None) -> None:
    """Raises ValueError for settings the Trainer would refuse, before any pipeline runs:
    unknown keys (with the closest known names), values the configs refuse, and a batch that
    does not split over `replicas` (when given) and into accumulation_steps micro-batches."""
    # Before the configs are built: TrainingConfig's own check cannot name the replicas (the
    # configs then refuse unknown keys, naming the closest known).
    defaults = {f.name: f.default for f in dataclasses.fields(TrainingConfig)}
    check_batch_split(settings.get("batch_size", defaults["batch_size"]),
                      settings.get("accumulation_steps", defaults["accumulation_steps"]), replicas)
    configs_from_settings(settings)


def resolve_distribution(distribution: str, tf_config: Optional[str], gpus: int) -> str:
    """auto: several workers in TF_CONFIG -> multi_worker; several GPUs -> mirrored; else
    one_device. Other values are returned as they are."""
    if distribution != "auto":
        return distribution
    cluster = json.loads(tf_config or "{}").get("cluster", {})
    if len(cluster.get("worker", [])) + len(cluster.get("chief", [])) > 1:
        return "multi_worker"
    return "mirrored" if gpus > 1 else "one_device"


def choose_strategy(distribution: str) -> tf.distribute.Strategy:
    distribution = resolve_distribution(distribution, os.environ.get("TF_CONFIG"),
                                        len(tf.config.list_logical_devices("GPU")))
    if distribution == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if distribution == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """0 -> `target` linearly over `warmup_steps` optimizer steps, then `after` (a schedule of the
    step, or a constant): the warm-up of the step and constant schedules (cosine has its own,
    with the same ramp)."""

    def __init__(self, target: float, warmup_steps: int, after):
        self.target, self.warmup_steps, self.after = float(target), int(warmup_steps), after

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        after = self.after(step) if callable(self.after) else self.after
        ramp = self.target * step / float(self.warmup_steps)
        return tf.where(step < self.warmup_steps, ramp, tf.cast(after, tf.float32))

    def get_config(self):
        return {"target": self.target, "warmup_steps": self.warmup_steps,
                "after": keras.optimizers.schedules.serialize(self.after)
                if callable(self.after) else self.after}


def learning_rate_schedule(config: TrainingConfig, total_steps: int, steps_per_epoch: int):
    """The learning rate: a schedule of the optimizer step, or a constant. `warmup_epochs` ramps
    every schedule up from 0 (cosine then decays over the steps after the warm-up; step keeps its
    drops at 50 % and 75 % of all steps)."""
    warmup = int(config.warmup_epochs * steps_per_epoch)
    if config.schedule == "cosine":
        decay_steps = max(1, total_steps - warmup)
        if warmup:
            return keras.optimizers.schedules.CosineDecay(
                0.0, decay_steps, warmup_target=config.learning_rate, warmup_steps=warmup)
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps)
    if config.schedule == "step":   # x0.1 at 50 % and 75 % of training
        rate = keras.optimizers.schedules.PiecewiseConstantDecay(
            [int(total_steps * 0.5), int(total_steps * 0.75)],
            [config.learning_rate, config.learning_rate * 0.1, config.learning_rate * 0.01])
    else:
        rate = config.learning_rate
    return LinearWarmup(config.learning_rate, warmup, rate) if warmup else rate


def make_optimizer(config: TrainingConfig, total_steps: int, steps_per_epoch: int):
    rate = learning_rate_schedule(config, total_steps, steps_per_epoch)
    decay = config.weight_decay or None
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(rate, momentum=config.momentum, nesterov=True,
                                         weight_decay=decay)
    elif config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(rate, weight_decay=config.weight_decay or 1e-4)
    else:
        optimizer = keras.optimizers.Adam(rate, weight_decay=decay)
    if config.mixed_precision:
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer


def embed_dataset(embedding_model, dataset) -> Dict[str, np.ndarray]:
    """Normalized embeddings, labels and groups of a features dataset (one pass)."""
    embed = tf.function(lambda images: l2_normalize(
        embedding_model(images, training=False)[EMBEDDING]), reduce_retracing=True)
    embeddings, labels, groups = [], [], []
    for features in dataset:
        embeddings.append(embed(features[preprocessing.IMAGE]).numpy())
        labels.append(np.reshape(features[preprocessing.LABEL].numpy(), [-1]))
        groups.append(np.reshape(features[preprocessing.GROUP].numpy(), [-1]))
    return {"embeddings": np.concatenate(embeddings), "labels": np.concatenate(labels),
            "groups": np.array([g.decode("utf-8") for g in np.concatenate(groups)])}


class RecallCallback(keras.callbacks.Callback):
    """Validation = Recall@1 on the eval split's unseen identities, overall and per group."""

    def __init__(self, embedding_model, dataset_fn, every_epochs: int):
        super().__init__()
        self.embedding_model = embedding_model
        self.dataset_fn = dataset_fn
        self.every_epochs = max(1, int(every_epochs))
        self.history: List[Dict[str, Any]] = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_epochs:
            self.report_progress(epoch, logs, None)
            return
        embedded = embed_dataset(self.embedding_model, self.dataset_fn())
        result = recall_at_k(embedded["embeddings"], embedded["labels"], embedded["groups"],
                             ks=(1,))
        self.history.append({"epoch": epoch + 1, **result})
        if logs is not None:
            for name, entry in result.items():
                if entry["recall@1"] is not None:
                    key = "val_recall@1" if name == OVERALL else f"val_recall@1/{name}"
                    logs[key] = entry["recall@1"]
        logging.info("epoch %d: eval Recall@1 %s", epoch + 1,
                     {k: v["recall@1"] for k, v in result.items()})
        self.report_progress(epoch, logs, result[OVERALL]["recall@1"])

    def report_progress(self, epoch, logs, recall):
        """One line per epoch on the `ffem.progress` logger (the local runner's console, see
        pipeline/progress.py): epoch n/N, training loss, validation Recall@1 when computed."""
        import logging as python_logging

        loss = (logs or {}).get("loss")
        python_logging.getLogger("ffem.progress").info(
            "epoch %d/%s: loss %s, validation Recall@1 %s", epoch + 1,
            (self.params or {}).get("epochs", "?"), "n/a" if loss is None else f"{loss:.4f}",
            "n/a" if recall is None else f"{recall:.3f}")


class LearningRateLogger(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        rate = optimizer.learning_rate
        if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
            rate = rate(optimizer.iterations)
        if logs is not None:
            logs["learning_rate"] = float(tf.keras.backend.get_value(rate))


class ResumeTracker(keras.callbacks.Callback):
    """Records the optimizer step training starts from (non-zero after a resume). Must come after
    BackupAndRestore, which restores the state in its on_train_begin."""

    def __init__(self):
        super().__init__()
        self.initial_step = 0

    def on_train_begin(self, logs=None):
        self.initial_step = int(self.model.optimizer.iterations.numpy())
        if self.initial_step:
            logging.info("Resuming training from step %d (backup of an interrupted run)",
                         self.initial_step)


def resume_directory(fn_args, custom_config: Dict[str, Any], root: Optional[str]) -> str:
    """A backup location stable across reruns with the same inputs and config.

    A rerun of a killed Trainer gets new output URIs, so the backup cannot live there; it is keyed
    by what determines the training instead.
    """
    key = hashlib.sha256(json.dumps({
        "train": sorted(fn_args.train_files), "transform": fn_args.transform_output,
        "base_model": fn_args.base_model, "train_steps": fn_args.train_steps,
        "config": custom_config}, sort_keys=True, default=str).encode()).hexdigest()[:16]
    if root is None:
        # model_run_dir is <pipeline_root>/<Trainer node>/model_run/<execution id>
        root = os.path.join(os.path.dirname(os.path.dirname(fn_args.model_run_dir)), "resume")
    return os.path.join(root, key)


def _matching_layers(h5_path: str, model: keras.Model) -> List[str]:
    """Top-level layers whose name and weight shapes match the weights file: what gets loaded."""
    import h5py

    matching = []
    with h5py.File(h5_path, "r") as f:
        stored = {name.decode() if isinstance(name, bytes) else name
                  for name in f.attrs["layer_names"]}
        for layer in model.layers:
            if layer.name not in stored or not layer.weights:
                continue
            group = f[layer.name]
            names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
            shapes = [tuple(group[n].shape) for n in names]
            # Keras h5 files store trainable weights first, then the others.
            ordered = layer.trainable_weights + layer.non_trainable_weights
            if shapes == [tuple(w.shape) for w in ordered]:
                matching.append(layer.name)
    return sorted(matching)


def warm_start(embedding_model: keras.Model, base_model_dir: str) -> List[str]:
    """Loads the base model's embedding weights by layer name; returns the layers loaded."""
    weights = os.path.join(os.path.dirname(base_model_dir.rstrip("/")), WARMSTART_DIR,
                           WARMSTART_WEIGHTS)
    if not tf.io.gfile.exists(weights):
        raise FileNotFoundError(f"base model {base_model_dir} has no {WARMSTART_DIR}/"
                                f"{WARMSTART_WEIGHTS}; it was not trained by this Trainer")
    with tempfile.TemporaryDirectory() as scratch:
        local = os.path.join(scratch, WARMSTART_WEIGHTS)   # h5py reads local files only
        tf.io.gfile.copy(weights, local, overwrite=True)
        loaded = _matching_layers(local, embedding_model)
        embedding_model.load_weights(local, by_name=True, skip_mismatch=True)
    if not loaded:
        raise ValueError(f"warm start from {base_model_dir} loaded nothing: the architectures "
                         "share no layer (different backbone or embedding size?)")
    logging.info("Warm start from %s: loaded %s", base_model_dir, loaded)
    return loaded


def run_fn(fn_args) -> None:
    custom_config = dict(fn_args.custom_config or {})
    _, training = configs_from_settings(custom_config)
    # Checked before any data is read: a batch that does not split fails otherwise deep inside
    # the first train step's tf.split.
    strategy = choose_strategy(training.distribution)
    check_batch_split(training.batch_size, training.accumulation_steps,
                      strategy.num_replicas_in_sync)
    tf.keras.utils.set_random_seed(training.seed)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    image_size = data.crop_side(fn_args.train_files)   # the stored crops' side
    model_config, _ = configs_from_settings(custom_config, image_size=image_size)
    num_classes = tf_transform_output.vocabulary_size_by_name(
        preprocessing.IDENTITY_VOCABULARY)
    schema = tf_transform_output.transformed_metadata.schema

    train_count = data.count_records(fn_args.train_files)
    steps_per_epoch = training.steps_per_epoch or max(1, train_count // training.batch_size)
    total_steps = fn_args.train_steps or steps_per_epoch * training.epochs
    epochs = math.ceil(total_steps / steps_per_epoch)
    logging.info("Training %s/%s on %d images of %d identities: %d epochs x %d steps, batch %d",
                 model_config.loss, model_config.backbone, train_count, num_classes, epochs,
                 steps_per_epoch, training.batch_size)

    if training.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            embedding_model = build_embedding_model(
                model_config, synchronized_bn=strategy.num_replicas_in_sync > 1)
            if fn_args.base_model:
                warm_start(embedding_model, fn_args.base_model)
            model = FaceTrainingModel(embedding_model, model_config, num_classes,
                                      accumulation_steps=training.accumulation_steps,
                                      sampling_seed=training.seed)
            model.compile(optimizer=make_optimizer(training, total_steps, steps_per_epoch))

        train_dataset = data.transformed_dataset(
            fn_args.train_files, fn_args.data_accessor, schema, training.batch_size,
            training=True, seed=training.seed, augmentation=training.augmentation.to_dict(),
            image_size=image_size)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.DATA
        train_dataset = train_dataset.with_options(options)

        def eval_dataset():
            return data.evaluation_dataset(fn_args.eval_files, fn_args.data_accessor, schema,
                                           batch_size=128, image_size=image_size)

        backup_dir = resume_directory(fn_args, custom_config, training.resume_root)
        recall = RecallCallback(embedding_model, eval_dataset, training.recall_every_epochs)
        resume = ResumeTracker()
        callbacks = [
            recall, LearningRateLogger(),
            keras.callbacks.BackupAndRestore(backup_dir,
                                             save_freq=training.checkpoint_every_steps),
            resume,
            keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq="epoch"),
        ]
        model.fit(train_dataset, epochs=epochs, steps_per_epoch=steps_per_epoch,
                  callbacks=callbacks, verbose=2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if tf.io.gfile.isdir(backup_dir) and not tf.io.gfile.listdir(backup_dir):
        tf.io.gfile.rmtree(backup_dir)    # BackupAndRestore empties it when training completes

    summary = {**model_config.to_dict(), "num_classes": num_classes, "train_images": train_count,
               "total_steps": total_steps, "resumed_from_step": resume.initial_step,
               "recall_history": recall.history}
    save_outputs(embedding_model, tf_transform_output, model_config.image_size,
                 fn_args.serving_model_dir, summary)


def _is_chief() -> bool:
    """The chief, or worker 0 of a cluster without a chief, or a process outside any cluster."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task")
    if not task or task.get("type") == "chief":
        return True
    return (task.get("type") == "worker" and task.get("index", 0) == 0
            and "chief" not in config.get("cluster", {}))


def save_outputs(embedding_model, tf_transform_output, image_size: int, serving_model_dir: str,
                 summary: Dict[str, Any]) -> None:
    """SavedModel + warm-start weights. Under multi-worker training every worker must save (the
    save runs collectives), but only the chief writes to the artifact; the others to a scratch dir."""
    with tempfile.TemporaryDirectory() as scratch:
        target = serving_model_dir if _is_chief() else os.path.join(scratch, "model",
                                                                    "Format-Serving")
        export.export_saved_model(embedding_model, tf_transform_output, image_size, target,
                                  summary)
        warm_dir = os.path.join(os.path.dirname(target.rstrip("/")), WARMSTART_DIR)
        tf.io.gfile.makedirs(warm_dir)
        local = os.path.join(scratch, WARMSTART_WEIGHTS)
        embedding_model.save_weights(local)
        tf.io.gfile.copy(local, os.path.join(warm_dir, WARMSTART_WEIGHTS), overwrite=True)
