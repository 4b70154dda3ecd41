"""Partial FC (An et al., "Partial FC: Training 10 Million Identities on a Single Machine"; the design
of insightface's partial_fc_v2): the margin softmax of a step runs over a subset of the classes.

Each optimizer step (not each micro-batch):

    positives  = the unique labels of the GLOBAL batch (all replicas, all micro-batches), always kept
    negatives  = the first classes of a uniformly random permutation of 0..C-1 that are not positives,
                 i.e. a uniform sample without replacement from the other classes
    class_ids  = sort(positives ∪ negatives), max(#positives, round(sample_rate·C)) of them
    labels     -> their index in class_ids (searchsorted)
    logits     = the loss's margin logits over those columns only, loss = softmax cross-entropy

The permutation is a stateless shuffle seeded by (sampling seed, optimizer step): every replica
gathers the same global labels and draws the same permutation, so all replicas pick the same
columns without communicating anything but the labels; a resumed run draws what the interrupted
one would have.

The class centers are a [C, K, D] variable (K sub-centers per class, K = 1 for ArcFace/CosFace),
rows = classes, so tf.gather of the sampled rows has an IndexedSlices gradient: rows not sampled
get no gradient. The rows are not given to the Keras optimizer: tf_keras' SGD (momentum) and Adam
treat an IndexedSlices gradient densely in 2.16 (they decay every row's momentum / moments and move
every row by it, O(C·D) per step). `apply_rows` updates lazily instead, with the optimizer's own
rule and hyperparameters: the sampled rows get exactly the update the Keras optimizer would give
them (decoupled weight decay included); rows not sampled keep their weights AND their optimizer
state (momentum / Adam moments are neither decayed nor advanced), as TensorFlow Addons' LazyAdam
and insightface's first Partial FC (sampled sub-matrix with its own momentum copy) do. Adam's bias
correction uses the global step, as Keras does.

Under tf.distribute every replica keeps a full copy of the centers and their state (MirroredStrategy
cannot shard a variable); the summed gradient of the sampled rows is all-reduced, and the variables
(ON_WRITE, ONLY_FIRST_REPLICA) take the first replica's update, which all replicas compute alike.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import tensorflow as tf

from models.layers import l2_normalize

keras = tf.keras

# Optimizer state kept per update rule: slot name -> the Keras optimizer's equivalent.
SLOTS: Dict[str, Tuple[str, ...]] = {"sgd": (), "momentum": ("momentum",), "adam": ("m", "v")}


def num_sampled(num_classes: int, sample_rate: float) -> int:
    """round(sample_rate · C) columns per step, halves rounded up (at least 1; the step's positives
    may raise it)."""
    return max(1, int(math.floor(sample_rate * num_classes + 0.5)))


def sample_classes(labels: tf.Tensor, num_classes: int, num_sample: int,
                   seed: tf.Tensor) -> tf.Tensor:
    """The sorted class ids [k] of a step: every label of `labels` (the global batch) plus uniform
    negatives, k = max(#unique labels, num_sample). `seed`: int [2], the stateless seed."""
    positives, _ = tf.unique(tf.cast(tf.reshape(labels, [-1]), tf.int32))
    permutation = tf.random.experimental.stateless_shuffle(tf.range(num_classes), seed=seed)
    is_positive = tf.scatter_nd(positives[:, None], tf.ones_like(positives, tf.bool), [num_classes])
    negatives = tf.boolean_mask(permutation, tf.logical_not(tf.gather(is_positive, permutation)))
    wanted = tf.maximum(num_sample - tf.size(positives), 0)
    return tf.sort(tf.concat([positives, negatives[:wanted]], axis=0))


def remap_labels(class_ids: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Each label's column among the sorted `class_ids` (which contain every label)."""
    return tf.searchsorted(class_ids, tf.cast(labels, tf.int32))


def _rule_of(optimizer) -> str:
    """The update rule of a tf_keras optimizer ("sgd", "momentum" or "adam"); ValueError for one
    whose update the lazy rows cannot reproduce."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)      # LossScaleOptimizer
    name = type(inner).__name__
    if isinstance(inner, keras.optimizers.SGD):
        rule = "momentum" if inner.momentum else "sgd"
    elif isinstance(inner, (keras.optimizers.Adam, keras.optimizers.AdamW)):
        if inner.amsgrad:
            raise ValueError("sample_rate < 1 (Partial FC) does not support Adam's amsgrad")
        rule = "adam"
    else:
        raise ValueError(f"sample_rate < 1 (Partial FC) updates the class centers lazily with the "
                         f"rule of tf.keras SGD, Adam or AdamW; got the optimizer {name}")
    for setting in ("clipnorm", "clipvalue", "global_clipnorm"):
        if getattr(inner, setting, None) is not None:
            raise ValueError(f"sample_rate < 1 (Partial FC) does not support the optimizer's "
                             f"{setting}: the class centers' gradient is not clipped with the rest")
    if getattr(inner, "use_ema", False):
        raise ValueError("sample_rate < 1 (Partial FC) does not support the optimizer's use_ema")
    return rule


def _learning_rate(optimizer) -> tf.Tensor:
    """The rate the optimizer uses for the current step. Its public `learning_rate` of a schedule
    is the value of the previous apply_gradients, so the schedule is evaluated here."""
    rate = optimizer._learning_rate
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        rate = rate(optimizer.iterations)
    return tf.cast(rate, tf.float32)


@keras.utils.register_keras_serializable("ffem")
class PartialFCClassifier(keras.layers.Layer):
    """cos θ between the normalized embeddings and the normalized centers of the sampled classes:
    [batch, k] for `class_ids` [k]; with K > 1 sub-centers a class's cosine is the largest of its K
    (sub-center ArcFace). float32 whatever the mixed-precision policy.

    Initialized as CosineClassifier's [D, C·K] Glorot-uniform matrix is (same bound, center
    [c, k] = its column c·K + k), so that sampling every class is that head.
    """

    def __init__(self, num_classes: int, subcenters: int = 1, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.subcenters = int(subcenters)
        self.rule = None
        self.slots: Dict[str, tf.Variable] = {}

    def _row_variable(self, name, initializer, trainable):
        return self.add_weight(
            name=name, shape=(self.num_classes, self.subcenters, self.embedding_size),
            initializer=initializer, dtype=tf.float32, trainable=trainable,
            synchronization=tf.VariableSynchronization.ON_WRITE,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def build(self, input_shape):
        self.embedding_size = int(input_shape[-1])
        limit = math.sqrt(6.0 / (self.embedding_size + self.num_classes * self.subcenters))
        self.class_centers = self._row_variable(
            "class_centers", keras.initializers.RandomUniform(-limit, limit), trainable=True)
        super().build(input_shape)

    def call(self, embeddings, class_ids):
        centers = l2_normalize(tf.gather(self.class_centers, class_ids))          # [k, K, D]
        cosine = tf.matmul(l2_normalize(embeddings),
                           tf.reshape(centers, [-1, self.embedding_size]), transpose_b=True)
        return tf.reduce_max(tf.reshape(cosine, [-1, tf.size(class_ids), self.subcenters]), axis=-1)

    @staticmethod
    def rows_gradient(gradient: tf.IndexedSlices, class_ids: tf.Tensor) -> tf.Tensor:
        """The centers' IndexedSlices gradient as [k, K, D] rows aligned with `class_ids`
        (summing repeated indices, should the centers be gathered more than once)."""
        position = tf.searchsorted(class_ids, tf.cast(gradient.indices, tf.int32))
        return tf.math.unsorted_segment_sum(gradient.values, position, tf.size(class_ids))

    def build_optimizer_state(self, optimizer) -> None:
        """The lazy update's state for `optimizer`'s rule (zeros, like Keras' slots)."""
        rule = _rule_of(optimizer)
        if self.rule is not None:
            if rule != self.rule:
                raise ValueError(f"the class centers' optimizer state was built for {self.rule}; "
                                 f"cannot recompile with a {rule} optimizer")
            return
        self.rule = rule
        self.slots = {name: self._row_variable(f"class_centers_{name}", "zeros", trainable=False)
                      for name in SLOTS[rule]}

    def apply_rows(self, optimizer, class_ids: tf.Tensor, gradient: tf.Tensor,
                   apply: tf.Tensor) -> None:
        """One lazy step of the sampled rows: the Keras optimizer's update of rows `class_ids` with
        the (all-reduced) `gradient` [k, K, D]; nothing changes where `apply` is False (a step
        skipped for non-finite gradients). Call BEFORE the optimizer's apply_gradients: the rate and
        Adam's step count are those of the step about to be applied."""
        if self.rule is None:
            raise ValueError("compile the training model before training: the class centers' "
                             "optimizer state is built by compile()")
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        lr = _learning_rate(inner)
        gradient = tf.cast(gradient, tf.float32)
        old = {"class_centers": tf.gather(self.class_centers, class_ids)}
        old.update({name: tf.gather(slot, class_ids) for name, slot in self.slots.items()})
        rows = old["class_centers"]
        if inner.weight_decay and inner._use_weight_decay(self.class_centers):
            rows = rows - rows * tf.cast(inner.weight_decay, tf.float32) * lr
        new = {}
        if self.rule == "sgd":
            new["class_centers"] = rows - lr * gradient
        elif self.rule == "momentum":
            momentum = tf.cast(inner.momentum, tf.float32)
            velocity = momentum * old["momentum"] - lr * gradient
            step = momentum * velocity - lr * gradient if inner.nesterov else velocity
            new["momentum"], new["class_centers"] = velocity, rows + step
        else:
            beta_1, beta_2 = (tf.cast(b, tf.float32) for b in (inner.beta_1, inner.beta_2))
            step_count = tf.cast(inner.iterations + 1, tf.float32)
            beta_1_power, beta_2_power = tf.pow(beta_1, step_count), tf.pow(beta_2, step_count)
            alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
            epsilon = tf.cast(inner.epsilon, tf.float32)
            if getattr(inner, "adaptive_epsilon", False):
                epsilon = epsilon * tf.sqrt(1 - beta_2_power)
            m = old["m"] + (gradient - old["m"]) * (1 - beta_1)
            v = old["v"] + (tf.square(gradient) - old["v"]) * (1 - beta_2)
            new["m"], new["v"] = m, v
            new["class_centers"] = rows - (m * alpha) / (tf.sqrt(v) + epsilon)
        variables = {"class_centers": self.class_centers, **self.slots}
        for name, variable in variables.items():
            value = tf.where(apply, new[name], old[name])
            variable.scatter_update(tf.IndexedSlices(value, class_ids))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "subcenters": self.subcenters}
