"""Partial FC (models/partial_fc.py): the sampling, the sampled margin logits against NumPy written from
the ArcFace/CosFace formulas, the gradient's rows, the lazy optimizer update against NumPy written
from the SGD (Nesterov momentum) and Adam rules, the full head at sample_rate 1, and
MirroredStrategy on two logical CPUs against one device."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from models import layers, partial_fc
from models.face_model import FaceTrainingModel, ModelConfig, head_logits
from tests.conftest import REPO_ROOT

keras = tf.keras
C, D, B, IMAGE = 40, 8, 16, 4


def np_normalize(x, axis=-1):
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


def np_margin_logits(cosine, labels, loss, margin, scale):
    """ArcFace: target s·cos(θ+m) while θ + m < π, else s·(cos θ − m·sin m); CosFace: s·(cos θ − m);
    other classes s·cos θ; cos θ clipped to ±(1 − 1e-6) as models/losses.py states."""
    cosine = np.clip(cosine.astype(np.float64), -1 + 1e-6, 1 - 1e-6)
    out = scale * cosine
    for i, y in enumerate(labels):
        if loss == "CosFace":
            out[i, y] = scale * (cosine[i, y] - margin)
        else:
            theta = math.acos(cosine[i, y])
            out[i, y] = scale * (math.cos(theta + margin) if theta + margin < math.pi
                                 else cosine[i, y] - margin * math.sin(margin))
    return out


def sample(labels, num_classes=C, num_sample=10, seed=(1, 2)):
    return partial_fc.sample_classes(tf.constant(labels), num_classes, num_sample,
                                     tf.constant(seed, tf.int64)).numpy()


def head(subcenters=1, num_classes=C):
    layer = partial_fc.PartialFCClassifier(num_classes, subcenters)
    layer.build((None, D))
    return layer


def dense_embedding_model():
    image = keras.Input((IMAGE, IMAGE, 3))
    return keras.Model(image, {"embedding": keras.layers.Dense(D, name="fc")(
        keras.layers.Flatten()(image))})


def batch(seed=0, size=B, num_classes=C):
    rng = np.random.default_rng(seed)
    return (rng.uniform(size=(size, IMAGE, IMAGE, 3)).astype(np.float32),
            rng.integers(0, num_classes, size=size))


# --- sampling ---------------------------------------------------------------------------------

@pytest.mark.parametrize("labels, num_sample", [([3, 3, 17, 5, 39, 0], 10), ([1, 2], 1),
                                                 (list(range(0, 40, 3)), 10), ([7], 40)])
def test_sample_keeps_every_label_and_has_max_of_positives_and_rate_columns(labels, num_sample):
    ids = sample(labels, num_sample=num_sample)
    positives = set(labels)
    assert positives <= set(ids.tolist())
    assert len(ids) == max(len(positives), num_sample)
    assert len(set(ids.tolist())) == len(ids) and np.all(np.diff(ids) > 0)      # unique, sorted
    assert ids.min() >= 0 and ids.max() < C


def test_num_sampled_is_the_rate_times_the_classes_rounded_half_up():
    assert partial_fc.num_sampled(200_000, 0.1) == 20_000
    assert partial_fc.num_sampled(40, 0.26) == 10          # 10.4
    assert partial_fc.num_sampled(40, 0.2625) == 11        # 10.5
    assert partial_fc.num_sampled(40, 0.001) == 1


def test_negatives_are_uniform_without_replacement_over_the_other_classes():
    num_classes, positives, num_sample, draws = 12, [0, 5], 5, 600
    counts = np.zeros(num_classes)
    draw = tf.function(lambda seed: partial_fc.sample_classes(tf.constant(positives), num_classes,
                                                              num_sample, seed))
    for step in range(draws):
        ids = draw(tf.constant([3, step], tf.int64)).numpy()
        assert len(ids) == num_sample and {0, 5} <= set(ids.tolist())
        counts[ids] += 1
    assert counts[0] == counts[5] == draws
    negatives = np.delete(counts, positives)
    # Each of the 10 other classes is drawn with probability 3/10: mean 180, sd ≈ 11.2.
    expected = draws * (num_sample - len(positives)) / (num_classes - len(positives))
    assert np.all(np.abs(negatives - expected) < 5 * math.sqrt(expected * 0.7))
    chi2 = ((negatives - expected) ** 2 / expected).sum()
    assert chi2 < 27.9                                     # χ²(9) at p = 0.001


def test_the_seed_decides_the_columns():
    labels = [1, 2, 3]
    np.testing.assert_array_equal(sample(labels, seed=(5, 9)), sample(labels, seed=(5, 9)))
    assert any(not np.array_equal(sample(labels, seed=(5, 9)), sample(labels, seed=(5, step)))
               for step in range(10, 13))


def test_remapped_labels_point_at_their_own_class():
    labels = np.array([3, 3, 17, 5, 39, 0])
    ids = sample(labels)
    remapped = partial_fc.remap_labels(tf.constant(ids), tf.constant(labels)).numpy()
    np.testing.assert_array_equal(ids[remapped], labels)


# --- logits and gradients ---------------------------------------------------------------------

@pytest.mark.parametrize("loss, subcenters", [("ArcFace", 1), ("CosFace", 1),
                                              ("SubCenterArcFace", 3)])
def test_sampled_logits_equal_the_full_logits_on_the_sampled_columns(loss, subcenters):
    config = ModelConfig(loss=loss, embedding_size=D, sample_rate=0.25)
    layer = head(subcenters)
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(B, D)).astype(np.float32)
    labels = rng.integers(0, C, size=B)
    ids = sample(labels)
    # float16 embeddings (mixed precision): cosines, logits and loss still float32.
    cosine = layer(tf.constant(embeddings, tf.float16), tf.constant(ids))
    logits = head_logits(config, cosine, partial_fc.remap_labels(tf.constant(ids), labels))
    assert cosine.dtype == tf.float32 and logits.dtype == tf.float32
    centers = np_normalize(layer.class_centers.numpy().astype(np.float64))      # [C, K, D]
    full_cosine = (np_normalize(embeddings.astype(np.float16).astype(np.float64))
                   @ centers.reshape(C * subcenters, D).T).reshape(B, C, subcenters).max(-1)
    full = np_margin_logits(full_cosine, labels, loss, config.loss_value("margin"),
                            config.loss_value("scale"))
    np.testing.assert_allclose(logits.numpy(), full[:, ids], rtol=1e-5, atol=3e-4)


def test_rows_not_sampled_get_no_gradient():
    config = ModelConfig(loss="SubCenterArcFace", embedding_size=D, sample_rate=0.25)
    layer = head(subcenters=3)
    rng = np.random.default_rng(2)
    embeddings = tf.constant(rng.normal(size=(B, D)).astype(np.float32))
    labels = rng.integers(0, C, size=B)
    ids = tf.constant(sample(labels))
    with tf.GradientTape() as tape:
        logits = head_logits(config, layer(embeddings, ids), partial_fc.remap_labels(ids, labels))
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            partial_fc.remap_labels(ids, labels), logits))
    gradient = tape.gradient(loss, layer.class_centers)
    assert isinstance(gradient, tf.IndexedSlices)
    dense = tf.convert_to_tensor(gradient).numpy()
    unsampled = np.setdiff1d(np.arange(C), ids.numpy())
    assert np.all(dense[unsampled] == 0)
    # Every sampled class (positive or negative) gets a gradient on its dominant sub-center.
    assert np.all(np.abs(dense[ids.numpy()]).reshape(len(ids), -1).max(axis=1) > 0)
    np.testing.assert_array_equal(partial_fc.PartialFCClassifier.rows_gradient(gradient, ids),
                                  dense[ids.numpy()])


# --- the optimizer's state ---------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: keras.optimizers.SGD(0.1, momentum=0.9),
                                  lambda: keras.optimizers.Adam(0.1)])
def test_keras_optimizers_move_rows_outside_an_indexed_slices_gradient(make):
    """Why the class centers are not given to the Keras optimizer: tf_keras 2.16's SGD (momentum)
    and Adam decay every row's state and move every row, whatever rows the gradient names."""
    optimizer, variable = make(), tf.Variable(np.ones((3, 2), np.float32))
    one_row = lambda row: tf.IndexedSlices(tf.ones([1, 2]), tf.constant([row]), tf.constant([3, 2]))
    optimizer.apply_gradients([(one_row(0), variable)])
    after_first = variable.numpy()
    optimizer.apply_gradients([(one_row(1), variable)])
    assert not np.allclose(variable.numpy()[0], after_first[0])       # row 0 not in the gradient
    np.testing.assert_array_equal(variable.numpy()[2], np.ones(2))     # never had state


def np_lazy_step(rule, rows, slots, gradient, lr, step, weight_decay=0.0, momentum=0.9,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """One step of the Keras rule on the given rows only (Nesterov momentum as tf_keras' SGD:
    v ← μv − ηg, w ← w + μv − ηg; Adam with bias correction at the global step; decoupled decay
    w ← w − ηλw first)."""
    rows = rows - rows * weight_decay * lr
    if rule == "sgd":
        return rows - lr * gradient, {}
    if rule == "momentum":
        velocity = momentum * slots["momentum"] - lr * gradient
        return rows + momentum * velocity - lr * gradient, {"momentum": velocity}
    m = beta_1 * slots["m"] + (1 - beta_1) * gradient
    v = beta_2 * slots["v"] + (1 - beta_2) * gradient ** 2
    alpha = lr * math.sqrt(1 - beta_2 ** (step + 1)) / (1 - beta_1 ** (step + 1))
    return rows - alpha * m / (np.sqrt(v) + epsilon), {"m": m, "v": v}


OPTIMIZERS = {
    "sgd": lambda rate: keras.optimizers.SGD(rate),
    "momentum": lambda rate: keras.optimizers.SGD(rate, momentum=0.9, nesterov=True),
    "adam": lambda rate: keras.optimizers.Adam(rate),
    "adamw": lambda rate: keras.optimizers.AdamW(rate, weight_decay=0.1),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_lazy_update_changes_only_the_sampled_rows_and_their_state(name):
    rate = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    optimizer = OPTIMIZERS[name](rate)
    rule = "adam" if name == "adamw" else name
    layer = head(subcenters=2)
    layer.build_optimizer_state(optimizer)
    assert sorted(layer.slots) == sorted(partial_fc.SLOTS[rule])
    weights = layer.class_centers.numpy().astype(np.float64)
    slots = {key: np.zeros_like(weights) for key in partial_fc.SLOTS[rule]}
    initial = weights.copy()
    rng = np.random.default_rng(3)
    samples = [[0, 3, 5, 9], [3, 4, 9, 20, 21], [0, 1]]
    for step, ids in enumerate(samples):
        gradient = rng.normal(size=(len(ids), 2, D)).astype(np.float32)
        apply = step < 2                                     # the third step is a skipped one
        layer.apply_rows(optimizer, tf.constant(ids), tf.constant(gradient), tf.constant(apply))
        optimizer.iterations.assign_add(1)
        if apply:
            rows, new_slots = np_lazy_step(rule, weights[ids], {k: v[ids] for k, v in slots.items()},
                                           gradient, 0.1 * 0.5 ** step, step,
                                           weight_decay=0.1 if name == "adamw" else 0.0)
            weights[ids] = rows
            for key, value in new_slots.items():
                slots[key][ids] = value
        np.testing.assert_allclose(layer.class_centers.numpy(), weights, rtol=1e-5, atol=1e-6)
        for key, value in slots.items():
            np.testing.assert_allclose(layer.slots[key].numpy(), value, rtol=1e-5, atol=1e-7)
    never = np.setdiff1d(np.arange(C), sum(samples[:2], []))
    np.testing.assert_array_equal(layer.class_centers.numpy()[never], initial[never])
    for slot in layer.slots.values():
        assert np.all(slot.numpy()[never] == 0)
    if rule != "sgd":               # row 0: state from step 1, left alone by step 2 (lazy)
        assert np.all(layer.slots[partial_fc.SLOTS[rule][0]].numpy()[0] != 0)


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_first_lazy_step_equals_the_keras_optimizer_step(name):
    """From zero state the Keras optimizer moves only the rows in the gradient: the lazy update must
    give exactly its result."""
    layer = head()
    ours, theirs = OPTIMIZERS[name](0.05), OPTIMIZERS[name](0.05)
    layer.build_optimizer_state(ours)
    reference = tf.Variable(layer.class_centers.numpy())
    ids = tf.constant([2, 7, 8, 30])
    gradient = tf.constant(np.random.default_rng(4).normal(size=(4, 1, D)).astype(np.float32))
    layer.apply_rows(ours, ids, gradient, tf.constant(True))
    theirs.apply_gradients([(tf.IndexedSlices(gradient, ids, tf.constant([C, 1, D])), reference)])
    np.testing.assert_allclose(layer.class_centers.numpy(), reference.numpy(), rtol=1e-5,
                               atol=1e-6)


class _Snapshots(keras.callbacks.Callback):
    def __init__(self, layer):
        super().__init__()
        self.layer, self.states = layer, []

    def on_train_batch_end(self, batch, logs=None):
        self.states.append({w.name: w.numpy().copy() for w in self.layer.weights})


def test_training_steps_leave_rows_not_sampled_and_their_adam_moments_unchanged():
    tf.keras.utils.set_random_seed(0)
    model = FaceTrainingModel(dense_embedding_model(),
                              ModelConfig(loss="ArcFace", embedding_size=D, image_size=IMAGE,
                                          sample_rate=0.25), C, sampling_seed=11)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    images, labels = batch(5, size=2 * 8)
    before = {w.name: w.numpy().copy() for w in model.head.weights}
    fc_before = model.embedding_model.get_weights()
    snapshots = _Snapshots(model.head)
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0, shuffle=False,
              callbacks=[snapshots])
    states = [before] + snapshots.states
    for step in range(2):
        step_labels = labels[8 * step:8 * step + 8]
        sampled = sample(step_labels, num_sample=10, seed=(11, step))
        for name in before:
            old, new = states[step][name], states[step + 1][name]
            changed = np.flatnonzero(np.abs(new - old).reshape(C, -1).max(axis=1) > 0)
            # A sampled negative whose softmax probability underflows has a zero gradient; the
            # batch's own classes always move.
            assert set(changed) <= set(sampled) and set(step_labels) <= set(changed), (step, name)
    assert not all(np.array_equal(a, b) for a, b in
                   zip(fc_before, model.embedding_model.get_weights()))   # the optimizer's part


class _ModelSnapshots(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        self.states.append((self.model.head.class_centers.numpy().copy(),
                            self.model.embedding_model.get_weights()))

    def on_train_begin(self, logs=None):
        self.states = []
        self.on_train_batch_end(None)


def test_mixed_precision_updates_the_sampled_rows_exactly_when_the_loss_scale_step_is_applied():
    """The loss-scale optimizer skips the first steps (float16 gradients overflow at scale 2^15):
    the class centers must move exactly on the steps the rest of the model moves, stay finite, and
    only on sampled rows."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = FaceTrainingModel(dense_embedding_model(),
                                  ModelConfig(loss="CosFace", embedding_size=D, image_size=IMAGE,
                                              sample_rate=0.25), C)
        model.compile(optimizer=keras.mixed_precision.LossScaleOptimizer(
            keras.optimizers.SGD(0.1, momentum=0.9)))
        images, labels = batch(6, size=8 * 12)
        snapshots = _ModelSnapshots()
        model.fit(images, labels, batch_size=8, epochs=1, verbose=0, shuffle=False,
                  callbacks=[snapshots])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    applied = []
    for step, (before, after) in enumerate(zip(snapshots.states, snapshots.states[1:])):
        centers_moved = np.abs(after[0] - before[0]).reshape(C, -1).max(axis=1) > 0
        model_moved = any(not np.array_equal(a, b) for a, b in zip(after[1], before[1]))
        assert np.all(np.isfinite(after[0]))
        assert centers_moved.any() == model_moved, step
        if model_moved:
            applied.append(step)
            step_labels = labels[8 * step:8 * step + 8]
            assert set(step_labels) <= set(np.flatnonzero(centers_moved))
            assert centers_moved.sum() <= 10
    assert 0 < len(applied) < 12, applied           # some steps skipped, later ones applied


# --- sample_rate = 1 and the settings -----------------------------------------------------------

def test_default_sample_rate_is_the_full_softmax_head():
    config = ModelConfig(loss="ArcFace", embedding_size=D, image_size=IMAGE)
    assert config.sample_rate == 1.0
    tf.keras.utils.set_random_seed(0)
    model = FaceTrainingModel(dense_embedding_model(), config, C)
    assert type(model.head) is layers.CosineClassifier and not model.partial_fc
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    images, labels = batch(7, size=8)
    embeddings = model.embedding_model(images)["embedding"].numpy().astype(np.float64)
    weights = model.head.class_weights.numpy().astype(np.float64)                # [D, C]
    cosine = np_normalize(embeddings) @ np_normalize(weights, axis=0)
    logits = np_margin_logits(cosine, labels, "ArcFace", config.loss_value("margin"),
                              config.loss_value("scale"))
    shifted = logits - logits.max(axis=1, keepdims=True)
    expected = np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(8), labels])
    history = model.fit(images, labels, batch_size=8, epochs=1, verbose=0, shuffle=False)
    np.testing.assert_allclose(history.history["loss"][0], expected, rtol=1e-4)
    moved = np.abs(model.head.class_weights.numpy() - weights).max(axis=0) > 0
    assert moved[labels].all()                                  # the full head's own columns


@pytest.mark.parametrize("loss, optimizer", [("ArcFace", "momentum"), ("SubCenterArcFace", "adam")])
def test_sampling_every_class_trains_exactly_like_the_full_softmax_head(loss, optimizer):
    """rate 0.99 of 40 classes rounds to 40: the Partial FC path over all columns, from the same
    weights, makes the same two steps as today's head (its lazy update of every row = the dense)."""
    models = {}
    for rate in (1.0, 0.99):
        tf.keras.utils.set_random_seed(0)
        config = ModelConfig(loss=loss, embedding_size=D, image_size=IMAGE, sample_rate=rate)
        models[rate] = FaceTrainingModel(dense_embedding_model(), config, C)
        models[rate].compile(optimizer=OPTIMIZERS[optimizer](0.05))
    full, partial = models[1.0], models[0.99]
    assert partial.partial_fc and partial.num_sample == C
    partial.embedding_model.set_weights(full.embedding_model.get_weights())
    subcenters = full.head.subcenters
    partial.head.class_centers.assign(
        full.head.class_weights.numpy().T.reshape(C, subcenters, D))
    images, labels = batch(8, size=16)
    for model in (full, partial):
        model.fit(images, labels, batch_size=8, epochs=1, verbose=0, shuffle=False)
    np.testing.assert_allclose(partial.head.class_centers.numpy(),
                               full.head.class_weights.numpy().T.reshape(C, subcenters, D),
                               rtol=1e-4, atol=1e-6)
    for a, b in zip(partial.embedding_model.get_weights(), full.embedding_model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("rate", [0, -0.1, 1.5, True, "0.5", None])
def test_sample_rate_outside_zero_one_is_refused(rate):
    with pytest.raises(ValueError, match="sample_rate"):
        ModelConfig(sample_rate=rate)


def test_partial_fc_refuses_softmax_center_and_optimizers_it_cannot_follow():
    with pytest.raises(ValueError, match="sample_rate < 1.*SoftmaxCenter"):
        ModelConfig(loss="SoftmaxCenter", sample_rate=0.5)
    config = ModelConfig(loss="ArcFace", embedding_size=D, image_size=IMAGE, sample_rate=0.5)
    for optimizer, reason in ((keras.optimizers.RMSprop(), "RMSprop"),
                              (keras.optimizers.SGD(clipnorm=1.0), "clipnorm"),
                              (keras.optimizers.Adam(amsgrad=True), "amsgrad")):
        model = FaceTrainingModel(dense_embedding_model(), config, C)
        with pytest.raises(ValueError, match=reason):
            model.compile(optimizer=optimizer)


# --- MirroredStrategy ---------------------------------------------------------------------------

def test_mirrored_on_two_cpus_makes_the_same_partial_fc_steps_as_one_device(tmp_path):
    """Three steps, SGD (Nesterov) and Adam with 2 accumulation micro-batches: the class centers,
    their lazy state and the embedding layer end equal on 2 replicas and on one device, which needs
    every replica to sample the same columns from the global batch's labels."""
    out = tmp_path / "partial_fc.npz"
    result = subprocess.run([sys.executable, "-m", "tests.partial_fc_check", "--out", str(out)],
                            cwd=REPO_ROOT, env=dict(os.environ), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    arrays = np.load(out)
    names = sorted({k.rsplit("|", 1)[0] for k in arrays.files if "|" in k})
    assert any(n.endswith("class_centers_momentum") for n in names)
    assert any(n.endswith("class_centers_v") for n in names)
    for name in names:
        one, two, initial = (arrays[f"{name}|{which}"] for which in ("one", "two", "initial"))
        change = np.abs(one - initial).max()
        assert np.abs(one - two).max() <= 1e-4 * change + 1e-6, name
        if name.endswith("|class_centers"):
            moved = np.abs(one - initial).reshape(len(one), -1).max(axis=1) > 0
            # Sampling really happened: every label moved, some classes were never sampled.
            assert moved[arrays["labels"]].all() and not moved.all(), name
