"""Each formula of models/losses.py against NumPy written from its paper."""
import math

import numpy as np
import pytest
import tensorflow as tf

from models import losses

RNG = np.random.default_rng(0)


def np_log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def np_arcface(cosine, labels, m, s):
    """Deng et al.: target s·cos(θ+m) while θ + m < π, else s·(cos θ − m·sin m); others s·cos θ."""
    out = s * cosine.astype(np.float64)
    for i, y in enumerate(labels):
        theta = math.acos(cosine[i, y])
        if theta + m < math.pi:
            out[i, y] = s * math.cos(theta + m)
        else:
            out[i, y] = s * (cosine[i, y] - m * math.sin(m))
    return out


def test_arcface_both_branches_match_the_paper():
    m, s = 0.5, 60.0
    # Targets chosen on both sides of θ = π − m (cos θ = cos(π − m) ≈ -0.8776).
    cosine = RNG.uniform(-0.99, 0.99, size=(6, 5)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 4, 0])
    cosine[0, 0], cosine[1, 1], cosine[2, 2] = 0.9, 0.1, -0.5          # θ + m < π
    cosine[3, 3], cosine[4, 4], cosine[5, 0] = -0.95, -0.99, -0.9      # θ + m ≥ π
    got = losses.arcface_logits(cosine, labels, margin=m, scale=s).numpy()
    np.testing.assert_allclose(got, np_arcface(cosine, labels, m, s), rtol=1e-5, atol=1e-4)
    # The fallback branch is really used: cos(θ+m) would differ there.
    theta = math.acos(-0.95)
    assert abs(got[3, 3] - s * math.cos(theta + m)) > 1.0


def test_arcface_target_logit_decreases_monotonically_in_theta():
    theta = np.linspace(0.0, math.pi, 2001)
    cosine = np.cos(theta).astype(np.float32)[:, None].repeat(2, axis=1)
    target = losses.arcface_logits(cosine, np.zeros(len(theta), int)).numpy()[:, 0]
    assert np.all(np.diff(target) <= 1e-3)


def test_cosface_matches_the_paper():
    cosine = RNG.uniform(-1, 1, size=(4, 7)).astype(np.float32)
    labels = np.array([3, 0, 6, 2])
    expected = 60.0 * cosine.astype(np.float64)
    expected[np.arange(4), labels] = 60.0 * (cosine[np.arange(4), labels] - 0.35)
    np.testing.assert_allclose(losses.cosface_logits(cosine, labels).numpy(), expected, rtol=1e-5)


def test_cross_entropy_is_computed_from_logits():
    logits = RNG.normal(scale=30, size=(5, 9)).astype(np.float32)   # large: softmax saturates
    labels = np.array([0, 8, 3, 3, 1])
    expected = -np_log_softmax(logits.astype(np.float64))[np.arange(5), labels]
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels).numpy(), expected,
                               rtol=1e-5, atol=1e-5)
    # Cross-entropy of probabilities (the original's bug) would give a different, bounded value.
    probs = tf.nn.softmax(logits).numpy()
    wrong = -np_log_softmax(probs.astype(np.float64))[np.arange(5), labels]
    assert np.abs(wrong - expected).max() > 1.0


@pytest.mark.parametrize("value", [1.0, -1.0, 1.0000001, -1.0000001])
@pytest.mark.parametrize("fn", [losses.arcface_logits, losses.cosface_logits])
def test_finite_values_and_gradients_at_cosine_plus_minus_one(fn, value):
    cosine = tf.Variable([[value, 0.3, -0.2], [0.1, value, 0.5]], dtype=tf.float32)
    labels = tf.constant([0, 1])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(losses.softmax_cross_entropy(fn(cosine, labels), labels))
    grad = tape.gradient(loss, cosine)
    assert np.isfinite(loss.numpy()) and np.isfinite(grad.numpy()).all()


def test_finite_gradient_when_embedding_equals_its_class_weight():
    """|cos| = 1 reached through normalization, the way it happens in training."""
    from models import layers

    head = layers.CosineClassifier(3)
    head.build((None, 4))
    weights = np.eye(4, 3).astype(np.float32) * 2.5
    head.class_weights.assign(weights)
    embedding = tf.Variable(weights[:, 1:2].T.copy())     # exactly class 1's weight direction
    with tf.GradientTape() as tape:
        cosine = head(embedding)
        loss = losses.softmax_cross_entropy(losses.arcface_logits(cosine, [1]), [1])
    grads = tape.gradient(loss, [embedding, head.class_weights])
    assert cosine.numpy()[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert all(np.isfinite(g.numpy()).all() for g in grads)


def test_center_loss_value():
    x = RNG.normal(size=(6, 4)).astype(np.float32)
    centers = RNG.normal(size=(3, 4)).astype(np.float32)
    labels = np.array([0, 2, 2, 1, 0, 0])
    expected = [0.5 * np.sum((x[i] - centers[labels[i]]) ** 2) for i in range(6)]
    np.testing.assert_allclose(losses.center_loss(x, labels, centers).numpy(), expected, rtol=1e-5)


def test_center_update_rule_of_wen_et_al():
    x = RNG.normal(size=(7, 3)).astype(np.float32)
    centers = RNG.normal(size=(5, 3)).astype(np.float32)
    labels = np.array([4, 1, 4, 4, 0, 1, 4])
    alpha = 0.5
    # Δc_j = Σ_i δ(y_i=j)(c_j − x_i) / (1 + Σ_i δ(y_i=j)), for every class j (zero when absent).
    expected = centers.astype(np.float64).copy()
    for j in range(5):
        members = [i for i in range(7) if labels[i] == j]
        delta = sum((centers[j] - x[i] for i in members), np.zeros(3)) / (1 + len(members))
        expected[j] -= alpha * delta
    ids, delta = losses.center_update(x, labels, centers)
    updated = tf.tensor_scatter_nd_sub(centers, ids.numpy()[:, None], alpha * delta).numpy()
    np.testing.assert_allclose(updated, expected, rtol=1e-5, atol=1e-6)
    assert sorted(ids.numpy()) == [0, 1, 4]


def test_self_distributed_group_labels():
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.5, 0.1, 0.4], [0.8, 0.1, 0.1]],
                     np.float32)
    k = 3
    balanced = (probs - probs.mean(axis=0)) / k + 1.0 / k      # Kim et al., eq. (5)
    expected = balanced.argmax(axis=1)
    got = losses.self_distributed_group_labels(probs).numpy()
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(expected, probs.argmax(axis=1))   # it rebalances, unlike argmax
    # A given global mean is used instead of this batch's.
    mean = np.array([0.2, 0.5, 0.3], np.float32)
    np.testing.assert_array_equal(losses.self_distributed_group_labels(probs, mean).numpy(),
                                  ((probs - mean) / k + 1 / k).argmax(axis=1))


def test_self_distributed_labels_have_no_gradient():
    probs = tf.Variable(np.full((2, 3), 1 / 3, np.float32))
    with tf.GradientTape() as tape:
        labels = losses.self_distributed_group_labels(probs)
        loss = tf.reduce_sum(tf.cast(labels, tf.float32))
    assert tape.gradient(loss, probs) is None


def _center_loss_model(num_classes=3):
    """SoftmaxCenter on a small CNN; SGD with learning rate 0 keeps every network weight fixed, so
    the embeddings a step sees can be recomputed before it."""
    from models.face_model import FaceTrainingModel, ModelConfig, build_embedding_model

    config = ModelConfig(loss="SoftmaxCenter", backbone="small_cnn", image_size=16,
                         embedding_size=4, center_alpha=0.5)
    model = FaceTrainingModel(build_embedding_model(config), config, num_classes=num_classes)
    model.compile(optimizer=tf.keras.mixed_precision.LossScaleOptimizer(
        tf.keras.optimizers.SGD(0.0)))
    model.centers.assign(RNG.normal(size=(num_classes, 4)).astype(np.float32))
    return model


def test_centers_do_not_move_on_a_step_the_loss_scale_optimizer_skips():
    """One NaN pixel makes every embedding (batch statistics) and gradient NaN under mixed
    precision: the loss-scale optimizer skips the step (and halves its scale), and the centers
    must stay as they were instead of becoming NaN for good."""
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _center_loss_model()
        images = RNG.uniform(size=(6, 16, 16, 3)).astype(np.float32)
        images[2, 5, 5, 1] = np.nan
        labels = np.array([0, 1, 2, 0, 1, 2])
        before = model.centers.numpy().copy()
        scale_before = float(model.optimizer.loss_scale)
        model.train_on_batch(images, labels)
        assert float(model.optimizer.loss_scale) == scale_before / 2      # the step was skipped
        np.testing.assert_array_equal(model.centers.numpy(), before)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")


def test_a_finite_step_updates_the_centers_by_wen_et_als_rule():
    model = _center_loss_model()
    images = RNG.uniform(size=(6, 16, 16, 3)).astype(np.float32)
    labels = np.array([0, 2, 2, 0, 0, 2])                   # class 1 absent: its center stays
    embeddings = model.embedding_model(images, training=True)["embedding"].numpy()
    centers = model.centers.numpy().astype(np.float64)
    expected = centers.copy()
    for j in range(3):
        members = embeddings[labels == j]
        delta = (len(members) * centers[j] - members.sum(axis=0)) / (1 + len(members))
        expected[j] -= 0.5 * delta
    model.train_on_batch(images, labels)
    np.testing.assert_allclose(model.centers.numpy(), expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(expected, centers)
