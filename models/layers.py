"""Embedding-side layers: GNAP pooling, GroupFace, and the classification heads of the losses.

Heads run in float32 whatever the global mixed-precision policy: their class weights are float32
variables and the embedding is cast to float32 in `call` (never the other way round).
"""
from __future__ import annotations

import tensorflow as tf

keras = tf.keras


def batch_norm(synchronized: bool = False, **kwargs) -> keras.layers.BatchNormalization:
    """BatchNormalization; `synchronized` computes batch statistics over all replicas, so that
    training on N devices matches one device on the same global batch."""
    return keras.layers.BatchNormalization(synchronized=synchronized, **kwargs)


def l2_normalize(x: tf.Tensor, axis: int = -1) -> tf.Tensor:
    return tf.math.l2_normalize(tf.cast(x, tf.float32), axis=axis, epsilon=1e-12)


@keras.utils.register_keras_serializable("ffem")
class CosineClassifier(keras.layers.Layer):
    """cos θ between the normalized embedding and each normalized class weight: [batch, classes].

    With `subcenters` K > 1 this is sub-center ArcFace (Deng et al., ECCV 2020): each class has K
    weight vectors and its cosine is the largest of the K, so noisy samples can gather around a
    non-dominant sub-center instead of pulling the main one.
    """

    def __init__(self, num_classes: int, subcenters: int = 1, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.subcenters = int(subcenters)

    def build(self, input_shape):
        self.class_weights = self.add_weight(
            name="class_weights", shape=(int(input_shape[-1]), self.num_classes * self.subcenters),
            initializer=keras.initializers.GlorotUniform(), dtype=tf.float32, trainable=True)
        super().build(input_shape)

    def call(self, embeddings):
        cosine = tf.matmul(l2_normalize(embeddings), l2_normalize(self.class_weights, axis=0))
        if self.subcenters > 1:
            cosine = tf.reduce_max(
                tf.reshape(cosine, [-1, self.num_classes, self.subcenters]), axis=-1)
        return cosine

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "subcenters": self.subcenters}


@keras.utils.register_keras_serializable("ffem")
class L2SoftmaxClassifier(keras.layers.Layer):
    """L2-constrained softmax (Ranjan et al., 2017): logits = W·(α·x/‖x‖) + b."""

    def __init__(self, num_classes: int, alpha: float = 30.0, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.alpha = float(alpha)
        self.dense = keras.layers.Dense(self.num_classes, dtype="float32", name="logits")

    def build(self, input_shape):
        self.dense.build(input_shape)
        super().build(input_shape)

    def call(self, embeddings):
        return self.dense(self.alpha * l2_normalize(embeddings))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "alpha": self.alpha}


@keras.utils.register_keras_serializable("ffem")
class GlobalNormAwarePooling(keras.layers.Layer):
    """GNAP: BN, then re-weight every position by (mean feature norm / its norm), average, BN.

    Positions with small feature norms (low-quality regions) get boosted and strong ones damped.
    The mean norm is taken over THIS image's positions only, so an image's embedding does not
    depend on the other images in its batch (averaging over the whole batch, as some code does,
    makes it depend on them).
    """

    def __init__(self, synchronized_bn: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.synchronized_bn = bool(synchronized_bn)
        self.bn_in = batch_norm(self.synchronized_bn, epsilon=2e-5, momentum=0.9, name="bn_in")
        self.bn_out = batch_norm(self.synchronized_bn, epsilon=2e-5, momentum=0.9, scale=False,
                                 name="bn_out")

    @staticmethod
    def reweight(features: tf.Tensor) -> tf.Tensor:
        """[batch, h, w, c] -> [batch, c] in the input's dtype: the norm-aware average, per image.

        Computed in float32 whatever the input dtype: under mixed precision the sum of squares
        over thousands of channels overflows float16 (largest value 65504), which would make
        every weight inf/NaN. Norms are floored at 1e-6, which keeps the square root's gradient
        finite at an all-zero position.
        """
        features32 = tf.cast(features, tf.float32)
        squares = tf.reduce_sum(tf.square(features32), axis=-1, keepdims=True)       # [b, h, w, 1]
        norms = tf.sqrt(tf.maximum(squares, 1e-12))
        mean_norm = tf.reduce_mean(norms, axis=[1, 2], keepdims=True)                # [b, 1, 1, 1]
        pooled = tf.reduce_mean(features32 * (mean_norm / norms), axis=[1, 2])       # [b, c]
        return tf.cast(pooled, features.dtype)

    def call(self, features, training=None):
        return self.bn_out(self.reweight(self.bn_in(features, training=training)),
                           training=training)

    def get_config(self):
        return {**super().get_config(), "synchronized_bn": self.synchronized_bn}


@keras.utils.register_keras_serializable("ffem")
class GroupFace(keras.layers.Layer):
    """GroupFace (Kim et al., CVPR 2020): v = v_instance + Σ_k p_k · v_k.

    A group decision network (FC-BN-PReLU -> K-way softmax) gives p = p(G_k | x); each of the K
    groups has its own embedding FC. Returns (embedding [b, d], group logits [b, K]): the auxiliary
    loss takes its cross-entropy from the logits, and p = softmax(logits) mixes the group
    embeddings. The group labels are self-distributed (losses.self_distributed_group_labels).
    """

    def __init__(self, embedding_size: int, num_groups: int = 4, intermediate: int = 256,
                 synchronized_bn: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.synchronized_bn = bool(synchronized_bn)
        self.embedding_size = int(embedding_size)
        self.num_groups = int(num_groups)
        self.intermediate = int(intermediate)
        self.instance = keras.layers.Dense(self.embedding_size, name="instance_embedding")
        self.groups = keras.layers.Dense(self.embedding_size * self.num_groups,
                                         name="group_embeddings")
        self.decision_fc = keras.layers.Dense(self.intermediate, name="decision_fc")
        self.decision_bn = batch_norm(self.synchronized_bn, name="decision_bn")
        self.decision_act = keras.layers.PReLU(name="decision_prelu")
        # Group logits and probabilities in float32: a softmax in float16 loses small ones.
        self.decision_out = keras.layers.Dense(self.num_groups, dtype="float32",
                                               name="decision_logits")

    def call(self, features, training=None):
        instance = self.instance(features)
        group_embeddings = tf.reshape(self.groups(features),
                                      [-1, self.num_groups, self.embedding_size])
        hidden = self.decision_act(self.decision_bn(self.decision_fc(features), training=training))
        logits = self.decision_out(hidden)
        probs = tf.nn.softmax(logits, axis=-1)
        mixed = tf.reduce_sum(tf.cast(probs, group_embeddings.dtype)[..., tf.newaxis]
                              * group_embeddings, axis=1)
        return instance + mixed, logits

    def get_config(self):
        return {**super().get_config(), "embedding_size": self.embedding_size,
                "num_groups": self.num_groups, "intermediate": self.intermediate,
                "synchronized_bn": self.synchronized_bn}
