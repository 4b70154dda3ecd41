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

from typing import Dict

APPROXIMATE_MARK = "≈"
RESULTS = "benchmarks/results.md (coverage of the gate's intervals)"

APPROXIMATE: Dict[str, str] = {
    "fmr": "conservative (wider than 95 %): the identity bootstrap of a pair statistic counts the "
           "variance of pairs of identities about twice; a rule judged on it refuses more often "
           f"than it needs to. Measured in {RESULTS}",
    "delta fmr": "conservative (wider than 95 %), as the FMR's own interval. Measured in "
                 f"{RESULTS}",
    "skewed_error_ratio": "conservative (wider than 95 %): per end the wider of the bias-corrected "
                          "bootstrap and the groups' joint small-count bounds. Measured in "
                          f"{RESULTS}",
}


def approximate_intervals() -> Dict[str, str]:
    """{figure: why its interval is approximate} for metrics.json."""
    return dict(APPROXIMATE)


def mark(approximate: Dict[str, str], figure: str) -> str:
    """" ≈" when `figure`'s interval is in `approximate` (metrics.json's list), else ""."""
    return f" {APPROXIMATE_MARK}" if figure in (approximate or {}) else ""
