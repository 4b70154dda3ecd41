"""Runs FaceTrainingModel steps under tf.distribute in a fresh process (logical devices and TF_CONFIG
must be set before TensorFlow starts). Used by tests/test_distributed.py.

    python -m tests.distributed_check mirrored --loss SoftmaxCenter --out result.npz
    TF_CONFIG=... python -m tests.distributed_check worker --loss AngularMargin --out w0.npz
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from models.face_model import FaceTrainingModel, ModelConfig, build_embedding_model  # noqa: E402

keras = tf.keras
IMAGE_SIZE, NUM_CLASSES, GLOBAL_BATCH, STEPS = 32, 6, 8, 1
WORKER_STEPS = 3       # the two-process run trains a few steps


# Backbones other than the small CNN: their ModelConfig settings (face-api's network takes 150 x 150
# crops and gives a 128-d descriptor).
BACKBONE_SETTINGS = {"small_cnn": dict(image_size=IMAGE_SIZE, embedding_size=16),
                     "face_recognition_net": dict(image_size=150, embedding_size=128,
                                                  pooling="average")}


def data(seed=0, steps=STEPS, image_size=IMAGE_SIZE):
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(GLOBAL_BATCH * steps, image_size, image_size, 3)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, size=GLOBAL_BATCH * steps).astype(np.int64)
    return images, labels


def build(strategy, loss, initial_weights=None, accumulation=1, backbone="small_cnn"):
    settings = BACKBONE_SETTINGS[backbone]
    with strategy.scope():
        config = ModelConfig(loss=loss, backbone=backbone, num_groups=3, group_intermediate=8,
                             **settings)
        synchronized = strategy.num_replicas_in_sync > 1
        model = FaceTrainingModel(build_embedding_model(config, synchronized_bn=synchronized),
                                  config, NUM_CLASSES, accumulation_steps=accumulation)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
        model(tf.zeros([1, settings["image_size"], settings["image_size"], 3]))
        if initial_weights is not None:
            model.set_weights(initial_weights)
    return model


def train(model, images, labels):
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    model.fit(dataset.with_options(options), epochs=1, verbose=0, shuffle=False)
    return model


def flat_state(model):
    state = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    if model.centers is not None:
        state["centers"] = model.centers.numpy()
    return state


def mirrored(variants, out):
    """One step on one device and on two logical CPUs (MirroredStrategy), from the same weights."""
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    arrays = {}
    # One strategy object for all variants: collective instance keys are allocated per strategy.
    one_device = tf.distribute.OneDeviceStrategy("/cpu:0")
    two_devices = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for variant in variants:
        loss, accumulation, backbone = (variant.split(":") + ["small_cnn"])[:3]
        images, labels = data(image_size=BACKBONE_SETTINGS[backbone]["image_size"])
        one = build(one_device, loss, accumulation=int(accumulation), backbone=backbone)
        initial = one.get_weights()
        two = build(two_devices, loss, initial, int(accumulation), backbone)
        assert two.distribute_strategy.num_replicas_in_sync == 2
        train(one, images, labels)
        train(two, images, labels)
        trainable = {w.name for w in one.trainable_weights}
        for i, (w, a, b, start) in enumerate(zip(one.weights, one.get_weights(), two.get_weights(),
                                                 initial)):
            if w.name in trainable:
                arrays[f"{variant}|{w.name}|one"], arrays[f"{variant}|{w.name}|two"] = a, b
                arrays[f"{variant}|{w.name}|initial"] = start
        if one.centers is not None:
            arrays[f"{variant}|centers|one"] = one.centers.numpy()
            arrays[f"{variant}|centers|two"] = two.centers.numpy()
            arrays[f"{variant}|centers|initial"] = np.zeros_like(one.centers.numpy())
    np.savez(out, **arrays)


def worker(loss, out, backbone="small_cnn"):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    images, labels = data(steps=WORKER_STEPS, image_size=BACKBONE_SETTINGS[backbone]["image_size"])
    model = build(strategy, loss, backbone=backbone)
    # Same seeded initial weights on every worker (broadcast happens on the first step too).
    train(model, images, labels)
    np.savez(out, **flat_state(model))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["mirrored", "worker"])
    parser.add_argument("--loss", default="AngularMargin", help="worker mode: the loss")
    parser.add_argument("--backbone", default="small_cnn", choices=sorted(BACKBONE_SETTINGS),
                        help="worker mode: the backbone")
    parser.add_argument("--variants", nargs="+", default=["AngularMargin:1"],
                        help="mirrored mode: LOSS:ACCUMULATION_STEPS[:BACKBONE] ...")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    tf.keras.utils.set_random_seed(0)
    if args.mode == "mirrored":
        mirrored(args.variants, args.out)
    else:
        worker(args.loss, args.out, args.backbone)


if __name__ == "__main__":
    main()
