"""What the RecallEvaluator hands to deployment: the operating point (core/operating_point.py),
written into the `evaluation` artifact (for reviewers) and the `blessing` artifact (the Pusher's
input, which copies it into the pushed SavedModel and refuses to push without it)."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence

import tensorflow as tf
from absl import logging

from core import operating_point


def write_operating_point(metrics: Dict[str, Any], keys: Sequence[str], examples, split: str,
                          evaluation, blessing, model, execution_id: Optional[str] = None
                          ) -> Optional[Dict[str, Any]]:
    """Writes operating_point.json into both artifacts and returns it; None (nothing written, so
    the Pusher refuses) when the evaluation set no threshold.

    The evaluation is named by its URI and the id of the execution that wrote it
    (`execution_id`): an output artifact has no id of its own until TFX publishes it, after the
    executor returns. ML Metadata maps either to the evaluation artifact (`tools.review show`
    prints its id); the Pusher adds the blessing's id, which it has, to the copy it ships."""
    try:
        point = operating_point.build(
            metrics, examples.uri, split, keys,
            evaluation={"uri": evaluation.uri, "execution_id": execution_id},
            model={"id": model.id or None, "uri": model.uri})
    except ValueError as e:
        logging.warning("RecallEvaluator: no operating point written: %s", e)
        return None
    text = operating_point.dumps(point)
    for artifact in (evaluation, blessing):
        tf.io.gfile.makedirs(artifact.uri)
        with tf.io.gfile.GFile(os.path.join(artifact.uri, operating_point.FILE), "w") as f:
            f.write(text)
    return point
