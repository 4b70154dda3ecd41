"""Which of the gate's 95 % intervals are approximate: those whose coverage, measured by the
simulation of benchmarks/coverage.py (`make bench ARGS="--only coverage"`, tables in
benchmarks/results.md), stays outside 0.93-0.97 in some condition. metrics.json lists them under
`approximate_intervals` ({figure: reason}); the report and `tools.review show` put
APPROXIMATE_MARK next to each such interval and the reason below. The numbers live in
benchmarks/results.md only; this module names the intervals and why.

Figures are the metric keys of metrics.json (an interval is `<key>_ci`): "recall@1",
"recall@1_within", "fnmr", "fmr", "fmr_differential", "skewed_error_ratio"; the paired
candidate - baseline deltas are "delta <key>".
"""
from __future__ import annotations

from typing import Any, Dict

APPROXIMATE_MARK = "≈"
RESULTS = "benchmarks/results.md (coverage of the gate's intervals)"

_FEW = ("conservative (wider than 95 %) where few errors (misses) are seen: no error seen bounds a "
        "rate only as far as the identities allow; closer to nominal with many")
_PAIRS = ("conservative (wider than 95 %): the identity bootstrap of a statistic over pairs of "
          "identities counts the variance of the pairs about twice, so a rule judged on it "
          "refuses more often than it needs to")
APPROXIMATE: Dict[str, str] = {
    "recall@1": _FEW,
    "recall@1_within": _FEW,
    "fnmr": "conservative (wider than 95 %) with few errors, and per group, whose score interval "
            "takes at least the design effect measured on all groups and a t quantile at the "
            "identities that hold its errors, so that an eval set that did not draw a group's "
            "hardest identities still bounds its rate",
    "fmr": _PAIRS,
    "fmr_differential": "bias-corrected lower end, upper end at least the percentile one: "
                        "conservative at the upper end in some conditions",
    "skewed_error_ratio": "conservative (wider than 95 %): per end the wider of the bias-corrected "
                          "bootstrap and the groups' joint small-count bounds",
    "delta recall@1": _FEW,
    "delta recall@1_within": _FEW,
    "delta fnmr": _FEW,
    "delta fmr": _PAIRS,
}
# Each reason says which way the interval errs: wider than 95 % (conservative: a rule judged on it
# fails safe) or, where measured below 0.93, too narrow.


def approximate_intervals() -> Dict[str, str]:
    """{figure: why its interval is approximate} for metrics.json."""
    return dict(APPROXIMATE)


def mark(approximate: Dict[str, str], figure: str) -> str:
    """" ≈" when `figure`'s interval is in `approximate` (metrics.json's list), else ""."""
    return f" {APPROXIMATE_MARK}" if figure in (approximate or {}) else ""


def verdict_mark(approximate: Dict[str, str], verdict: Dict[str, Any]) -> str:
    """`mark` of the interval a gate verdict quotes (its `interval`): the figure is the verdict's
    `statistic`, or "delta <statistic>" for a change against the baseline (`difference`); "" for a
    verdict that quotes no interval."""
    statistic = verdict.get("statistic")
    if not statistic or verdict.get("interval") is None:
        return ""
    return mark(approximate, f"delta {statistic}" if verdict.get("difference") else statistic)
