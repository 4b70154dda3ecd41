"""The operating point a model ships with: `operating_point.json`.

The RecallEvaluator sets the global 1:1 threshold (core/verification.py: the smallest threshold at
which the overall FMR is <= the target) and measures every group's FNMR / FMR at it. This module
turns those figures into the one document that travels with the model: the evaluator writes it into
its `evaluation` and `blessing` artifacts, the GuardedPusher copies it into the pushed SavedModel's
`assets/operating_point.json` (refusing to push without it), and the exported SavedModel's
`verify`, `compare` and `operating_point` functions read the threshold from that asset
(models/export.py), so serving code never parses the file and never picks a threshold of its own.

Contents (`build`):
  threshold         the score at or above which a pair matches (a float64; JSON round-trips it)
  target_fmr        the FMR it was set at
  rates             per scope ("overall" and every group): n_genuine, n_impostor, fnmr, fnmr_ci,
                    fmr, fmr_ci at the threshold (intervals at `confidence`)
  eval_data         examples_uri, split, n_images and keys_sha256 (`keys_digest` of the eval
                    split's record keys): which data the numbers describe
  evaluation        the evaluation artifact's uri and execution_id, the evaluator's execution
                    that wrote it (the artifact has no id before TFX publishes it)
  model             the evaluated model artifact's id and uri (the Pusher checks the uri)
  gate              the gate settings (GateConfig.to_dict) and `blessed`, `failed_rules`
  blessing          in the pushed copy only: the blessing's id and uri (the Pusher adds it)
Layout contract: the document starts with the "threshold" key (`dumps`), so the serving graph reads
the number with THRESHOLD_PATTERN (RE2 and Python `re` alike) without a JSON parser. The export's
placeholder (`PLACEHOLDER`) has a null threshold: the graph refuses to verify with it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from typing import Any, Dict, Iterable, Optional

from core import json_safe
from core.features import OVERALL

FILE = "operating_point.json"
ASSET = os.path.join("assets", FILE)      # its place inside a (pushed) SavedModel
# The file the GuardedPusher writes into every version it pushes (naming the pushed model): a
# SavedModel directory holding it was pushed, so it must carry ASSET (the TFLite check needs it).
PUSH_MARKER = "ffem_pushed_model.json"
SCHEMA_VERSION = 1
# The threshold of a `dumps` document: its first key's number (group 1).
THRESHOLD_PATTERN = r'(?s)^\{\s*"threshold":\s*(-?[0-9][0-9.eE+-]*)\s*,.*$'
PLACEHOLDER = {"threshold": None,
               "status": "no operating point: this SavedModel was exported but not pushed; the "
                         "GuardedPusher writes the evaluated threshold here"}


def is_placeholder(text: str) -> bool:
    """Whether `text` is the export's PLACEHOLDER: a JSON object whose threshold is null."""
    try:
        document = json.loads(text)
    except ValueError:
        return False
    return isinstance(document, dict) and "threshold" in document and document["threshold"] is None


_RATE_KEYS = ("n_genuine", "n_impostor", "fnmr", "fnmr_ci", "fmr", "fmr_ci")


def keys_digest(keys: Iterable[str]) -> str:
    """SHA-256 (hex) of the sorted record keys, one UTF-8 line each: the same eval split gives the
    same digest whatever order its records were read in."""
    digest = hashlib.sha256()
    for key in sorted(keys):
        digest.update(key.encode("utf-8") + b"\n")
    return digest.hexdigest()


def build(metrics: Dict[str, Any], examples_uri: str, split: str, keys: Iterable[str],
          evaluation: Dict[str, Any], model: Dict[str, Any]) -> Dict[str, Any]:
    """The operating point of one evaluation (`metrics` as RecallEvaluator's evaluate() returns
    it). Raises ValueError when the evaluation set no threshold (no impostor pair)."""
    verification = metrics["verification"]
    threshold = verification.get("threshold")
    if threshold is None or not math.isfinite(float(threshold)):
        raise ValueError("the evaluation set no 1:1 threshold (no impostor pair in the eval split): "
                         "there is no operating point to ship")
    keys = list(keys)
    rates = {}
    for scope, entry in verification.items():
        if isinstance(entry, dict) and "n_impostor" in entry:
            rates[scope] = {key: entry.get(key) for key in _RATE_KEYS}
    return {"threshold": float(threshold), "target_fmr": float(verification["target_fmr"]),
            "confidence": metrics["confidence"], "rates": rates,
            "eval_data": {"examples_uri": examples_uri, "split": split, "n_images": len(keys),
                          "keys_sha256": keys_digest(keys)},
            "evaluation": dict(evaluation), "model": dict(model),
            "gate": {"settings": metrics["gate_config"], "blessed": bool(metrics["blessed"]),
                     "failed_rules": list(metrics["failed_rules"])},
            "schema_version": SCHEMA_VERSION}


def dumps(point: Dict[str, Any]) -> str:
    """Strict JSON (core/json_safe.py) with "threshold" first (the layout contract)."""
    ordered = {"threshold": point["threshold"], **{k: v for k, v in point.items() if k != "threshold"}}
    return json_safe.dumps(ordered, indent=1)


def threshold_of(text: str) -> Optional[float]:
    """The threshold as the serving graph reads it (THRESHOLD_PATTERN); None when absent."""
    found = re.match(THRESHOLD_PATTERN, text)
    return float(found.group(1)) if found else None


def loads(text: str, source: str = FILE) -> Dict[str, Any]:
    """A shipped operating point, checked: a finite threshold that the graph reads as JSON does,
    and the keys `build` writes. ValueError naming `source` and the reason otherwise."""
    try:
        point = json_safe.loads(text)
    except ValueError as e:
        raise ValueError(f"{source}: not valid JSON ({e})") from None
    if not isinstance(point, dict) or point.get("threshold") is None:
        raise ValueError(f"{source}: holds no threshold (an exported model's placeholder, or not an "
                         f"operating point)")
    missing = [k for k in ("target_fmr", "rates", "eval_data", "evaluation", "model", "gate")
               if k not in point]
    if missing:
        raise ValueError(f"{source}: missing {', '.join(missing)}")
    if threshold_of(text) != point["threshold"] or not math.isfinite(point["threshold"]):
        raise ValueError(f"{source}: the threshold must be the document's first key and a finite "
                         f"number (the serving graph reads it there)")
    if OVERALL not in point["rates"]:
        raise ValueError(f"{source}: no {OVERALL!r} rates")
    return point


def summary_lines(point: Dict[str, Any]) -> list:
    """Human-readable lines (tools.review show)."""
    lines = [f"operating point: threshold {point['threshold']:.6f} at target FMR "
             f"{point['target_fmr']:g} (blessed: {point['gate']['blessed']})"]
    for scope, entry in point["rates"].items():
        lines.append(f"  {scope:<16} FNMR {_rate(entry.get('fnmr'), entry.get('fnmr_ci'))}   "
                     f"FMR {_rate(entry.get('fmr'), entry.get('fmr_ci'))}")
    data = point["eval_data"]
    lines.append(f"  eval data: {data['examples_uri']} split {data['split']!r}, {data['n_images']} "
                 f"images, keys sha256 {data['keys_sha256']}")
    evaluation, model = point["evaluation"], point["model"]
    lines.append(f"  evaluation: {evaluation.get('uri')} (execution {evaluation.get('execution_id') or '-'})")
    lines.append(f"  model: {model.get('id') or '-'} {model.get('uri')}")
    if point.get("blessing"):
        lines.append(f"  blessing: {point['blessing'].get('id') or '-'} {point['blessing'].get('uri')}")
    gate = point["gate"]
    lines.append(f"  gate: failed rules {', '.join(gate['failed_rules']) or 'none'}; settings "
                 f"{json_safe.dumps(gate['settings'], sort_keys=True, separators=(',', ':'))}")
    return lines


def _rate(value, interval) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.5f}"
    if interval and None not in interval:
        text += f" [{interval[0]:.5f}, {interval[1]:.5f}]"
    return text

