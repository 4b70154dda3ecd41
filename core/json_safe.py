"""metrics.json as strict JSON: infinite numbers as the strings "inf" / "-inf", NaN as null.

Why: an interval of a ratio may end at +infinity (a resample whose smallest group FNMR is 0 makes the
skewed error ratio unbounded), and Python's json module would write that as the bare token
`Infinity`, which is not JSON: strict parsers (JavaScript's JSON.parse, jq, most other languages)
refuse the whole file. NaN has no meaning a reader could act on, so it is written as null (missing),
which every reader already treats as "no value" (the gate fails closed on it).

`dumps` / `dump` write with allow_nan=False, so a non-finite number that escaped `encode` is an
error, never silent bad JSON. `loads` / `load` turn "inf" / "-inf" back into floats in the places
where metrics.json holds numbers, and only there:
* every dict value, except under the keys in TEXT_KEYS (a group may be named "inf": the `scope` of
  a verdict stays a string);
* the elements of a list under a key ending in "_ci" or named "interval" (the intervals).
Lists of names (`ratio_groups`, `ungated`, `failed_rules`) are left alone. encode(decode(x)) == x
for any JSON-safe x, and decode(encode(y)) == y for any y whose infinite numbers sit in those
places (NaN comes back as None).
"""
from __future__ import annotations

import json
import math
from typing import IO, Any

INF, NEG_INF = "inf", "-inf"
# Keys whose values are always text, never numbers.
TEXT_KEYS = frozenset({"scope", "rule", "message", "statistic", "test", "split", "uri", "bound",
                       "gallery", "regression_test", "bar_test"})


def encode(value: Any) -> Any:
    """A copy of `value` (dicts, lists, tuples, numbers, strings, None) with +-inf as "inf" /
    "-inf" and NaN as None. NumPy scalars are plain floats / ints by then (float(), int())."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return INF if value > 0 else NEG_INF
        return value
    if isinstance(value, dict):
        return {key: encode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    return value


def number(value: Any) -> Any:
    """`value` with "inf" / "-inf" read as +-infinity (any other value as it is)."""
    if value == INF:
        return math.inf
    if value == NEG_INF:
        return -math.inf
    return value


def decode(value: Any, key: str = "") -> Any:
    """The inverse of `encode` in the numeric places of metrics.json (the module docstring)."""
    if isinstance(value, dict):
        return {k: decode(item, k) for k, item in value.items()}
    if isinstance(value, list):
        interval = key.endswith("_ci") or key == "interval"
        return [number(item) if interval and isinstance(item, str) else decode(item)
                for item in value]
    if isinstance(value, str) and key and key not in TEXT_KEYS:
        return number(value)
    return value


def dumps(value: Any, **kwargs) -> str:
    return json.dumps(encode(value), allow_nan=False, **kwargs)


def dump(value: Any, f: IO[str], **kwargs) -> None:
    json.dump(encode(value), f, allow_nan=False, **kwargs)


def loads(text: str) -> Any:
    return decode(json.loads(text))


def load(f: IO[str]) -> Any:
    return decode(json.load(f))
