"""The release gate: per-group Recall@1 bars, no regression against the last blessed model, and
optional 1:1 verification rules. It fails closed: when something cannot be checked, the model is
not blessed and a rule says why.

Rules (a model is blessed only when every verdict passes; overall verdicts come first):
  min_recall         Recall@1 >= the bar, overall and in every gated group (a group may have its own
                     bar). `bar_test`: "point" (the measured value) or "lower_bound" (the lower end of
                     its 95 % interval must clear the bar).
  max_drop           against the baseline model (when there is one), overall and per gated group, on
                     the paired-bootstrap difference candidate - baseline. `regression_test`:
                     "point"            fail when the drop exceeds `max_drop` (noise decides small sets);
                     "significant"      fail when the drop exceeds `max_drop` AND the interval of the
                                        difference lies below 0 (default: noise alone never blocks);
                     "non_inferiority"  pass only when the interval's lower end is >= -max_drop (the
                                        evidence must show no larger drop; for large eval sets).
  max_fnmr           FNMR at the global threshold <= the value (one number for overall and every gated
                     group, or {scope: value}); off by default. `bar_test` "lower_bound" checks the
                     upper end of the interval (the pessimistic end) instead.
  max_fmr_ratio      FMR differential (max over gated groups of FMR / target_fmr) <= the value; off.
  max_fnmr_ratio     skewed error ratio (max / min FNMR over gated groups) <= the value; off.
Fail-closed rules:
  group_evaluated       a group named in the settings has no answerable query in the eval split
  min_group_identities  a gated group has fewer identities with an answerable query than
                        `min_group_identities` (its figures are too noisy to gate on)
  value_missing         a gated figure (or the interval a test needs) is missing or NaN
  verdicts_present      no rule produced a verdict
Which recall figure is gated: `gallery` "mixed" (each group's queries ranked against the whole eval
gallery, default) or "within" (against their own group only). A group named in `ungated_groups` is
reported but exempt from every rule; the overall scope is always gated.
Every verdict carries the interval it was judged on and `beyond_noise`: whether the whole interval
lies on the verdict's side of the threshold (None when there is no interval).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Optional, Union

from core.features import OVERALL

GALLERIES = ("mixed", "within")
REGRESSION_TESTS = ("point", "significant", "non_inferiority")
BAR_TESTS = ("point", "lower_bound")
_REMOVED = {"min_group_queries": "groups are no longer skipped silently: a gated group needs "
                                 "`min_group_identities` identities, and `ungated_groups` exempts a group"}


@dataclasses.dataclass
class GateConfig:
    ks: List[int] = dataclasses.field(default_factory=lambda: [1, 5])
    min_recall: float = 0.5                      # default Recall@1 bar for every group
    min_recall_overall: Optional[float] = None   # default: min_recall
    group_min_recall: Dict[str, float] = dataclasses.field(default_factory=dict)
    max_drop: float = 0.02                       # allowed Recall@1 drop vs the baseline
    gallery: str = "mixed"                       # "mixed" | "within": the Recall@1 that is gated
    regression_test: str = "significant"         # "point" | "significant" | "non_inferiority"
    bar_test: str = "point"                      # "point" | "lower_bound"
    min_group_identities: int = 10
    ungated_groups: List[str] = dataclasses.field(default_factory=list)
    target_fmr: float = 1e-3                     # sets the global 1:1 threshold
    max_fnmr: Union[None, float, Dict[str, float]] = None
    max_fmr_ratio: Optional[float] = None
    max_fnmr_ratio: Optional[float] = None
    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 0
    confidence: float = 0.95

    def __post_init__(self):
        self.ks = sorted({int(k) for k in self.ks} | {1})
        bounded = [("min_recall", self.min_recall), ("max_drop", self.max_drop),
                   *((f"group_min_recall[{g!r}]", v) for g, v in self.group_min_recall.items())]
        if self.min_recall_overall is not None:
            bounded.append(("min_recall_overall", self.min_recall_overall))
        if isinstance(self.max_fnmr, dict):
            bounded += [(f"max_fnmr[{g!r}]", v) for g, v in self.max_fnmr.items()]
        elif self.max_fnmr is not None:
            bounded.append(("max_fnmr", self.max_fnmr))
        for name, value in bounded:
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"gate setting {name} must be a number in [0, 1], got {value!r}")
        for name, value, allowed in [("gallery", self.gallery, GALLERIES),
                                     ("regression_test", self.regression_test, REGRESSION_TESTS),
                                     ("bar_test", self.bar_test, BAR_TESTS)]:
            if value not in allowed:
                raise ValueError(f"gate setting {name} must be one of {list(allowed)}, got {value!r}")
        if int(self.min_group_identities) != self.min_group_identities or self.min_group_identities < 1:
            raise ValueError(f"gate setting min_group_identities must be an integer >= 1, "
                             f"got {self.min_group_identities!r}")
        self.ungated_groups = sorted(str(g) for g in self.ungated_groups)
        if OVERALL in self.ungated_groups:
            raise ValueError(f"gate setting ungated_groups may not name {OVERALL!r}: it is always gated")
        if not 0.0 < float(self.target_fmr) < 1.0:
            raise ValueError(f"gate setting target_fmr must be in (0, 1), got {self.target_fmr!r}")
        for name in ("max_fmr_ratio", "max_fnmr_ratio"):
            value = getattr(self, name)
            if value is not None and not float(value) >= 1.0:
                raise ValueError(f"gate setting {name} must be >= 1 (a max/min ratio), got {value!r}")
        if int(self.bootstrap_resamples) < 100:
            raise ValueError(f"gate setting bootstrap_resamples must be >= 100, "
                             f"got {self.bootstrap_resamples!r}")
        if not 0.5 <= float(self.confidence) < 1.0:
            raise ValueError(f"gate setting confidence must be in [0.5, 1), got {self.confidence!r}")

    def bar(self, scope: str) -> float:
        if scope == OVERALL:
            return self.min_recall if self.min_recall_overall is None else self.min_recall_overall
        return float(self.group_min_recall.get(scope, self.min_recall))

    def gated(self, scope: str) -> bool:
        return scope == OVERALL or scope not in self.ungated_groups

    def fnmr_bar(self, scope: str) -> Optional[float]:
        if isinstance(self.max_fnmr, dict):
            value = self.max_fnmr.get(scope)
            return None if value is None else float(value)
        return None if self.max_fnmr is None else float(self.max_fnmr)

    @property
    def suffix(self) -> str:
        """Key suffix of the gated recall figure: "" (whole gallery) or "_within"."""
        return "_within" if self.gallery == "within" else ""

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "GateConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        for name, reason in _REMOVED.items():
            if name in values:
                raise ValueError(f"gate setting {name} was removed: {reason}")
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown gate settings {sorted(unknown)}; known: {sorted(names)}")
        return cls(**values)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _interval_text(interval, level) -> str:
    if not interval:
        return "no interval"
    return f"{level:.0%} interval [{interval[0]:.4f}, {interval[1]:.4f}]"


def _verdict(rule, scope, value, threshold, passed, message, interval=None, beyond_noise=None,
             test=None) -> Dict[str, Any]:
    return {"rule": rule, "scope": scope, "value": value, "threshold": threshold,
            "passed": bool(passed), "message": message, "interval": interval,
            "beyond_noise": beyond_noise, "test": test}


def _beyond(interval, passed: bool, at_least: float, higher_is_better: bool = True):
    """Whether the whole interval lies on the verdict's side of `at_least`."""
    if not interval:
        return None
    lo, hi = interval
    good = lo >= at_least if higher_is_better else hi <= at_least
    bad = hi < at_least if higher_is_better else lo > at_least
    return bool(good if passed else bad)


def _noise_text(beyond) -> str:
    return "" if beyond is None else ("; beyond noise" if beyond else "; within noise")


def evaluate_gate(candidate: Dict[str, Dict], config: GateConfig,
                  deltas: Optional[Dict[str, Dict]] = None,
                  verification: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """Every rule's verdict, overall first. `candidate`: metrics.json's "candidate" (per scope
    `recall@1`, `recall@1_ci`, `recall@1_within`, ..., `n_identities`...); `deltas`: its "deltas"
    (None without a baseline); `verification`: its "verification" (needed by the 1:1 rules)."""
    level = config.confidence
    suffix = config.suffix
    key = f"recall@1{suffix}"
    label = "Recall@1" + (" within group" if suffix else "")
    groups = sorted(s for s in candidate if s != OVERALL)
    first, later = [], []
    named = set(config.group_min_recall) | (set(config.max_fnmr) if isinstance(config.max_fnmr, dict)
                                            else set())
    for scope in sorted(named - {OVERALL}):
        entry = candidate.get(scope)
        if scope not in config.ungated_groups and (not entry or not entry.get(f"n_queries{suffix}")):
            later.append(_verdict("group_evaluated", scope, 0, 1, False,
                                  f"group {scope!r} is named in the gate settings but has no "
                                  f"answerable queries in the eval split"))
    for scope in [OVERALL] + groups:
        if not config.gated(scope):
            continue
        out = first if scope == OVERALL else later
        entry = candidate[scope]
        if scope != OVERALL:
            count = entry.get(f"n_identities{suffix}", 0)
            if count < config.min_group_identities:
                out.append(_verdict("min_group_identities", scope, count, config.min_group_identities,
                                    False, f"{scope}: {count} identities with an answerable query, "
                                    f"fewer than min_group_identities {config.min_group_identities}: "
                                    f"too few to gate on (name it in ungated_groups to exempt it)"))
        out += _recall_verdicts(scope, entry, key, label, config, level)
        if deltas is not None:
            out += _drop_verdicts(scope, (deltas or {}).get(scope, {}), key, label, config, level)
        if config.max_fnmr is not None and config.fnmr_bar(scope) is not None:
            out += _fnmr_verdicts(scope, (verification or {}).get(scope, {}), config, level)
    verdicts = first + later
    verdicts += _ratio_verdicts(verification or {}, config, level)
    if not verdicts:
        verdicts.append(_verdict("verdicts_present", OVERALL, 0, 1, False,
                                 "no rule produced a verdict: nothing was checked"))
    return verdicts


def _recall_verdicts(scope, entry, key, label, config, level):
    value, interval = entry.get(key), entry.get(f"{key}_ci")
    bar = config.bar(scope)
    if _missing(value) or (config.bar_test == "lower_bound" and not interval):
        what = "value" if _missing(value) else "interval"
        return [_verdict("value_missing", scope, value, bar, False,
                         f"{scope}: {label} {what} is missing (no answerable query?): cannot check "
                         f"the bar {bar:.4f}")]
    judged = interval[0] if config.bar_test == "lower_bound" else value
    passed = judged >= bar
    beyond = _beyond(interval, passed, bar)
    tested = " (interval's lower end)" if config.bar_test == "lower_bound" else ""
    return [_verdict("min_recall", scope, value, bar, passed,
                     f"{scope}: {label} {value:.4f} {'>=' if passed else '<'} bar {bar:.4f}{tested} "
                     f"({_interval_text(interval, level)}{_noise_text(beyond)})",
                     interval, beyond, config.bar_test)]


def _drop_verdicts(scope, delta_entry, key, label, config, level):
    change, interval = delta_entry.get(key), delta_entry.get(f"{key}_ci")
    allowed = -config.max_drop
    test = config.regression_test
    if _missing(change) or (test != "point" and not interval):
        return [_verdict("value_missing", scope, change, allowed, False,
                         f"{scope}: {label} change against the baseline is missing (or its interval, "
                         f"needed by the {test!r} test): cannot check the allowed drop")]
    exceeds = change < allowed - 1e-12
    if test == "point":
        passed = not exceeds
    elif test == "significant":
        passed = not (exceeds and interval[1] < 0)
    else:
        passed = interval[0] >= allowed - 1e-12
    beyond = _beyond(interval, passed, allowed)
    if test == "significant" and exceeds and passed:
        reason = "drop exceeds the allowance but the interval includes 0: not significant"
    elif test == "non_inferiority":
        reason = f"interval's lower end {'>=' if passed else '<'} {allowed:+.4f}"
    else:
        reason = "within the allowance" if not exceeds else "drop exceeds the allowance"
    return [_verdict("max_drop", scope, change, allowed, passed,
                     f"{scope}: {label} change {change:+.4f} (allowed drop {config.max_drop:.4f}, "
                     f"{test} test: {reason}; {_interval_text(interval, level)}{_noise_text(beyond)})",
                     interval, beyond, test)]


def _fnmr_verdicts(scope, entry, config, level):
    value, interval = entry.get("fnmr"), entry.get("fnmr_ci")
    bar = config.fnmr_bar(scope)
    if _missing(value) or (config.bar_test == "lower_bound" and not interval):
        return [_verdict("value_missing", scope, value, bar, False,
                         f"{scope}: FNMR at the threshold is missing (no genuine or impostor pairs?): "
                         f"cannot check max_fnmr {bar:.4f}")]
    judged = interval[1] if config.bar_test == "lower_bound" else value
    passed = judged <= bar
    beyond = _beyond(interval, passed, bar, higher_is_better=False)
    return [_verdict("max_fnmr", scope, value, bar, passed,
                     f"{scope}: FNMR {value:.4f} {'<=' if passed else '>'} {bar:.4f} "
                     f"({_interval_text(interval, level)}{_noise_text(beyond)})",
                     interval, beyond, config.bar_test)]


def _ratio_verdicts(verification, config, level):
    verdicts = []
    for rule, key, what in [("max_fmr_ratio", "fmr_differential", "FMR differential"),
                            ("max_fnmr_ratio", "skewed_error_ratio", "skewed error ratio (FNMR)")]:
        bar = getattr(config, rule)
        if bar is None:
            continue
        value, interval = verification.get(key), verification.get(f"{key}_ci")
        if _missing(value) or (config.bar_test == "lower_bound" and not interval):
            verdicts.append(_verdict("value_missing", OVERALL, value, bar, False,
                                     f"{what} is missing or unbounded (a group with no errors next to "
                                     f"one with errors, or no group with pairs): cannot check "
                                     f"{rule} {bar:.4f}"))
            continue
        judged = interval[1] if config.bar_test == "lower_bound" else value
        passed = judged <= bar
        beyond = _beyond(interval, passed, bar, higher_is_better=False)
        verdicts.append(_verdict(rule, OVERALL, value, bar, passed,
                                 f"{what} {value:.3f} {'<=' if passed else '>'} {bar:.3f} "
                                 f"({_interval_text(interval, level)}{_noise_text(beyond)})",
                                 interval, beyond, config.bar_test))
    return verdicts
