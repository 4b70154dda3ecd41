"""Writes the model card (core/model_card.py) of an evaluation: model_card.json and its rendering,
model_card.html (one self-contained page: inline style, nothing fetched), into the `evaluation`
and `blessing` artifacts (the GuardedPusher copies the blessing's next to the pushed model) and as
the `model_card` page the Kubeflow Pipelines UI shows (a system.HTML artifact)."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence

import jinja2
import numpy as np
import tensorflow as tf

from components.recall_evaluator.report import CONTENT_SECURITY_POLICY
from core import model_card as card_lib

TEMPLATE = jinja2.Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<title>Model card: {{ card.model_details.name }}</title>
<style>
body { font-family: sans-serif; margin: 2em; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: left; }
pre { white-space: pre-wrap; background: #f6f6f6; padding: 0.7em; }
</style></head><body>
<h1>Model card: {{ card.model_details.name }}</h1>
<p>{{ card.model_details.overview }}</p>
<p>Version: {{ card.model_details.version.name }}<br>Path: <code>{{ card.model_details.path }}</code></p>
<h2>Operating point and release gate</h2>
<pre>{{ card.model_details.documentation }}</pre>
<h2>Model</h2>
<p>Architecture: {{ card.model_parameters.model_architecture }}<br>
Input: {{ card.model_parameters.input_format }}<br>Output: {{ card.model_parameters.output_format }}</p>
<h2>Data</h2>
{% for d in card.model_parameters.data %}<h3>{{ d.name }}</h3><p>{{ d.description }}</p>
{% if d.sensitive %}<p>Sensitive: {{ d.sensitive.sensitive_data | join(", ") }}</p>{% endif %}
{% endfor %}
<h2>Quantitative analysis</h2>
<table><tr><th>slice</th><th>metric</th><th>value</th><th>interval</th></tr>
{% for m in card.quantitative_analysis.performance_metrics %}<tr><td>{{ m.slice }}</td>
<td>{{ m.type }}</td><td>{{ m.value }}</td><td>{% if m.confidence_interval %}[{{
m.confidence_interval.lower_bound }}, {{ m.confidence_interval.upper_bound }}]{% else %}no interval{%
endif %}</td></tr>
{% endfor %}</table>
<h2>Considerations</h2>
{% for title, key in sections %}<h3>{{ title }}</h3><ul>
{% for item in card.considerations[key] %}<li>{{ item.description or item.name }}{% if
item.mitigation_strategy %}<br><em>Mitigation:</em> {{ item.mitigation_strategy }}{% endif %}</li>
{% endfor %}</ul>{% endfor %}
</body></html>
""", autoescape=True)
SECTIONS = (("Intended users", "users"), ("Use cases", "use_cases"), ("Limitations", "limitations"),
            ("Tradeoffs", "tradeoffs"), ("Ethical considerations", "ethical_considerations"))


def model_config_of(model_dir: str) -> Dict[str, Any]:
    """The export's ffem_model_config.json ({} for a model exported without one)."""
    from models import export

    try:
        return export.read_model_config(model_dir)
    except (tf.errors.NotFoundError, FileNotFoundError, ValueError):
        return {}


def render_html(card: Dict[str, Any]) -> str:
    return TEMPLATE.render(card=card, sections=SECTIONS, csp=CONTENT_SECURITY_POLICY)


def group_images(groups: Sequence[str]) -> Dict[str, int]:
    names, counts = np.unique(np.asarray(groups), return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts)}


def write_model_card(metrics: Dict[str, Any], point: Optional[Dict[str, Any]],
                     model_config: Dict[str, Any], groups: Sequence[str], examples_uri: str,
                     directories: Sequence[str], pages=()) -> Dict[str, Any]:
    """Builds the card, writes both files into each of `directories` and the HTML as the file at
    each of `pages`' URIs (system.HTML artifacts); returns the card."""
    card = card_lib.build(metrics, point, model_config, group_images(groups), examples_uri)
    text, page = json.dumps(card, indent=1), render_html(card)
    for directory in directories:
        tf.io.gfile.makedirs(directory)
        with tf.io.gfile.GFile(os.path.join(directory, card_lib.JSON_FILE), "w") as f:
            f.write(text)
        with tf.io.gfile.GFile(os.path.join(directory, card_lib.HTML_FILE), "w") as f:
            f.write(page)
    for artifact in pages:
        tf.io.gfile.makedirs(os.path.dirname(artifact.uri))
        with tf.io.gfile.GFile(artifact.uri, "w") as f:
            f.write(page)
    return card
