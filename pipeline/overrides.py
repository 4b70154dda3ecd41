"""The runners' one way to change a PipelineConfig: `--preset`, `--config FILE.json` and flags.

An experiment is a JSON file of the settings tree (pipeline/configs.py) a reviewer can read, e.g.

    {"image_size": 64, "model": {"loss": "CosFace"}, "training": {"epochs": 3},
     "gate": {"min_recall": 0.7}, "ingest": {"data_root": "/data/faces"}}

Sections (ingest, model, training and its augmentation, gate) are merged key by key into the
layer below (a file that sets one Trainer setting keeps the others); every other value is replaced
whole. Flags given on the command line are turned into the same kind of dict and laid over the
file's, so a flag always wins over the file and the file over the preset.

Pair options (`--model`, `--training`, `--gate`, `--list-files`, `--identity-split`,
`--group-min-recall`) take KEY=VALUE items, VALUE read as JSON (`epochs=3`, `mixed_precision=true`,
`optimizer="sgd"`); a VALUE that is not JSON is taken as a string (`optimizer=sgd`,
`train=train-*.json`). An item may also be one JSON object (`--training '{"epochs": 3}'`).
An unknown key anywhere is an error that names it, the closest known ones and the section that has
it (`--training loss=CosFace`: loss is a model setting).
"""
from __future__ import annotations

import argparse
import json
from typing import Any, Callable, Dict, Optional, Sequence

from core.settings.base import Section
from pipeline import configs


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
                       help="JSON file of settings (docs/configuration.md), e.g. {\"training\": "
                            "{\"epochs\": 3}, \"gate\": {\"min_recall\": 0.7}, \"image_size\": 64}")
    group.add_argument("--model", nargs="+", action="extend", default=None, metavar="KEY=JSON",
                       help="model settings, e.g. loss=CosFace sample_rate=0.1")
    group.add_argument("--training", nargs="+", action="extend", default=None, metavar="KEY=JSON",
                       help="Trainer settings, e.g. epochs=3 optimizer=sgd mixed_precision=true "
                            "augmentation='{\"cutout\": false}'")
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
    if args.model:
        result["model"] = parse_pairs(args.model, "--model", metavar="KEY=JSON")
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
    """A --config file: a JSON object of settings, every key and value checked."""
    return configs.read_settings_file(path)


def merge(*layers: Dict[str, Any]) -> Dict[str, Any]:
    """Overrides dicts laid over each other, later ones winning; a section (a dict under a key
    that is a section: ingest, model, training, training.augmentation, gate) is merged key by
    key, every other value replaced whole."""
    result: Dict[str, Any] = {}
    for layer in layers:
        _merge_into(result, layer, configs.PipelineConfig.field_types())
    return result


def _merge_into(result: Dict[str, Any], layer: Dict[str, Any], types: Dict[str, Any]) -> None:
    for key, value in layer.items():
        section = types.get(key)
        if isinstance(value, dict) and isinstance(section, type) and \
                issubclass(section, Section) and isinstance(result.get(key), dict):
            merged = dict(result[key])
            _merge_into(merged, value, section.field_types())
            result[key] = merged
        else:
            result[key] = value


def check_keys(overrides: Dict[str, Any], where: str) -> None:
    """Every key at every depth is a setting and every value has its type (ValueError naming the
    setting, the closest known keys and the section that has a misplaced key)."""
    configs.PipelineConfig().updated(overrides, where)


def apply(config: configs.PipelineConfig, overrides: Dict[str, Any],
          where: str = "overrides") -> configs.PipelineConfig:
    """A copy of `config` with `overrides` (merged layers, see `merge`) applied, checked. When
    "ingest" sets data_root but not image_root, image_root becomes <data_root>/images."""
    return config.updated(overrides, where)
