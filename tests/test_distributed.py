"""tf.distribute proven on CPU: MirroredStrategy over two logical CPUs, gradient accumulation,
and MultiWorkerMirroredStrategy with two local worker processes."""

import numpy as np
import pytest
import tensorflow as tf

from models.face_model import FaceTrainingModel, ModelConfig
from tests.distributed_runs import run_check, two_local_workers

keras = tf.keras


@pytest.mark.slow
def test_mirrored_on_two_cpus_makes_the_same_update_as_one_device(tmp_path):
    """Same initial weights, same global batch of 8: one device vs 2 replicas x 4.

    Checks loss scaling by the global batch, gradient all-reduce, synchronized batch statistics,
    the all-gathered center update (SoftmaxCenter) and GroupFace's global mean (GroupAware).
    BN moving statistics are not compared: they are not part of the gradient update.
    """
    arrays = mirrored_steps(tmp_path, ["SoftmaxCenter:1", "GroupAware:1"])
    names = sorted({k.rsplit("|", 1)[0] for k in arrays.files})
    assert any("centers" in n for n in names) and any("groupface" in n for n in names)
    assert_same_update(arrays)


def mirrored_steps(tmp_path, variants):
    """The arrays tests/distributed_check.py saves for one step of each variant on one device and on
    two logical CPUs."""
    out = tmp_path / "mirrored.npz"
    process = run_check(["mirrored", "--variants", *variants, "--out", str(out)])
    _, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]
    return np.load(out)


def assert_same_update(arrays):
    names = sorted({k.rsplit("|", 1)[0] for k in arrays.files})
    for name in names:
        one, two, initial = (arrays[f"{name}|{which}"] for which in ("one", "two", "initial"))
        change = np.abs(one - initial).max()
        assert np.abs(one - two).max() <= 1e-3 * change + 1e-6, name
    moved = [np.abs(arrays[f"{n}|one"] - arrays[f"{n}|initial"]).max() for n in names]
    assert max(moved) > 1e-3            # the step really changed the weights


def _dense_embedding_model(image_size=8):
    """A batch-independent embedding network, so that micro-batching cannot change the gradient."""
    image = keras.Input((image_size, image_size, 3))
    embedding = keras.layers.Dense(6, name="fc")(keras.layers.Flatten()(image))
    return keras.Model(image, {"embedding": embedding})


@pytest.mark.parametrize("loss", ["AngularMargin", "SoftmaxCenter"])
def test_gradient_accumulation_averages_micro_batches(loss):
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(8, 8, 8, 3)).astype(np.float32)
    labels = rng.integers(0, 4, size=8)
    results = {}
    for steps in (1, 2, 4):
        tf.keras.utils.set_random_seed(1)
        config = ModelConfig(loss=loss, embedding_size=6, image_size=8, center_alpha=0.5)
        model = FaceTrainingModel(_dense_embedding_model(), config, 4, accumulation_steps=steps)
        model.compile(optimizer=keras.optimizers.SGD(0.05))
        model.fit(images, labels, batch_size=8, epochs=1, verbose=0, shuffle=False)
        results[steps] = model.get_weights()
    changed = False
    for full, two, four in zip(results[1], results[2], results[4]):
        np.testing.assert_allclose(two, full, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(four, full, rtol=1e-4, atol=1e-6)
        changed |= not np.allclose(full, 0)
    assert changed


@pytest.mark.slow
def test_multi_worker_mirrored_two_local_workers_end_with_equal_weights(tmp_path):
    first, second = two_local_workers(tmp_path, "SoftmaxCenter")
    assert "centers" in first.files
    assert np.abs(first["centers"]).max() > 0      # centers were updated on both workers
