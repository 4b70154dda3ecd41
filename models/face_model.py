"""The embedding network and the training models of the original, selectable by name (the settings,
losses and their defaults: core/settings/model.py).

`sample_rate` < 1 turns on Partial FC (models/partial_fc.py) for ArcFace, GroupAware, CosFace and
SubCenterArcFace: each optimizer step samples the global batch's identities plus uniform negatives,
round(sample_rate·C) columns, and updates only those class centers; 1.0 is the full softmax.

The embedding network (backbone -> GNAP -> FC -> BN [-> GroupFace]) is what gets exported; heads and
center state exist only in the training model. `FaceTrainingModel.train_step` does one optimizer step
per call over `accumulation_steps` micro-batches, with losses scaled to the global batch.
"""
from __future__ import annotations

import tensorflow as tf

from core.settings.model import ModelConfig
from models import backbones, layers, losses, partial_fc

keras = tf.keras

EMBEDDING = "embedding"
GROUP_LOGITS = "group_logits"


def build_embedding_model(config: ModelConfig, synchronized_bn: bool = False) -> keras.Model:
    """image [b, s, s, 3] in [0, 1] -> {"embedding": [b, d] (not normalized), "group_logits"?}.

    `synchronized_bn`: batch statistics over all replicas (set when training on several devices).
    """
    shape = (config.image_size, config.image_size, 3)
    image = keras.Input(shape=shape, name="image")
    features = backbones.build_backbone(config.backbone, shape, config.backbone_weights,
                                        synchronized_bn)(image)
    if config.pooling == "gnap":
        pooled = layers.GlobalNormAwarePooling(synchronized_bn, name="gnap")(features)
    else:
        pooled = keras.layers.GlobalAveragePooling2D(name="average_pool")(features)
    outputs = {}
    if config.loss == "GroupAware":
        embedding, outputs[GROUP_LOGITS] = layers.GroupFace(
            config.embedding_size, config.num_groups, config.group_intermediate,
            synchronized_bn, name="groupface")(pooled)
    else:
        embedding = keras.layers.Dense(config.embedding_size, name="embedding_fc")(pooled)
    # The embedding leaves the network in float32, whatever the compute policy.
    outputs[EMBEDDING] = layers.batch_norm(synchronized_bn, scale=False, dtype="float32",
                                           name="embedding_bn")(embedding)
    return keras.Model(image, outputs, name="embedding_model")


def _head_for(config: ModelConfig, num_classes: int) -> keras.layers.Layer:
    if config.loss == "SoftmaxCenter":
        return layers.L2SoftmaxClassifier(num_classes, alpha=config.loss_value("scale"), name="l2_softmax")
    subcenters = config.loss_value("subcenters") if config.loss == "SubCenterArcFace" else 1
    if config.sample_rate < 1.0:
        return partial_fc.PartialFCClassifier(num_classes, subcenters=subcenters, name="partial_fc")
    return layers.CosineClassifier(num_classes, subcenters=subcenters, name="class_weights")


def head_logits(config: ModelConfig, head_output: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """The loss's logits from the head's output (cosines, or logits for L2-softmax)."""
    if config.loss == "SoftmaxCenter":
        return tf.cast(head_output, tf.float32)
    if config.loss == "CosFace":
        return losses.cosface_logits(head_output, labels, config.loss_value("margin"),
                                     config.loss_value("scale"))
    return losses.arcface_logits(head_output, labels, config.loss_value("margin"),
                                 config.loss_value("scale"))


def _replica_context():
    return tf.distribute.get_replica_context()


class FaceTrainingModel(keras.Model):
    """Wraps the embedding network with a classification head and the loss's extra state.

    Inputs: (images [b, s, s, 3], class indices [b]). One train_step = one optimizer update; with
    `accumulation_steps` N the batch is split into N micro-batches whose gradients are averaged.

    With config.sample_rate < 1 (Partial FC) the step samples its classes once from the global
    batch's labels, with the stateless seed (`sampling_seed`, optimizer step), so every replica and
    every micro-batch uses the same columns; the class centers are updated lazily by the head
    (partial_fc.PartialFCClassifier.apply_rows), the rest of the model by the optimizer. The
    accuracy metric is then the accuracy among the sampled classes.
    """

    def __init__(self, embedding_model: keras.Model, config: ModelConfig, num_classes: int,
                 accumulation_steps: int = 1, sampling_seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"training needs at least 2 identities, got {num_classes}")
        self.embedding_model = embedding_model
        self.config = config
        self.num_classes = int(num_classes)
        self.accumulation_steps = int(accumulation_steps)
        self.head = _head_for(config, num_classes)
        # Built now, so the optimizer sees the class weights before the first step.
        self.head.build((None, config.embedding_size))
        self.partial_fc = isinstance(self.head, partial_fc.PartialFCClassifier)
        self.num_sample = partial_fc.num_sampled(num_classes, config.sample_rate)
        self.sampling_seed = int(sampling_seed)
        self.centers = None
        if config.loss == "SoftmaxCenter":
            # Not an optimizer variable: updated by Wen et al.'s rule. Every replica computes the
            # same update from the all-gathered global batch, so the first replica's is applied.
            self.centers = tf.Variable(
                tf.zeros([num_classes, config.embedding_size], tf.float32), trainable=False,
                name="centers", synchronization=tf.VariableSynchronization.ON_WRITE,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    def compile(self, *args, **kwargs):
        """Keras' compile; with Partial FC also the class centers' optimizer state (zeros)."""
        super().compile(*args, **kwargs)
        if self.partial_fc:
            self.head.build_optimizer_state(self.optimizer)

    def call(self, images, training=False):
        return self.embedding_model(images, training=training)

    def _per_example_losses(self, images, labels, training=True, class_ids=None):
        """`class_ids` (Partial FC): the step's sampled classes; labels are remapped to them."""
        outputs = self.embedding_model(images, training=training)
        embedding = outputs[EMBEDDING]
        if class_ids is None:
            head_output = self.head(embedding)
        else:
            head_output = self.head(embedding, class_ids)
            labels = partial_fc.remap_labels(class_ids, labels)
        logits = head_logits(self.config, head_output, labels)
        per_example = losses.softmax_cross_entropy(logits, labels)
        if self.centers is not None:
            per_example += self.config.loss_value("center_weight") * losses.center_loss(
                embedding, labels, self.centers)
        if GROUP_LOGITS in outputs:
            group_logits = tf.cast(outputs[GROUP_LOGITS], tf.float32)
            probs = tf.nn.softmax(group_logits, axis=-1)
            group_labels = losses.self_distributed_group_labels(probs, self._global_mean(probs))
            per_example += self.config.group_weight * losses.softmax_cross_entropy(
                group_logits, group_labels)
        correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32),
                                   tf.cast(labels, tf.int32)), tf.float32)
        return per_example, correct, embedding

    @staticmethod
    def _global_mean(values: tf.Tensor) -> tf.Tensor:
        """Mean over the global batch (all replicas), without gradient."""
        values = tf.stop_gradient(values)
        total = tf.reduce_sum(values, axis=0)
        count = tf.cast(tf.shape(values)[0], tf.float32)
        ctx = _replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, total)
            count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, count)
        return total / count

    def _update_centers(self, embedding: tf.Tensor, labels: tf.Tensor,
                        gradients_finite: tf.Tensor) -> None:
        """Wen et al.'s update from the global batch, only on a step whose gradients are finite
        on every replica and whose embeddings are finite.

        The loss-scale optimizer skips a step with non-finite gradients; updating the centers on
        it anyway would write the NaN of one bad embedding into them for good. The update is
        zeroed rather than put under a tf.cond: every replica runs the same collectives.
        """
        ctx = _replica_context()
        embedding = tf.stop_gradient(tf.cast(embedding, tf.float32))
        labels = tf.cast(labels, tf.int32)
        non_finite = 1.0 - tf.cast(gradients_finite, tf.float32)
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            embedding = ctx.all_gather(embedding, axis=0)
            labels = ctx.all_gather(labels, axis=0)
            non_finite = ctx.all_reduce(tf.distribute.ReduceOp.SUM, non_finite)
        finite = tf.logical_and(tf.equal(non_finite, 0.0),
                                tf.reduce_all(tf.math.is_finite(embedding)))
        class_ids, delta = losses.center_update(embedding, labels, self.centers)
        delta = tf.where(finite, delta, tf.zeros_like(delta))
        self.centers.scatter_sub(tf.IndexedSlices(self.config.center_alpha * delta, class_ids))

    def _sample_classes(self, labels: tf.Tensor) -> tf.Tensor:
        """Partial FC's columns for this step, from the labels of the global batch (gathered
        from all replicas) and the seed (sampling_seed, optimizer step): the same on every
        replica."""
        labels = tf.cast(labels, tf.int32)
        ctx = _replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            labels = ctx.all_gather(labels, axis=0)
        seed = tf.stack([tf.constant(self.sampling_seed, tf.int64),
                         tf.cast(self.optimizer.iterations, tf.int64)])
        return partial_fc.sample_classes(labels, self.num_classes, self.num_sample, seed)

    def _apply_partial_fc(self, class_ids, rows_gradient, gradients) -> None:
        """Sums the sampled rows' gradient over replicas and applies the head's lazy update,
        only if every gradient of the step is finite on every replica (as the loss-scale
        optimizer decides for the rest). No tf.cond: every replica runs the same collectives."""
        ctx = _replica_context()
        non_finite = 1.0 - tf.cast(tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(g)) for g in gradients if g is not None]), tf.float32)
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            rows_gradient = ctx.all_reduce(tf.distribute.ReduceOp.SUM, rows_gradient)
            non_finite = ctx.all_reduce(tf.distribute.ReduceOp.SUM, non_finite)
        apply = tf.logical_and(tf.equal(non_finite, 0.0),
                               tf.reduce_all(tf.math.is_finite(rows_gradient)))
        self.head.apply_rows(self.optimizer, class_ids, rows_gradient, apply)

    def train_step(self, data):
        images, labels = data
        variables = self.trainable_variables
        class_ids = None
        if self.partial_fc:
            # The class centers are updated by the head, lazily; the optimizer never sees them.
            centers = self.head.class_centers
            variables = [v for v in variables if v is not centers] + [centers]
            class_ids = self._sample_classes(labels)
        micro_images = tf.split(images, self.accumulation_steps, axis=0)
        micro_labels = tf.split(labels, self.accumulation_steps, axis=0)
        accumulated = None
        total_loss = 0.0
        scaled_optimizer = hasattr(self.optimizer, "get_scaled_loss")
        step_embeddings = []
        for step_images, step_labels in zip(micro_images, micro_labels):
            with tf.GradientTape() as tape:
                per_example, correct, embedding = self._per_example_losses(
                    step_images, step_labels, class_ids=class_ids)
                # Sum / global micro-batch size: the optimizer sums gradients over replicas.
                loss = tf.nn.compute_average_loss(per_example)
                if self.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(self.losses))
                to_differentiate = self.optimizer.get_scaled_loss(loss) if scaled_optimizer \
                    else loss
            grads = tape.gradient(to_differentiate, variables)
            if scaled_optimizer:
                grads = self.optimizer.get_unscaled_gradients(grads)
            if class_ids is not None:
                # The centers' IndexedSlices -> [k, K, D] rows, accumulated like the others.
                grads[-1] = self.head.rows_gradient(grads[-1], class_ids)
            grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
                     for g in grads]
            accumulated = grads if accumulated is None else [a + g for a, g in
                                                             zip(accumulated, grads)]
            total_loss += loss
            self.accuracy_tracker.update_state(correct)
            step_embeddings.append(embedding)
        steps = float(self.accumulation_steps)
        averaged = [g / steps for g in accumulated]
        if class_ids is not None:
            # Before apply_gradients: the lazy update uses this step's rate and step count.
            rows_gradient, averaged, variables = averaged[-1], averaged[:-1], variables[:-1]
            self._apply_partial_fc(class_ids, rows_gradient, averaged)
        self.optimizer.apply_gradients(zip(averaged, variables))
        if self.centers is not None:
            # One center update per optimizer step, from the whole (accumulated, global) batch:
            # every micro-batch's center loss saw the same centers.
            gradients_finite = tf.reduce_all(
                [tf.reduce_all(tf.math.is_finite(g)) for g in averaged if g is not None])
            self._update_centers(tf.concat(step_embeddings, axis=0), labels, gradients_finite)
        # Per-replica losses are fractions of the global loss: sum them for the logged value.
        ctx = _replica_context()
        logged = total_loss / steps
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            logged = ctx.all_reduce(tf.distribute.ReduceOp.SUM, logged)
        self.loss_tracker.update_state(logged)
        return {m.name: m.result() for m in self.metrics}


def embed(embedding_model: keras.Model, images: tf.Tensor) -> tf.Tensor:
    """Inference embedding: L2-normalized, float32."""
    return layers.l2_normalize(embedding_model(images, training=False)[EMBEDDING])
