"""Layers of models/layers.py against NumPy, GNAP's batch independence, float32 heads."""
import numpy as np
import pytest
import tensorflow as tf

from models import layers
from models.face_model import FaceTrainingModel, ModelConfig, build_embedding_model, head_logits

keras = tf.keras
RNG = np.random.default_rng(1)


def unit(x, axis=-1):
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


def test_cosine_classifier_is_normalized_dot_product():
    head = layers.CosineClassifier(5)
    x = RNG.normal(size=(4, 6)).astype(np.float32)
    got = head(x).numpy()
    w = head.class_weights.numpy()
    np.testing.assert_allclose(got, unit(x) @ unit(w, axis=0), rtol=1e-5, atol=1e-6)


def test_subcenter_takes_the_best_of_k_subcenters():
    classes, k = 4, 3
    head = layers.CosineClassifier(classes, subcenters=k)
    x = RNG.normal(size=(5, 6)).astype(np.float32)
    got = head(x).numpy()
    w = head.class_weights.numpy()                      # column c*k + j: class c, sub-center j
    all_cos = unit(x) @ unit(w, axis=0)
    expected = np.array([[max(all_cos[i, c * k + j] for j in range(k)) for c in range(classes)]
                         for i in range(5)])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_l2_softmax_scales_the_normalized_feature():
    head = layers.L2SoftmaxClassifier(3, alpha=16.0)
    x = RNG.normal(size=(4, 5)).astype(np.float32) * 7
    got = head(x).numpy()
    kernel, bias = [v.numpy() for v in head.dense.weights]
    np.testing.assert_allclose(got, 16.0 * unit(x) @ kernel + bias, rtol=1e-5, atol=1e-5)


def test_gnap_reweighting_formula_per_image():
    f = RNG.normal(size=(3, 4, 5, 6)).astype(np.float32)
    got = layers.GlobalNormAwarePooling.reweight(tf.constant(f)).numpy()
    expected = []
    for image in f:
        norms = np.linalg.norm(image, axis=-1)                 # [h, w]
        weights = norms.mean() / norms                         # this image's mean norm
        expected.append((image * weights[..., None]).mean(axis=(0, 1)))
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-5, atol=1e-6)


def _with_moving_statistics(layer, channels):
    for bn in (layer.bn_in, layer.bn_out):
        bn.moving_mean.assign(RNG.normal(size=channels).astype(np.float32))
        bn.moving_variance.assign(RNG.uniform(0.5, 2.0, size=channels).astype(np.float32))


def test_gnap_embedding_alone_equals_embedding_inside_a_batch():
    gnap = layers.GlobalNormAwarePooling()
    batch = RNG.normal(size=(6, 4, 4, 8)).astype(np.float32)
    gnap(batch)
    _with_moving_statistics(gnap, 8)
    together = gnap(batch, training=False).numpy()
    for i in range(6):
        alone = gnap(batch[i:i + 1], training=False).numpy()
        np.testing.assert_allclose(alone[0], together[i], rtol=1e-5, atol=1e-6)
    # And a different batch companion does not change it either.
    other = np.concatenate([batch[:1], 100 * RNG.normal(size=(3, 4, 4, 8)).astype(np.float32)])
    np.testing.assert_allclose(gnap(other, training=False).numpy()[0], together[0], rtol=1e-5,
                               atol=1e-6)


def test_batch_wide_norm_mean_would_break_independence():
    """The property above is not vacuous: averaging norms over the batch changes the output."""
    f = RNG.normal(size=(4, 3, 3, 5)).astype(np.float32)
    f[1:] *= 10
    norms = np.linalg.norm(f, axis=-1)
    batch_wide = (f * (norms.mean() / norms)[..., None]).mean(axis=(1, 2))
    per_image = layers.GlobalNormAwarePooling.reweight(tf.constant(f)).numpy()
    assert np.abs(batch_wide[0] - per_image[0]).max() > 0.1


def test_groupface_combines_instance_and_probability_weighted_group_embeddings():
    k, d = 4, 6
    layer = layers.GroupFace(d, num_groups=k, intermediate=8)
    x = RNG.normal(size=(5, 10)).astype(np.float32)
    embedding, logits = layer(x, training=False)
    inst_w, inst_b = [v.numpy() for v in layer.instance.weights]
    grp_w, grp_b = [v.numpy() for v in layer.groups.weights]
    instance = x @ inst_w + inst_b
    groups = (x @ grp_w + grp_b).reshape(5, k, d)
    z = logits.numpy()
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    expected = instance + np.einsum("bk,bkd->bd", p, groups)
    np.testing.assert_allclose(embedding.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_groupface_loss_is_mean_reduced_over_the_batch():
    """Doubling the batch with copies must not double the loss (the original summed it)."""
    config = ModelConfig(loss="GroupAware", backbone="small_cnn", image_size=32, embedding_size=8,
                         num_groups=4, group_intermediate=8)
    model = FaceTrainingModel(build_embedding_model(config), config, num_classes=3)
    images = RNG.uniform(size=(4, 32, 32, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 0])
    single, _, _ = model._per_example_losses(images, labels, training=False)
    doubled, _, _ = model._per_example_losses(np.concatenate([images, images]),
                                              np.concatenate([labels, labels]), training=False)
    mean_single = tf.nn.compute_average_loss(single).numpy()
    mean_doubled = tf.nn.compute_average_loss(doubled).numpy()
    assert mean_doubled == pytest.approx(mean_single, rel=1e-5)


def test_groupface_loss_is_cross_entropy_from_logits_even_when_saturated():
    """The group loss is -log softmax(z)[group label], computed from the logits. The original
    applied cross-entropy to softmax probabilities: at saturation (a probability of exactly 0 in
    float32) that clips to -log(1e-7) = 16.1 and loses both the loss value and its gradient."""
    config = ModelConfig(loss="GroupAware", backbone="small_cnn", image_size=32, embedding_size=8,
                         num_groups=4, group_intermediate=8, group_weight=1.0)
    embedding_model = build_embedding_model(config)
    model = FaceTrainingModel(embedding_model, config, num_classes=3)
    images = RNG.uniform(size=(4, 32, 32, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 0])
    model._per_example_losses(images, labels, training=False)       # builds every layer
    decision = embedding_model.get_layer("groupface").decision_out
    kernel, _ = decision.get_weights()
    z = np.array([-40.0, 120.0, 0.0, 5.0], np.float32)
    decision.set_weights([kernel * 0, z])     # every image gets the logits z

    total, _, embedding = model._per_example_losses(images, labels, training=False)
    class_logits = head_logits(config, model.head(embedding), labels)
    class_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, class_logits).numpy()
    group_loss = total.numpy() - class_ce

    # Equal probabilities across the batch: the self-distributed labels tie, argmax -> group 0.
    z64 = z.astype(np.float64)
    log_p = z64 - (z64.max() + np.log(np.exp(z64 - z64.max()).sum()))
    assert np.exp(np.float32(log_p[0])) == 0.0                      # saturated in float32
    np.testing.assert_allclose(group_loss, -log_p[0], rtol=1e-4)    # 160, not a clipped 16.1


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("loss", ["ArcFace", "SoftmaxCenter", "GroupAware"])
def test_head_stays_float32_under_mixed_precision(mixed_precision, loss):
    config = ModelConfig(loss=loss, backbone="small_cnn", image_size=32, embedding_size=16)
    embedding_model = build_embedding_model(config)
    model = FaceTrainingModel(embedding_model, config, num_classes=5)
    model.compile(optimizer=keras.mixed_precision.LossScaleOptimizer(keras.optimizers.Adam(1e-3)))
    images = RNG.uniform(size=(8, 32, 32, 3)).astype(np.float32)
    labels = RNG.integers(0, 5, size=8)
    history = model.fit(images, labels, batch_size=8, epochs=2, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    head_variables = model.head.weights
    assert head_variables and all(v.dtype == tf.float32 for v in head_variables)
    outputs = embedding_model(images[:2])
    assert outputs["embedding"].dtype == tf.float32
    assert model.head(outputs["embedding"]).dtype == tf.float32
    # The backbone itself computes in float16 (mixed precision is really on).
    assert any(layer.compute_dtype == "float16" for layer in embedding_model.layers[1].layers)
    logits = model._per_example_losses(images, labels)[0]
    assert logits.dtype == tf.float32 and np.isfinite(logits.numpy()).all()


def test_gnap_reweighting_of_float16_features_does_not_overflow():
    """2048 channels, 1 in 32 active at about 32: Σ x² ≈ 64 · 32² = 65536 exceeds float16's
    largest value (65504). The re-weighting must still give the float32 result (it computes in
    float32), to float16's resolution, instead of inf/NaN."""
    f = np.zeros((2, 3, 3, 2048), np.float32)
    f[..., ::32] = RNG.uniform(31.0, 33.0, size=(2, 3, 3, 64))
    f += RNG.normal(scale=0.01, size=f.shape).astype(np.float32)
    half = tf.constant(f.astype(np.float16))
    assert not np.isfinite(np.sum(np.square(f.astype(np.float16)), axis=-1, dtype=np.float16)).all()
    got = layers.GlobalNormAwarePooling.reweight(half)
    assert got.dtype == tf.float16
    features = half.numpy().astype(np.float64)                 # the float16 values, exactly
    norms = np.linalg.norm(features, axis=-1)
    weights = norms.mean(axis=(1, 2), keepdims=True) / norms
    expected = (features * weights[..., None]).mean(axis=(1, 2))
    assert np.isfinite(got.numpy()).all()
    np.testing.assert_allclose(got.numpy().astype(np.float64), expected, rtol=2e-3, atol=1e-3)


def test_gnap_layer_under_mixed_precision_keeps_finite_batch_norm_statistics(mixed_precision):
    gnap = layers.GlobalNormAwarePooling()
    f = np.zeros((4, 3, 3, 2048), np.float32)
    f[..., ::32] = RNG.uniform(31.0, 33.0, size=(4, 3, 3, 64))
    gnap.bn_in.trainable = False          # inference-mode input BN (identity at its init)
    out = gnap(tf.constant(f), training=True)
    assert np.isfinite(out.numpy()).all()
    assert np.isfinite(gnap.bn_out.moving_mean.numpy()).all()
    assert np.isfinite(gnap.bn_out.moving_variance.numpy()).all()
