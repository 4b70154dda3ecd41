"""Margin-based softmax losses and center loss, as pure functions in float32.

`cosine` is [batch, classes] (cos θ_j between a normalized embedding and normalized class weights),
`labels` int [batch]. Every function computes in float32 whatever the input dtype: under mixed
precision the logits and the loss stay float32 (float16 overflows at scale 60 and e^60).
"""
from __future__ import annotations

import math

import tensorflow as tf

# cos θ is clipped to [-1 + ε, 1 - ε] before sin θ = sqrt(1 - cos² θ): the square root's gradient
# is infinite at 0, i.e. at |cos θ| = 1 (an embedding equal to its class weight), which turns into
# NaN weights. float32 has ~6e-8 resolution near 1, so ε = 1e-6 keeps 1 - cos² > 0.
COSINE_EPSILON = 1e-6


def clip_cosine(cosine: tf.Tensor) -> tf.Tensor:
    return tf.clip_by_value(tf.cast(cosine, tf.float32), -1.0 + COSINE_EPSILON,
                            1.0 - COSINE_EPSILON)


def _target_mask(labels: tf.Tensor, cosine: tf.Tensor) -> tf.Tensor:
    """[batch, classes] bool: True at each example's own class."""
    classes = tf.range(tf.shape(cosine)[-1], dtype=tf.int32)
    return tf.equal(classes[tf.newaxis, :], tf.cast(labels, tf.int32)[:, tf.newaxis])


def arcface_logits(cosine: tf.Tensor, labels: tf.Tensor, margin: float = 0.5,
                   scale: float = 60.0) -> tf.Tensor:
    """ArcFace (Deng et al., CVPR 2019): the target logit is s·cos(θ_y + m), the others s·cos θ_j.

    cos(θ + m) only penalizes while θ + m < π; past that it would rise again as θ grows, so the
    target logit becomes cos θ - m·sin m (insightface's rule), which keeps decreasing in θ.
    """
    cos_theta = clip_cosine(cosine)
    sin_theta = tf.sqrt(1.0 - tf.square(cos_theta))
    cos_theta_plus_m = cos_theta * math.cos(margin) - sin_theta * math.sin(margin)
    # θ + m < π  <=>  θ < π - m  <=>  cos θ > cos(π - m)
    target = tf.where(cos_theta > math.cos(math.pi - margin), cos_theta_plus_m,
                      cos_theta - margin * math.sin(margin))
    return scale * tf.where(_target_mask(labels, cosine), target, cos_theta)


def cosface_logits(cosine: tf.Tensor, labels: tf.Tensor, margin: float = 0.35,
                   scale: float = 60.0) -> tf.Tensor:
    """CosFace / AM-Softmax (Wang et al., CVPR 2018): target logit s·(cos θ_y - m)."""
    cos_theta = clip_cosine(cosine)
    return scale * tf.where(_target_mask(labels, cosine), cos_theta - margin, cos_theta)


def softmax_cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Per-example cross-entropy computed from logits (never from softmax probabilities)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32),
                                                          logits=tf.cast(logits, tf.float32))


def center_loss(embeddings: tf.Tensor, labels: tf.Tensor, centers: tf.Tensor) -> tf.Tensor:
    """Per-example center loss (Wen et al., ECCV 2016): ½‖x_i − c_{y_i}‖². Centers get no gradient."""
    own_centers = tf.gather(tf.stop_gradient(tf.cast(centers, tf.float32)),
                            tf.cast(labels, tf.int32))
    return 0.5 * tf.reduce_sum(tf.square(tf.cast(embeddings, tf.float32) - own_centers), axis=-1)


def center_update(embeddings: tf.Tensor, labels: tf.Tensor, centers: tf.Tensor):
    """Wen et al.'s update, for the classes present in the batch.

    Δc_j = Σ_i δ(y_i = j)(c_j − x_i) / (1 + Σ_i δ(y_i = j));  c_j ← c_j − α·Δc_j.
    Returns (class ids [k], Δc [k, D]); the caller applies c[ids] -= α·Δc. The batch must be the
    global batch: under tf.distribute, gather embeddings and labels from all replicas first.
    """
    embeddings = tf.cast(embeddings, tf.float32)
    class_ids, position = tf.unique(tf.cast(labels, tf.int32))
    counts = tf.math.unsorted_segment_sum(tf.ones_like(position, tf.float32), position,
                                          tf.size(class_ids))
    sums = tf.math.unsorted_segment_sum(embeddings, position, tf.size(class_ids))
    current = tf.gather(tf.cast(centers, tf.float32), class_ids)
    delta = (counts[:, None] * current - sums) / (1.0 + counts[:, None])
    return class_ids, delta


def self_distributed_group_labels(group_probs: tf.Tensor, batch_mean: tf.Tensor = None) -> tf.Tensor:
    """GroupFace's self-distributed labels (Kim et al., CVPR 2020), without gradient.

    p̃_k = (p_k − E[p_k]) / K + 1/K, label = argmax_k p̃_k: subtracting the batch's mean probability
    pushes samples towards under-used groups, so the groups stay balanced. `batch_mean` [K] is
    E[p] over the (global) batch; by default the mean of `group_probs`.
    """
    probs = tf.stop_gradient(tf.cast(group_probs, tf.float32))
    if batch_mean is None:
        batch_mean = tf.reduce_mean(probs, axis=0)
    num_groups = tf.cast(tf.shape(probs)[-1], tf.float32)
    balanced = (probs - tf.stop_gradient(batch_mean)[tf.newaxis]) / num_groups + 1.0 / num_groups
    return tf.argmax(balanced, axis=-1, output_type=tf.int32)
