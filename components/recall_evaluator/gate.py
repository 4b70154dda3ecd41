"""The release gate: per-group Recall@1 bars, no regression against the last blessed model, and
optional 1:1 verification rules. It fails closed: when something cannot be checked, the model is
not blessed and a rule says why.

Rules (a model is blessed only when every verdict passes; overall verdicts come first):
  min_recall         Recall@1 >= the bar, overall and in every gated group (a group may have its own
                     bar).
  max_drop           against the baseline model (when there is one), overall and per gated group, on
                     the paired-bootstrap difference candidate - baseline. `regression_test`:
                     "point"            fail when the drop exceeds `max_drop` (noise decides small sets);
                     "significant"      fail when the drop exceeds `max_drop` AND the interval of the
                                        difference lies below 0 (default: noise alone never blocks);
                     "non_inferiority"  pass only when the interval's lower end is >= -max_drop (the
                                        evidence must show no larger drop; for large eval sets).
  max_fnmr           FNMR at the global threshold <= the value (one number for overall and every gated
                     group, or {scope: value}); off by default.
  max_fmr_ratio      FMR differential (max over gated groups of FMR / target_fmr) <= the value; off.
  max_fnmr_ratio     skewed error ratio (max / min FNMR over gated groups) <= the value; off.
`bar_test` decides what min_recall, max_fnmr, max_fmr_ratio and max_fnmr_ratio compare with their
bar: "point" the measured value; "interval" the conservative end of its 95 % interval, the lower end
for a minimum (min_recall), the upper end for a maximum (the max_ rules), so the evidence must show
the bar is met. "lower_bound", its former name (which said the right thing for minimum rules only),
is still accepted and read as "interval" (deprecated).
Unbounded values: a ratio may be +inf (and an interval may end at +inf) when a group has no errors
next to one with errors. +inf fails every finite maximum; a rule judged on an interval end that is
infinite fails closed.
Fail-closed rules:
  group_evaluated       a group named in the settings has no answerable query in the eval split
  min_group_identities  a gated group has fewer identities with an answerable query than
                        `min_group_identities` (its figures are too noisy to gate on)
  value_missing         a gated figure (or the interval a test needs) is missing or NaN ("no
                        interval": undefined in more than half of the resamples)
  verdicts_present      no rule produced a verdict
Which recall figure is gated: `gallery` "mixed" (each group's queries ranked against the whole eval
gallery, default) or "within" (against their own group only). A group named in `ungated_groups` is
reported but exempt from every rule; the overall scope is always gated.
Every verdict carries the interval it was judged on and `beyond_noise`: whether the whole interval
lies on the verdict's side of the threshold (None when there is no interval); `statistic` (the
metrics.json key it judges, e.g. "recall@1", "fnmr", "fmr_differential"; `difference` True when it
is the candidate - baseline change), `bound` ("lower": the threshold is a minimum; "upper": a
maximum) and `judged` (the number compared with the threshold: the value or an interval end; None
for value_missing, which compared nothing).

Advisories (`advisories`): what the 1:1 view shows while the rule that would gate it is off. They
never change the verdict; the report (a box above the rules), `tools.review show`, metrics.json
("advisories") and the console's result line name them. Each needs the WHOLE interval beyond its
level, so noise alone never raises one:
  fmr_differential   max_fmr_ratio is off and the differential's interval lies above
                     max(ADVISORY_FMR_RATIO, the composition ceiling). The ceiling is the
                     differential a model with the SAME FMR in every group would show at this
                     threshold if no pair across groups matched: false matches overall / (target_fmr
                     x impostor pairs inside groups); about k for k equally large groups. The
                     threshold is set on all impostor pairs, most of them across groups, which
                     rarely match, so group FMRs above the target are expected up to that ceiling.
  skewed_error_ratio max_fnmr_ratio is off and the ratio's interval lies above ADVISORY_FNMR_RATIO.
  fnmr (a group)     max_fnmr_ratio is off and a gated group's FNMR interval lies wholly above the
                     overall FNMR interval (its level: the overall interval's upper end).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

from core.features import OVERALL
from core.settings.gate import GateConfig

# Advisory levels (the module docstring): a group rejecting genuine users 1.5 times as often as
# another; a group's FMR at least twice the target and above what the groups' composition explains
# (`composition_ceiling`).
ADVISORY_FMR_RATIO = 2.0
ADVISORY_FNMR_RATIO = 1.5


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _usable(interval) -> Optional[List[float]]:
    """`interval` as [lo, hi] when it is two numbers, neither NaN (either may be infinite); else
    None: a rule that needs it fails closed."""
    if not isinstance(interval, (list, tuple)) or len(interval) != 2:
        return None
    if any(isinstance(end, bool) or not isinstance(end, (int, float)) or math.isnan(end)
           for end in interval):
        return None
    return [float(interval[0]), float(interval[1])]


def number_text(value, digits: int = 4, signed: bool = False) -> str:
    """A figure as text: "inf" / "-inf" for an unbounded one, "-" for none."""
    if _missing(value):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def interval_text(interval, digits: int = 4, signed: bool = False) -> str:
    """"[lo, hi]" (an infinite end as "inf"), or "no interval"."""
    interval = _usable(interval)
    if interval is None:
        return "no interval"
    return f"[{number_text(interval[0], digits, signed)}, {number_text(interval[1], digits, signed)}]"


def _interval_text(interval, level, signed: bool = False) -> str:
    if _usable(interval) is None:
        return "no interval"
    return f"{level:.0%} interval {interval_text(interval, signed=signed)}"


def _verdict(rule, scope, value, threshold, passed, message, interval=None, beyond_noise=None,
             test=None, statistic=None, bound=None, judged=None, difference=False) -> Dict[str, Any]:
    return {"rule": rule, "scope": scope, "value": value, "threshold": threshold,
            "passed": bool(passed), "message": message, "interval": interval,
            "beyond_noise": beyond_noise, "test": test, "statistic": statistic,
            "difference": bool(difference), "bound": bound,
            # A figure that could not be checked was compared with nothing.
            "judged": None if rule == "value_missing" else (value if judged is None else judged)}


def _beyond(interval, passed: bool, at_least: float, higher_is_better: bool = True):
    """Whether the whole interval lies on the verdict's side of `at_least`."""
    interval = _usable(interval)
    if interval is None:
        return None
    lo, hi = interval
    good = lo >= at_least if higher_is_better else hi <= at_least
    bad = hi < at_least if higher_is_better else lo > at_least
    return bool(good if passed else bad)


def _noise_text(beyond) -> str:
    return "" if beyond is None else ("; beyond noise" if beyond else "; within noise")


def _bar_judged(value, interval, config, bound: str) -> float:
    """What a bar is compared with under `bar_test`: the value, or the interval's conservative end
    (the lower end for a minimum, the upper end for a maximum)."""
    if config.bar_test != "interval":
        return value
    return interval[0] if bound == "lower" else interval[1]


def _bar_test_text(config, bound: str) -> str:
    if config.bar_test != "interval":
        return ""
    return " (interval's lower end)" if bound == "lower" else " (interval's upper end)"


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
                                  f"answerable queries in the eval split",
                                  statistic=f"n_queries{suffix}", bound="lower"))
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
                                    f"too few to gate on (name it in ungated_groups to exempt it)",
                                    statistic=f"n_identities{suffix}", bound="lower"))
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
    value, interval = entry.get(key), _usable(entry.get(f"{key}_ci"))
    bar = config.bar(scope)
    if _missing(value) or (config.bar_test == "interval" and interval is None):
        what = "value" if _missing(value) else "interval"
        return [_verdict("value_missing", scope, value, bar, False,
                         f"{scope}: {label} {what} is missing (no answerable query?): cannot check "
                         f"the bar {bar:.4f}", statistic=key, bound="lower")]
    judged = _bar_judged(value, interval, config, "lower")
    passed = judged >= bar
    beyond = _beyond(interval, passed, bar)
    return [_verdict("min_recall", scope, value, bar, passed,
                     f"{scope}: {label} {number_text(value)} {'>=' if passed else '<'} bar {bar:.4f}"
                     f"{_bar_test_text(config, 'lower')} "
                     f"({_interval_text(interval, level)}{_noise_text(beyond)})",
                     interval, beyond, config.bar_test, key, "lower", judged)]


def _drop_verdicts(scope, delta_entry, key, label, config, level):
    change, interval = delta_entry.get(key), _usable(delta_entry.get(f"{key}_ci"))
    allowed = -config.max_drop
    test = config.regression_test
    if _missing(change) or (test != "point" and interval is None):
        return [_verdict("value_missing", scope, change, allowed, False,
                         f"{scope}: {label} change against the baseline is missing (or its interval, "
                         f"needed by the {test!r} test): cannot check the allowed drop",
                         statistic=key, bound="lower", difference=True)]
    exceeds = change < allowed - 1e-12
    judged = change
    if test == "point":
        passed = not exceeds
    elif test == "significant":
        passed = not (exceeds and interval[1] < 0)
    else:
        judged = interval[0]
        passed = interval[0] >= allowed - 1e-12
    beyond = _beyond(interval, passed, allowed)
    if test == "significant" and exceeds and passed:
        reason = "drop exceeds the allowance but the interval includes 0: not significant"
    elif test == "non_inferiority":
        reason = f"interval's lower end {'>=' if passed else '<'} {allowed:+.4f}"
    else:
        reason = "within the allowance" if not exceeds else "drop exceeds the allowance"
    return [_verdict("max_drop", scope, change, allowed, passed,
                     f"{scope}: {label} change {number_text(change, signed=True)} (allowed drop "
                     f"{config.max_drop:.4f}, {test} test: {reason}; "
                     f"{_interval_text(interval, level, signed=True)}{_noise_text(beyond)})",
                     interval, beyond, test, key, "lower", judged, difference=True)]


def _fnmr_verdicts(scope, entry, config, level):
    value, interval = entry.get("fnmr"), _usable(entry.get("fnmr_ci"))
    bar = config.fnmr_bar(scope)
    if _missing(value) or (config.bar_test == "interval" and interval is None):
        what = "value" if _missing(value) else "interval"
        return [_verdict("value_missing", scope, value, bar, False,
                         f"{scope}: FNMR {what} at the threshold is missing (no genuine or impostor "
                         f"pairs?): cannot check max_fnmr {bar:.4f}", statistic="fnmr", bound="upper")]
    judged = _bar_judged(value, interval, config, "upper")
    passed = judged <= bar
    beyond = _beyond(interval, passed, bar, higher_is_better=False)
    return [_verdict("max_fnmr", scope, value, bar, passed,
                     f"{scope}: FNMR {number_text(value)} {'<=' if passed else '>'} {bar:.4f}"
                     f"{_bar_test_text(config, 'upper')} "
                     f"({_interval_text(interval, level)}{_noise_text(beyond)})",
                     interval, beyond, config.bar_test, "fnmr", "upper", judged)]


RATIO_RULES = (("max_fmr_ratio", "fmr_differential", "FMR differential"),
               ("max_fnmr_ratio", "skewed_error_ratio", "skewed error ratio (FNMR)"))


def _ratio_verdicts(verification, config, level):
    verdicts = []
    for rule, key, what in RATIO_RULES:
        bar = getattr(config, rule)
        if bar is None:
            continue
        value, interval = verification.get(key), _usable(verification.get(f"{key}_ci"))
        if _missing(value) or (config.bar_test == "interval" and interval is None):
            missing = ("is missing or undefined (no gated group with pairs)" if _missing(value)
                       else "has no interval (undefined in more than half of the resamples)")
            verdicts.append(_verdict("value_missing", OVERALL, value, bar, False,
                                     f"{what} {missing}: cannot check {rule} {bar:.3f}",
                                     statistic=key, bound="upper"))
            continue
        judged = _bar_judged(value, interval, config, "upper")
        passed = judged <= bar
        beyond = _beyond(interval, passed, bar, higher_is_better=False)
        unbounded = ("; unbounded: a group whose error rate may be 0 (none observed) next to one "
                     "that may have errors" if math.isinf(judged) else "")
        verdicts.append(_verdict(rule, OVERALL, value, bar, passed,
                                 f"{what} {number_text(value, 3)} {'<=' if passed else '>'} {bar:.3f}"
                                 f"{_bar_test_text(config, 'upper')} "
                                 f"({_interval_text(interval, level)}{_noise_text(beyond)}{unbounded})",
                                 interval, beyond, config.bar_test, key, "upper", judged))
    return verdicts


# ----------------------------------------------------------------------------- advisories

def composition_ceiling(verification: Dict[str, Any]) -> Optional[float]:
    """The FMR differential a model with the same FMR in every group would show at this threshold
    if no impostor pair across groups matched: false matches overall / (target_fmr x impostor pairs
    with both images in one group). None when it cannot be computed."""
    overall = verification.get(OVERALL) or {}
    target = verification.get("target_fmr")
    inside = sum(entry.get("n_impostor") or 0 for scope, entry in verification.items()
                 if scope != OVERALL and isinstance(entry, dict) and "n_impostor" in entry)
    if _missing(overall.get("fmr")) or not overall.get("n_impostor") or not inside or not target:
        return None
    return float(overall["fmr"] * overall["n_impostor"] / (target * inside))


def _advisory(statistic, scope, value, interval, level, message) -> Dict[str, Any]:
    return {"statistic": statistic, "scope": scope, "value": value, "interval": interval,
            "level": level, "message": message}


def advisories(verification: Optional[Dict[str, Any]], config: GateConfig) -> List[Dict[str, Any]]:
    """What the 1:1 view shows beyond its advisory level while the rule that would gate it is off
    (the module docstring). `verification`: metrics.json's "verification". Never a verdict."""
    verification = verification or {}
    level = config.confidence
    found = []
    interval = _usable(verification.get("fmr_differential_ci"))
    if config.max_fmr_ratio is None and interval is not None:
        ceiling = composition_ceiling(verification)
        bar = max(ADVISORY_FMR_RATIO, ceiling or 0.0)
        if interval[0] > bar:
            value = verification.get("fmr_differential")
            found.append(_advisory(
                "fmr_differential", OVERALL, value, interval, bar,
                f"FMR differential {number_text(value, 1)} {interval_text(interval, 1)}: the whole "
                f"{level:.0%} interval lies above {bar:.1f} (the larger of {ADVISORY_FMR_RATIO:g} and "
                f"{number_text(ceiling, 1)}, the differential of a model with the same FMR in every "
                f"group at this threshold); not gated: max_fmr_ratio is off"))
    if config.max_fnmr_ratio is not None:
        return found
    interval = _usable(verification.get("skewed_error_ratio_ci"))
    if interval is not None and interval[0] > ADVISORY_FNMR_RATIO:
        value = verification.get("skewed_error_ratio")
        found.append(_advisory(
            "skewed_error_ratio", OVERALL, value, interval, ADVISORY_FNMR_RATIO,
            f"skewed error ratio (FNMR) {number_text(value, 1)} {interval_text(interval, 1)}: the "
            f"whole {level:.0%} interval lies above {ADVISORY_FNMR_RATIO:g}; not gated: "
            f"max_fnmr_ratio is off"))
    overall = _usable((verification.get(OVERALL) or {}).get("fnmr_ci"))
    groups = verification.get("ratio_groups")
    if groups is None:
        groups = [s for s, e in verification.items()
                  if s != OVERALL and isinstance(e, dict) and config.gated(s)]
    for scope in sorted(groups):
        entry = verification.get(scope) or {}
        interval = _usable(entry.get("fnmr_ci"))
        if overall is not None and interval is not None and interval[0] > overall[1]:
            found.append(_advisory(
                "fnmr", scope, entry.get("fnmr"), interval, overall[1],
                f"{scope}: FNMR {number_text(entry.get('fnmr'))} {interval_text(interval)}: the whole "
                f"{level:.0%} interval lies above the overall FNMR's {interval_text(overall)}; not "
                f"gated: max_fnmr_ratio is off"))
    return found


def advisory_text(advisory: Dict[str, Any]) -> str:
    """The short form the console line and `tools.review show` print, e.g. "FMR differential 18.5
    [7.6, 31.0]" or "west FNMR 0.0800 [0.0500, 0.1100]"."""
    statistic, interval = advisory.get("statistic"), advisory.get("interval")
    if statistic == "fmr_differential":
        return f"FMR differential {number_text(advisory.get('value'), 1)} {interval_text(interval, 1)}"
    if statistic == "skewed_error_ratio":
        return (f"skewed error ratio (FNMR) {number_text(advisory.get('value'), 1)} "
                f"{interval_text(interval, 1)}")
    return (f"{advisory.get('scope')} {str(statistic).upper()} {number_text(advisory.get('value'))} "
            f"{interval_text(interval)}")
