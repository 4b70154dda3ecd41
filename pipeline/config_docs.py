"""docs/configuration.md, generated from the settings tree (pipeline/configs.py): every setting a
person can set, with its type, default and meaning. `python -m tools.config_docs` writes it;
tests/test_settings.py fails when the file is stale."""
from __future__ import annotations

import json
import os
from typing import Any, List

from core.settings.base import Section, documented_fields, type_name
from pipeline import configs

DOC_PATH = os.path.join(configs.REPO_ROOT, "docs", "configuration.md")
_HEADER = """# Configuration

Every setting of the pipeline, generated from the settings classes by `python -m tools.config_docs`
(a test fails when this page is stale). An experiment is a JSON file of these settings, e.g.

    {"model": {"loss": "CosFace"}, "training": {"epochs": 3}, "gate": {"min_recall": 0.7}}

`--preset NAME` reads [configs/NAME.json](../configs) over the defaults below, `--config FILE` a
file of one's own over that, and flags win over both (`--model`, `--training`, `--gate` take
`KEY=JSON` pairs; `--epochs`, `--loss`, ... set one setting each). A section given in a layer is
merged key by key into the layer below. Every key is checked when the pipeline is built: an
unknown one, at any depth, stops the build naming the closest known keys.
"""


def _default(value: Any) -> str:
    if isinstance(value, str) and value.startswith(configs.REPO_ROOT):
        value = "<checkout>" + value[len(configs.REPO_ROOT):]
    return "`" + json.dumps(value) + "`"


def _rows(cls, prefix: str, sections: List[tuple]) -> List[str]:
    rows = []
    for name, annotation, default, help_text in documented_fields(cls):
        if isinstance(annotation, type) and issubclass(annotation, Section):
            sections.append((f"{prefix}{name}", annotation, help_text))
            continue
        rows.append(f"| `{prefix}{name}` | {type_name(annotation)} | {_default(default)} | "
                    f"{help_text} |")
    return rows


def markdown() -> str:
    lines = [_HEADER]
    pending = [("", configs.PipelineConfig, "where things are, stages, Beam")]
    while pending:
        prefix, cls, help_text = pending.pop(0)
        title = prefix or "top level"
        source = cls.__module__.replace(".", "/") + ".py"
        lines += [f"## `{title}`: {help_text}", "", f"`{cls.__name__}` in `{source}`.", "",
                  "| setting | type | default | meaning |", "| --- | --- | --- | --- |"]
        nested: List[tuple] = []
        lines += _rows(cls, f"{prefix}." if prefix else "", nested)
        lines.append("")
        pending += nested
    return "\n".join(lines)
