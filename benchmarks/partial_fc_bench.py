"""The classification head's training step, full softmax vs Partial FC, at many identities.

    python -m benchmarks.partial_fc_bench            # C = 200,000, D = 512, batch 64, rate 0.1
    python -m benchmarks.partial_fc_bench --quick    # C = 2,000, D = 64, batch 16 (smoke test)
    python -m benchmarks.partial_fc_bench --recall data/sample [--epochs 15]   # long: Recall@1

One step = embeddings in; cosines, ArcFace logits, the mean cross-entropy, its gradients (class
centers and embeddings) and the optimizer's update of the class centers. Full softmax: the
Trainer's CosineClassifier head over all C classes and the Keras optimizer's dense update. Partial
FC: the step's class sampling (batch labels + uniform negatives, round(rate·C) columns), the
sampled head (models/partial_fc.py) and its lazy update of the sampled rows. Both as tf.functions in
this process, with the Trainer's Adam and Nesterov SGD; each timing is the median of `repeats` steps
after two warm-up steps, full and partial interleaved. Prints a Markdown table; writes nothing.

`--recall DATA` instead trains the demo network (benchmarks/loss_quality.py's setting: the demo's
ArcFace training, the Trainer's augmentation, 64-pixel crops) with the full softmax and with
sample_rate 0.3, and prints Recall@1 on the data's unseen identities for each (minutes; not part of
`make bench`).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, Dict, List

import numpy as np
import tensorflow as tf

from models import layers, losses, partial_fc
from models.face_model import ModelConfig, head_logits

keras = tf.keras
FULL = {"classes": 200_000, "dim": 512, "batch": 64, "sample_rate": 0.1, "repeats": 7}
QUICK = {"classes": 2_000, "dim": 64, "batch": 16, "sample_rate": 0.1, "repeats": 3}
OPTIMIZERS = {"adam": lambda: keras.optimizers.Adam(1e-3),
              "sgd": lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)}


def full_step(config: ModelConfig, classes: int, dim: int, optimizer) -> Callable:
    head = layers.CosineClassifier(classes)
    head.build((None, dim))

    @tf.function
    def step(embeddings, labels):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            logits = head_logits(config, head(embeddings), labels)
            loss = tf.reduce_mean(losses.softmax_cross_entropy(logits, labels))
        weight_gradient, embedding_gradient = tape.gradient(loss, [head.class_weights, embeddings])
        optimizer.apply_gradients([(weight_gradient, head.class_weights)])
        return loss, embedding_gradient
    return step


def partial_step(config: ModelConfig, classes: int, dim: int, optimizer, rate: float) -> Callable:
    head = partial_fc.PartialFCClassifier(classes)
    head.build((None, dim))
    head.build_optimizer_state(optimizer)
    num_sample = partial_fc.num_sampled(classes, rate)

    @tf.function
    def step(embeddings, labels):
        seed = tf.stack([tf.constant(0, tf.int64), optimizer.iterations])
        class_ids = partial_fc.sample_classes(labels, classes, num_sample, seed)
        sampled_labels = partial_fc.remap_labels(class_ids, labels)
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            logits = head_logits(config, head(embeddings, class_ids), sampled_labels)
            loss = tf.reduce_mean(losses.softmax_cross_entropy(logits, sampled_labels))
        center_gradient, embedding_gradient = tape.gradient(loss, [head.class_centers, embeddings])
        head.apply_rows(optimizer, class_ids, head.rows_gradient(center_gradient, class_ids),
                        tf.constant(True))
        optimizer.iterations.assign_add(1)
        return loss, embedding_gradient
    return step


def _seconds(step: Callable, inputs) -> float:
    start = time.perf_counter()
    loss, gradient = step(*inputs)
    loss.numpy(), gradient.numpy()
    return time.perf_counter() - start


def run(quick: bool, sizes: Dict = None) -> List[Dict]:
    sizes = dict(sizes or (QUICK if quick else FULL))
    classes, dim, batch = sizes["classes"], sizes["dim"], sizes["batch"]
    config = ModelConfig(loss="ArcFace", embedding_size=dim)
    rng = np.random.default_rng(0)
    batches = [(tf.constant(rng.normal(size=(batch, dim)).astype(np.float32)),
                tf.constant(rng.integers(0, classes, size=batch).astype(np.int32)))
               for _ in range(sizes["repeats"] + 2)]
    rows = []
    for name, make in OPTIMIZERS.items():
        tf.keras.utils.set_random_seed(0)
        steps = {"full softmax": full_step(config, classes, dim, make()),
                 f"Partial FC, rate {sizes['sample_rate']}": partial_step(
                     config, classes, dim, make(), sizes["sample_rate"])}
        times = {key: [] for key in steps}
        for index, inputs in enumerate(batches):
            for key, step in steps.items():
                seconds = _seconds(step, inputs)
                if index >= 2:
                    times[key].append(seconds)
        full = statistics.median(times["full softmax"])
        for key, values in times.items():
            median = statistics.median(values)
            rows.append({"head": key, "optimizer": name, "classes": classes, "dim": dim,
                         "batch": batch, "seconds": median, "ratio": median / full})
        del steps
    return rows


def recall_comparison(data_dir: str, epochs: int, rates=(1.0, 0.3), image_size: int = 64
                      ) -> List[Dict]:
    """Recall@1 (overall and per group) of the demo training with each sample rate."""
    from benchmarks.common import train_on_crops
    from benchmarks.loss_quality import evaluate, load_crops
    from models import trainer
    from models.face_model import build_embedding_model
    from pipeline import configs

    train_x, train_y, _ = load_crops(data_dir, "train.json", image_size)
    test_x, test_y, test_g = load_crops(data_dir, "test.json", image_size)
    rows = []
    for rate in rates:
        tf.keras.utils.set_random_seed(0)
        config, training = trainer.configs_from_settings(
            dict(configs.trainer_settings(configs.preset("demo")), epochs=epochs, sample_rate=rate),
            image_size)
        embedding_model = build_embedding_model(config)
        model = train_on_crops(embedding_model, config, training, train_x, train_y, epochs)
        rows.append({"sample_rate": rate, "columns": model.num_sample,
                     "recall": evaluate(embedding_model, test_x, test_y, test_g)})
        print(rows[-1], flush=True)
    return rows


def markdown_table(rows: List[Dict]) -> str:
    lines = ["| head step | optimizer | C | D | batch | median seconds | vs full softmax |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['head']} | {row['optimizer']} | {row['classes']:,} | {row['dim']} | "
                     f"{row['batch']} | {row['seconds']:.4f} | {row['ratio']:.3f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--recall", metavar="DATA", help="compare Recall@1 on this sample data")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args(argv)
    if args.recall:
        recall_comparison(args.recall, args.epochs)
    else:
        print(markdown_table(run(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
