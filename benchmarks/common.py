"""Helpers the benchmark modules share: a timed median, and the demo training on in-memory crops."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, Tuple


def timed_median(fn: Callable[[], Any], repeats: int) -> Tuple[float, Any]:
    """(median wall seconds of `repeats` calls of fn, the last call's result)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def timed_medians_interleaved(cases: Dict[str, Callable[[], Any]],
                              repeats: int) -> Dict[str, Tuple[float, Any]]:
    """{name: (median wall seconds, last result)}, timing the cases round-robin (every case once
    per round): on a machine whose speed drifts (shared cores), each case and its baseline see the
    same conditions, which timing one case `repeats` times and then the next does not give."""
    times = {name: [] for name in cases}
    results = {}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), results[name]) for name in cases}


def train_on_crops(embedding_model, config, training, train_x, train_y, epochs: int):
    """The Trainer's training model, optimizer and augmentation around `embedding_model`, fitted
    on in-memory crops (no TFX): the demo recipe the quality benchmarks compare losses and sample
    rates with. Returns the training model."""
    import tensorflow as tf

    from models import data, trainer
    from models.face_model import FaceTrainingModel

    model = FaceTrainingModel(embedding_model, config, int(train_y.max()) + 1)
    steps = len(train_x) // training.batch_size
    model.compile(optimizer=trainer.make_optimizer(training, steps * epochs, steps))
    generator = tf.random.Generator.from_seed(0)
    dataset = (tf.data.Dataset.from_tensor_slices((train_x, train_y)).shuffle(8192, seed=0)
               .repeat().batch(training.batch_size, drop_remainder=True)
               .map(lambda x, y: (data.augment(x, generator), y)).prefetch(4))
    model.fit(dataset, epochs=epochs, steps_per_epoch=steps, verbose=0)
    return model
