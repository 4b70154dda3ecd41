"""The report's error gallery: over all images (pairs across groups included) and per group, the
k highest-scoring impostor pairs and the k lowest-scoring genuine pairs (core/gallery.py picks them
from the embeddings the evaluation already has), each shown as the two crops the model saw, with
the score against the threshold and, across groups, the two groups.

* `select`: metrics.json's "error_gallery": {scope: {"impostor": [...], "genuine": [...]}}, the
  overall scope first, each pair {"score", "keys": [key a, key b], "labels": [label a, label b],
  "groups": [group a, group b], "match"}.
* `crops`: one read of the eval split keeps only the records of the selected keys (at most
  4 k per scope), and the candidate's `crop_examples` signature (models/export.py) returns the
  Transform's crop of each: what the model embedded. No embedding is computed again. A model
  exported without that signature gets a gallery of keys and scores without images.
* `html_section`: the gallery as HTML, each crop a PNG data: URI (the report stays one
  self-contained file that fetches nothing).
k is GateConfig.report_examples (`--report-examples`); 0 selects nothing, reads no image and
leaves the section out: use it for data that must not be copied into reports.
"""
from __future__ import annotations

import base64
import html
import io
import os
from typing import Any, Dict, List, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from core import features
from core import gallery as gallery_lib

KINDS = ((gallery_lib.IMPOSTOR, "highest-scoring impostor pairs (false matches first)"),
         (gallery_lib.GENUINE, "lowest-scoring genuine pairs (false non-matches first)"))
_READ_BATCH = 1024


def select(candidate: Dict[str, np.ndarray], k: int, threshold) -> Dict[str, Any]:
    """metrics.json's error gallery (the module docstring); {} when k is 0."""
    keys, labels, groups = candidate["paths"], candidate["labels"], candidate["groups"]
    result = {}
    for scope, kinds in gallery_lib.error_pairs(candidate["embeddings"], labels, groups,
                                                k).items():
        result[scope] = {kind: [{"score": score, "keys": [str(keys[i]), str(keys[j])],
                                 "labels": [int(labels[i]), int(labels[j])],
                                 "groups": [str(groups[i]), str(groups[j])],
                                 "match": threshold is not None and score >= threshold}
                                for score, i, j in pairs]
                         for kind, pairs in kinds.items()}
    return result


def keys_of(entry: Dict[str, Any]) -> List[str]:
    return sorted({key for kinds in entry.values() for pairs in kinds.values() for pair in pairs
                   for key in pair["keys"]})


def crops(model_dir: str, files: Sequence[str], keys: Sequence[str]) -> Dict[str, bytes]:
    """{key: PNG of the crop the model saw} for `keys`, from one read of `files`."""
    from models import export

    wanted = set(keys)
    if not wanted:
        return {}
    loaded = tf.saved_model.load(model_dir)
    if export.CROP_EXAMPLES not in loaded.signatures:
        logging.warning("RecallEvaluator: the model has no %r signature (exported before it): "
                        "the error gallery shows keys without images", export.CROP_EXAMPLES)
        return {}
    records: Dict[str, bytes] = {}
    spec = {features.PATH: tf.io.FixedLenFeature([], tf.string, default_value="")}
    for batch in tf.data.TFRecordDataset(list(files), compression_type="GZIP").batch(_READ_BATCH):
        paths = tf.io.parse_example(batch, spec)[features.PATH].numpy()
        for path, record in zip(paths, batch.numpy()):
            key = path.decode("utf-8")
            if key in wanted:
                records[key] = record
    found = sorted(records)
    if not found:
        return {}
    pixels = loaded.signatures[export.CROP_EXAMPLES](
        examples=tf.constant([records[key] for key in found]))[export.CROP].numpy()
    return {key: _png(image) for key, image in zip(found, pixels)}


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _crop_html(key: str, images: Dict[str, bytes]) -> str:
    e = html.escape
    if key not in images:
        return f"<div class='crop missing'>{e(key)}</div>"
    data = base64.b64encode(images[key]).decode()
    return (f"<figure class='crop'><img class='gallery' alt='{e(key)}' "
            f"src='data:image/png;base64,{data}'><figcaption>{e(key)}</figcaption></figure>")


def html_section(entry: Dict[str, Any], images: Dict[str, bytes], threshold) -> str:
    """The gallery's HTML ('' without pairs)."""
    if not entry:
        return ""
    e = html.escape
    parts = ["<h2 id='error-gallery'>Error gallery</h2>",
             f"<p>Over all images (two people of different groups included) and per group, the "
             f"pairs closest to being (or being) errors at the threshold "
             f"{'n/a' if threshold is None else f'{threshold:.4f}'}: each pair is the two crops "
             f"the model embedded, its cosine score, and whether it matches.</p>"]
    for scope in sorted(entry, key=lambda name: (name != features.OVERALL, name)):
        parts.append(f"<h3>{e(scope)}{' (any two images)' if scope == features.OVERALL else ''}"
                     f"</h3>")
        for kind, title in KINDS:
            pairs = entry[scope].get(kind) or []
            parts.append(f"<h4>{e(title)}</h4>")
            if not pairs:
                parts.append("<p>none in this scope</p>")
                continue
            cells = []
            for pair in pairs:
                error = pair["match"] if kind == gallery_lib.IMPOSTOR else not pair["match"]
                verdict = ("match" if pair["match"] else "no match") + (" (error)" if error else "")
                pair_groups = pair.get("groups") or []
                if len(set(pair_groups)) > 1:
                    verdict += f"; {pair_groups[0]} / {pair_groups[1]}"
                cells.append(
                    f"<div class='pair{' error' if error else ''}'>"
                    f"{_crop_html(pair['keys'][0], images)}{_crop_html(pair['keys'][1], images)}"
                    f"<div class='score'>score {pair['score']:.4f}: {e(verdict)}</div></div>")
            parts.append(f"<div class='pairs'>{''.join(cells)}</div>")
    return "\n".join(parts)


def write_gallery(metrics: Dict[str, Any], candidate: Dict[str, np.ndarray], k: int,
                  model_dir: str, files: Sequence[str]) -> str:
    """Puts the gallery's pairs into `metrics["error_gallery"]` and returns its HTML section."""
    threshold = (metrics.get("verification") or {}).get("threshold")
    entry = select(candidate, k, threshold) if k > 0 else {}
    metrics["error_gallery"] = entry
    if not entry:
        return ""
    return html_section(entry, crops(os.path.join(model_dir), files, keys_of(entry)), threshold)
