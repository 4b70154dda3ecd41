"""Partial FC under MirroredStrategy on two logical CPUs vs one device, in a fresh process (the logical
devices must be set before TensorFlow starts). Used by tests/test_partial_fc.py.

    python -m tests.partial_fc_check --out result.npz

For each variant (loss, optimizer, accumulation steps), the same initial weights train STEPS steps
on the same global batches on one device and on 2 replicas; every weight (class centers, their
lazy optimizer state, the embedding layer) is saved for both, with the initial values.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from models.face_model import FaceTrainingModel, ModelConfig  # noqa: E402

keras = tf.keras
IMAGE_SIZE, EMBEDDING, NUM_CLASSES, GLOBAL_BATCH, STEPS, SAMPLE_RATE = 6, 8, 40, 8, 3, 0.25
VARIANTS = (("ArcFace", "sgd", 1), ("SubCenterArcFace", "adam", 2))


def embedding_model():
    """A batch-independent network: the replicas' split of the batch cannot change the gradient."""
    image = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    embedding = keras.layers.Dense(EMBEDDING, name="fc")(keras.layers.Flatten()(image))
    return keras.Model(image, {"embedding": embedding})


def build(strategy, loss, optimizer, accumulation, initial=None):
    with strategy.scope():
        config = ModelConfig(loss=loss, embedding_size=EMBEDDING, image_size=IMAGE_SIZE,
                             sample_rate=SAMPLE_RATE)
        model = FaceTrainingModel(embedding_model(), config, NUM_CLASSES,
                                  accumulation_steps=accumulation, sampling_seed=7)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)
                      if optimizer == "sgd" else keras.optimizers.Adam(0.01))
        if initial is not None:
            model.set_weights(initial)
    return model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(GLOBAL_BATCH * STEPS, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, size=GLOBAL_BATCH * STEPS).astype(np.int64)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(GLOBAL_BATCH)
    dataset = dataset.with_options(options)
    one_device = tf.distribute.OneDeviceStrategy("/cpu:0")
    two_devices = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    arrays = {"labels": labels}
    for loss, optimizer, accumulation in VARIANTS:
        variant = f"{loss}-{optimizer}-{accumulation}"
        one = build(one_device, loss, optimizer, accumulation)
        initial = one.get_weights()
        two = build(two_devices, loss, optimizer, accumulation, initial)
        assert two.distribute_strategy.num_replicas_in_sync == 2
        for model in (one, two):
            model.fit(dataset, epochs=1, verbose=0, shuffle=False)
        for weight, a, b, start in zip(one.weights, one.get_weights(), two.get_weights(), initial):
            name = weight.name.split(":")[0]
            arrays[f"{variant}|{name}|one"], arrays[f"{variant}|{name}|two"] = a, b
            arrays[f"{variant}|{name}|initial"] = start
    np.savez(args.out, **arrays)


if __name__ == "__main__":
    main()
