"""Recall@1 on unseen identities for each training model, untrained vs trained, on the sample data.

    python -m benchmarks.loss_quality [--data data/sample] [--epochs 12] [--image-size 64]

Every loss trains the demo network (small CNN, 128-d, the demo's optimizer and schedule, the
Trainer's augmentation) with the same FaceTrainingModel step the Trainer runs; the crops are the
Transform's (models.preprocessing.crop_faces). Reports overall and per-group Recall@1 of the
untrained network and of the trained one, and the raw-pixel nearest neighbour for reference.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List

import numpy as np
import tensorflow as tf

from benchmarks.common import train_on_crops
from core.recall import recall_at_k
from core.settings.model import LOSSES
from models import trainer
from models.face_model import build_embedding_model, embed
from tools import face_lists

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_crops(data_dir: str, list_name: str, size: int):
    records = face_lists.read_face_list(os.path.join(data_dir, list_name))
    keys = sorted(records)
    crops = face_lists.load_crops(records, keys, os.path.join(data_dir, "images"), size)
    return (crops, np.array([records[k]["label"] for k in keys]),
            np.array([face_lists.group_of(k) for k in keys]))


def recall_of(embeddings, labels, groups) -> Dict[str, float]:
    return {scope: entry["recall@1"] for scope, entry in
            recall_at_k(embeddings, labels, groups, ks=(1,)).items()}


def evaluate(embedding_model, crops, labels, groups):
    embeddings = np.concatenate([embed(embedding_model, crops[i:i + 256]).numpy()
                                 for i in range(0, len(crops), 256)])
    return recall_of(embeddings, labels, groups)


def run(data_dir: str, epochs: int, image_size: int, losses: List[str]) -> List[Dict]:
    from pipeline import configs

    train_x, train_y, _ = load_crops(data_dir, "train.json", image_size)
    test_x, test_y, test_g = load_crops(data_dir, "test.json", image_size)
    rows = [{"loss": "raw pixels", "untrained": None,
             "trained": recall_of(test_x.reshape(len(test_x), -1), test_y, test_g)}]
    settings = dict(configs.trainer_settings(configs.preset("demo")), epochs=epochs)
    for loss in losses:
        tf.keras.utils.set_random_seed(0)
        config, training = trainer.configs_from_settings({**settings, "loss": loss}, image_size)
        embedding_model = build_embedding_model(config)
        untrained = evaluate(embedding_model, test_x, test_y, test_g)
        start = time.perf_counter()
        train_on_crops(embedding_model, config, training, train_x, train_y, epochs)
        rows.append({"loss": loss, "untrained": untrained,
                     "trained": evaluate(embedding_model, test_x, test_y, test_g),
                     "seconds": time.perf_counter() - start})
        print(rows[-1], flush=True)
    return rows


def markdown_table(rows: List[Dict]) -> str:
    scopes = list(rows[0]["trained"])
    lines = ["| model | " + " | ".join(f"{s} untrained -> trained" for s in scopes) + " |",
             "|---|" + "---:|" * len(scopes)]
    for row in rows:
        cells = []
        for scope in scopes:
            after = row["trained"][scope]
            before = (row["untrained"] or {}).get(scope)
            cells.append(f"{after:.3f}" if before is None else f"{before:.3f} -> {after:.3f}")
        lines.append(f"| {row['loss']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.join(REPO, "data", "sample"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--losses", nargs="+", default=list(LOSSES))
    args = parser.parse_args(argv)
    print(markdown_table(run(args.data, args.epochs, args.image_size, args.losses)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
