"""The release gate: per-group Recall@1 bars and no regression against the last blessed model.

A model is blessed only when every rule passes:
  min_recall        Recall@1 >= the bar, overall and in every group (a group may have its own bar)
  max_drop          Recall@1 may not drop by more than `max_drop` against the baseline model,
                    overall and in every group (only when a baseline exists)
  group_evaluated   every group with its own bar has queries in the eval split
Groups with fewer than `min_group_queries` answerable queries are reported but not gated.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

from core.features import OVERALL


@dataclasses.dataclass
class GateConfig:
    ks: List[int] = dataclasses.field(default_factory=lambda: [1, 5])
    min_recall: float = 0.5                      # default Recall@1 bar for every group
    min_recall_overall: Optional[float] = None   # default: min_recall
    group_min_recall: Dict[str, float] = dataclasses.field(default_factory=dict)
    max_drop: float = 0.02                       # allowed Recall@1 drop vs the baseline
    min_group_queries: int = 1

    def __post_init__(self):
        self.ks = sorted({int(k) for k in self.ks} | {1})
        for name, value in [("min_recall", self.min_recall), ("max_drop", self.max_drop),
                            *self.group_min_recall.items()]:
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")

    def bar(self, scope: str) -> float:
        if scope == OVERALL:
            return self.min_recall if self.min_recall_overall is None else self.min_recall_overall
        return float(self.group_min_recall.get(scope, self.min_recall))

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "GateConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown gate settings {sorted(unknown)}; known: {sorted(names)}")
        return cls(**values)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _rule(rule: str, scope: str, value, threshold, passed: bool, message: str) -> Dict[str, Any]:
    return {"rule": rule, "scope": scope, "value": value, "threshold": threshold,
            "passed": bool(passed), "message": message}


def evaluate_gate(candidate: Dict[str, Dict], config: GateConfig,
                  baseline: Optional[Dict[str, Dict]] = None) -> List[Dict[str, Any]]:
    """Every rule's verdict. `candidate`/`baseline` are recall_at_k results."""
    verdicts = []
    scopes = [OVERALL] + sorted(s for s in candidate if s != OVERALL)
    for scope in config.group_min_recall:
        if scope not in candidate or not candidate[scope]["n_queries"]:
            verdicts.append(_rule("group_evaluated", scope, 0, 1, False,
                                  f"group {scope!r} has its own bar but no answerable queries "
                                  f"in the eval split"))
    for scope in scopes:
        entry = candidate[scope]
        value = entry["recall@1"]
        if entry["n_queries"] < config.min_group_queries or value is None:
            continue
        bar = config.bar(scope)
        verdicts.append(_rule("min_recall", scope, value, bar, value >= bar,
                              f"{scope}: Recall@1 {value:.4f} {'>=' if value >= bar else '<'} "
                              f"bar {bar:.4f}"))
        if baseline is not None and scope in baseline and baseline[scope]["recall@1"] is not None:
            before = baseline[scope]["recall@1"]
            change = value - before
            passed = change >= -config.max_drop - 1e-12
            verdicts.append(_rule("max_drop", scope, change, -config.max_drop, passed,
                                  f"{scope}: Recall@1 {before:.4f} -> {value:.4f} "
                                  f"({change:+.4f}; allowed drop {config.max_drop:.4f})"))
    return verdicts


def deltas(candidate: Dict[str, Dict], baseline: Optional[Dict[str, Dict]],
           ks: List[int]) -> Dict[str, Dict[str, Optional[float]]]:
    """candidate - baseline for every scope and k (None where either is missing)."""
    result = {}
    for scope, entry in candidate.items():
        result[scope] = {}
        for k in ks:
            key = f"recall@{k}"
            mine = entry.get(key)
            theirs = (baseline or {}).get(scope, {}).get(key)
            result[scope][key] = None if mine is None or theirs is None else mine - theirs
    return result
