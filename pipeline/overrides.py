"""The runners' one way to change a PipelineConfig: `--config FILE.json` and KEY=JSON flags.

An experiment is a JSON file of PipelineConfig overrides a reviewer can read, e.g.

    {"image_size": 64, "training": {"epochs": 3, "loss": "CosFace"},
     "gate": {"min_recall": 0.7}, "ingest": {"data_root": "/data/faces"}}

Top-level keys are PipelineConfig fields; "ingest" holds IngestConfig fields; "training" and "gate"
are merged key by key into the preset's dicts (a file that sets one Trainer setting keeps the
others). Flags given on the command line are turned into the same kind of dict and laid over the
file's, so a flag always wins over the file and the file over the preset.

Pair options (`--training`, `--gate`, `--list-files`, `--identity-split`, `--group-min-recall`)
take KEY=VALUE items, VALUE read as JSON (`epochs=3`, `mixed_precision=true`, `optimizer="sgd"`);
a VALUE that is not JSON is taken as a string (`optimizer=sgd`, `train=train-*.json`). An item may
also be one JSON object (`--training '{"epochs": 3}'`), the form kubeflow_runner used to take.
Unknown keys are an error that names the key and the closest known ones.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import json
import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from components.recall_evaluator.gate import GateConfig
from pipeline import configs

# PipelineConfig fields a file may not set: built by the Kubeflow runner from its flags.
_NOT_FROM_FILE = ("resources", "vertex_training", "beam_worker_image")
# Sections merged key by key into the preset's value instead of replacing it.
_MERGED_SECTIONS = ("ingest", "training", "gate")


def json_value(text: str) -> Any:
    """`text` read as JSON; text that is not JSON is the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _number(text: str) -> float:
    value = json_value(text)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{text!r} is not a number")
    return float(value)


def _integer(text: str) -> int:
    value = json_value(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{text!r} is not an integer")
    return value


VALUE_TYPES: Dict[str, Callable[[str], Any]] = {
    "json": json_value, "str": str, "float": _number, "int": _integer}


def parse_pairs(items: Optional[Sequence[str]], option: str, value_type: str = "json",
                metavar: str = "KEY=VALUE") -> Dict[str, Any]:
    """KEY=VALUE items (or JSON objects) of one option as a dict; later items win.

    `value_type` reads each VALUE: "json" (JSON, else the string), "str", "float" or "int".
    A malformed item is an error naming the option and the item."""
    read = VALUE_TYPES[value_type]
    result: Dict[str, Any] = {}
    for item in items or ():
        if item.lstrip().startswith("{"):
            try:
                values = json.loads(item)
            except json.JSONDecodeError as e:
                raise ValueError(f"{option}: {item!r} is not a JSON object ({e})") from None
            if not isinstance(values, dict):
                raise ValueError(f"{option}: {item!r} is not a JSON object")
            if value_type != "json":
                values = {k: read(json.dumps(v) if not isinstance(v, str) else v)
                          for k, v in values.items()}
            result.update(values)
            continue
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{option}: expected {metavar}, got {item!r}")
        try:
            result[key] = read(text)
        except ValueError as e:
            raise ValueError(f"{option} {item}: {e}") from None
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both runners share, with one syntax (see the module docstring)."""
    group = parser.add_argument_group("configuration (a flag wins over --config, --config over "
                                      "the preset)")
    group.add_argument("--config", default=None, metavar="FILE.json",
                       help="JSON file of PipelineConfig overrides, e.g. {\"training\": "
                            "{\"epochs\": 3}, \"gate\": {\"min_recall\": 0.7}, \"image_size\": 64}")
    group.add_argument("--training", nargs="+", action="extend", default=None, metavar="KEY=JSON",
                       help="Trainer settings, e.g. epochs=3 optimizer=sgd mixed_precision=true")
    group.add_argument("--gate", nargs="+", action="extend", default=None, metavar="KEY=JSON",
                       help="release-gate settings, e.g. min_recall=0.7 "
                            "group_min_recall='{\"north\": 0.8}'")
    group.add_argument("--list-files", nargs="+", default=None, metavar="SPLIT=PATTERN",
                       help="list file per split (default: train=train.json eval=test.json)")
    group.add_argument("--identity-split", nargs="+", default=None, metavar="SPLIT=BUCKETS",
                       help="split one list by label hash, e.g. train=9 eval=1")
    group.add_argument("--image-size", type=int, default=None, help="Transform's crop size")
    group.add_argument("--tflite-levels", type=int, nargs="+", choices=(0, 1, 2), default=None,
                       help="after the Pusher, convert the pushed model to TFLite at these "
                            "quantization levels, each checked against the SavedModel")


def from_arguments(args: argparse.Namespace) -> Dict[str, Any]:
    """The shared options (add_arguments) given on the command line, as an overrides dict."""
    result: Dict[str, Any] = {}
    ingest = {}
    if args.list_files:
        ingest["list_files"] = parse_pairs(args.list_files, "--list-files", "str",
                                           "SPLIT=PATTERN")
    if args.identity_split:
        ingest["identity_split"] = parse_pairs(args.identity_split, "--identity-split", "int",
                                               "SPLIT=BUCKETS")
    if ingest:
        result["ingest"] = ingest
    if args.training:
        result["training"] = parse_pairs(args.training, "--training", metavar="KEY=JSON")
    if args.gate:
        result["gate"] = parse_pairs(args.gate, "--gate", metavar="KEY=JSON")
    if args.image_size is not None:
        result["image_size"] = args.image_size
    if args.tflite_levels:
        result["tflite_levels"] = list(args.tflite_levels)
    return result


def load_file(path: str) -> Dict[str, Any]:
    """A --config file: a JSON object of overrides, its keys checked (see `check_keys`)."""
    try:
        with open(path) as f:
            values = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"--config: no such file {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"--config {path}: not valid JSON ({e})") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a JSON object of PipelineConfig settings, "
                         f"got {type(values).__name__}")
    check_keys(values, f"--config {path}")
    return values


def merge(*layers: Dict[str, Any]) -> Dict[str, Any]:
    """Overrides dicts laid over each other, later ones winning; the sections "ingest", "training"
    and "gate" are merged key by key, every other value is replaced whole."""
    result: Dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key in _MERGED_SECTIONS and isinstance(value, dict):
                result[key] = {**result.get(key, {}), **value}
            else:
                result[key] = value
    return result


def _unknown(key: str, known: Iterable[str], where: str) -> ValueError:
    known = sorted(known)
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = (f"closest known: {', '.join(close)}" if close
            else f"known: {', '.join(known)}")
    return ValueError(f"{where}: unknown setting {key!r}; {hint}")


def _field_names(cls) -> List[str]:
    return [f.name for f in dataclasses.fields(cls)]


def check_keys(overrides: Dict[str, Any], where: str) -> None:
    """Every key is a PipelineConfig field, an IngestConfig field under "ingest", a GateConfig
    field under "gate"; otherwise a ValueError names the key and the closest known ones. Trainer
    keys are checked by `check_training` (they belong to the model code)."""
    top = [n for n in _field_names(configs.PipelineConfig) if n not in _NOT_FROM_FILE]
    for key, value in overrides.items():
        if key not in top:
            raise _unknown(key, top, where)
        if key in _MERGED_SECTIONS and not isinstance(value, dict):
            raise ValueError(f"{where}: {key!r} must be a JSON object of settings, got {value!r}")
    sections = {"ingest": _field_names(configs.IngestConfig), "gate": _field_names(GateConfig)}
    for section, known in sections.items():
        for key in overrides.get(section, {}):
            if key not in known:
                raise _unknown(key, known, f"{where}, {section}")


def _check_type(name: str, value: Any, default: Any, where: str) -> None:
    """A value must have its default's JSON type (numbers: any number); None defaults accept
    anything, the consumer checks those."""
    if default is None:
        return
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    elif isinstance(default, list):
        ok, kind = isinstance(value, list), "a list"
    elif isinstance(default, dict):
        ok, kind = isinstance(value, dict), "an object"
    else:
        return
    if not ok:
        raise ValueError(f"{where}: {name} must be {kind}, got {value!r}")


def apply(config: configs.PipelineConfig, overrides: Dict[str, Any],
          where: str = "overrides") -> configs.PipelineConfig:
    """A copy of `config` with `overrides` (merged layers, see `merge`) applied.

    Keys and value types are checked (ValueError naming the setting). When "ingest" sets data_root
    but not image_root, image_root becomes <data_root>/images, as with --data-root."""
    check_keys(overrides, where)
    result = copy.deepcopy(config)
    for key, value in overrides.items():
        if key == "ingest":
            for name, item in value.items():
                _check_type(f"ingest.{name}", item, getattr(result.ingest, name), where)
                setattr(result.ingest, name, item)
            if "data_root" in value and "image_root" not in value:
                result.ingest.image_root = os.path.join(value["data_root"], "images")
        elif key in ("training", "gate"):
            getattr(result, key).update(value)
        else:
            _check_type(key, value, getattr(result, key), where)
            setattr(result, key, copy.deepcopy(value))
    if "gate" in overrides:
        try:
            GateConfig.from_dict(result.gate)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}, gate: {e}") from None
    if result.last_stage not in configs.STAGES:
        raise ValueError(f"{where}: last_stage must be one of {', '.join(configs.STAGES)}, "
                         f"got {result.last_stage!r}")
    return result


def check_training(settings: Dict[str, Any], replicas: Optional[int] = None) -> None:
    """Trainer settings checked by the model code (unknown keys, bad values, a batch that does not
    split over `replicas`: a ValueError naming them). Imports TensorFlow: call it once output goes
    where it should."""
    from models.trainer import check_training_settings

    check_training_settings(settings, replicas)
