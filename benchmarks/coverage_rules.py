"""The gate's operating characteristics in the coverage simulation (benchmarks/coverage.py): how
often each rule judged on the interval (bar_test "interval") decides wrongly. For each set
and scope the bar is placed so that the truth misses it by 10 % of the bar (a minimum rule: truth =
0.9 x bar; a maximum rule: truth = 1.1 x bar) or clears it by 10 % (1.1 x bar / 0.9 x bar); the
gate's own evaluate_gate judges the set's intervals; false-bless = blessed though the truth
violates, false-refuse = refused though the truth clears. Cases whose bar would be invalid (a
Recall@1 or FNMR bar above 1, a ratio bar below 1) are left out. min_recall is judged a second
time with the 10 % on its miss rate 1 - Recall@1 (a Recall@1 near 1 has no valid bar 10 %
above it). max_drop is judged on the interval by its "non_inferiority" test, with
the two models' roles swapped (`_drop_cases`).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from benchmarks.coverage_population import GROUPS, OVERALL
from core import json_safe


def as_number(value) -> Optional[float]:
    """A figure from metrics: a float, +-inf possibly as metrics.json's string (core.json_safe),
    or None."""
    return None if value is None else float(json_safe.number(value))


def as_interval(value) -> Optional[Tuple[float, float]]:
    """An interval from metrics as (lo, hi), either end possibly +-inf; None without one."""
    if not value or value[0] is None or value[1] is None:
        return None
    return as_number(value[0]), as_number(value[1])


def _blessed(verdicts, rule, scope) -> bool:
    return any(v["rule"] == rule and v["scope"] == scope and v["passed"] for v in verdicts)


def operating_cases(metrics: Dict[str, Any], rows: List[Dict[str, Any]], gate_lib
                    ) -> List[Dict[str, Any]]:
    """For each rule judged on the interval and each direction: {rule, scope, violates, blessed}.
    The bars are set from the truths (module docstring); evaluate_gate decides."""
    truth = {(r["family"], r["scope"]): r["truth"] for r in rows}
    cases = []
    for violates in (True, False):
        # Minimum rule (Recall@1): truth = 0.9 bar (violates) or 1.1 bar (clears).
        recall = {s: truth["Recall@1 whole gallery", s] for s in (OVERALL,) + GROUPS}
        cases += _recall_cases(metrics, gate_lib, violates, "min_recall",
                               {s: r / (0.9 if violates else 1.1) for s, r in recall.items()})
        # The same rule with the 10 % on the miss rate 1 - Recall@1: the true miss rate 1.1 x the
        # allowed one (violates) or 0.9 x (clears). A Recall@1 near 1 has no bar 10 % above it (it
        # would exceed 1), so the plain cases leave such scopes out; a bar on the misses is how
        # such a model's bar is set in practice.
        cases += _recall_cases(metrics, gate_lib, violates, "min_recall (miss rate)",
                               {s: 1.0 - (1.0 - r) / (1.1 if violates else 0.9)
                                for s, r in recall.items() if r < 1.0})
        # Maximum rules: truth = 1.1 bar (violates) or 0.9 bar (clears).
        factor = 1.1 if violates else 0.9
        fnmr_bar = {s: truth["FNMR", s] / factor for s in (OVERALL,) + GROUPS}
        ratio_bar = {rule: truth[family, OVERALL] / factor for rule, family in
                     (("max_fmr_ratio", "FMR differential"),
                      ("max_fnmr_ratio", "skewed error ratio"))}
        valid_fnmr = {s for s, b in fnmr_bar.items() if 0 < b <= 1}
        valid_ratio = {r for r, b in ratio_bar.items() if 1 <= b < math.inf}
        config = gate_lib.GateConfig(
            bar_test="interval", min_group_identities=1,
            max_fnmr={s: fnmr_bar[s] if s in valid_fnmr else 1.0 for s in (OVERALL,) + GROUPS},
            target_fmr=metrics["gate_config"]["target_fmr"],
            **{r: (ratio_bar[r] if r in valid_ratio else None) for r in ratio_bar})
        verdicts = gate_lib.evaluate_gate(metrics["candidate"], config, None,
                                          metrics["verification"])
        for scope in sorted(valid_fnmr):
            cases.append({"rule": "max_fnmr", "scope": scope, "violates": violates,
                          "blessed": _blessed(verdicts, "max_fnmr", scope)})
        for rule in sorted(valid_ratio):
            cases.append({"rule": rule, "scope": OVERALL, "violates": violates,
                          "blessed": _blessed(verdicts, rule, OVERALL)})
        cases += _drop_cases(metrics, truth, gate_lib, violates)
    return cases


def _recall_cases(metrics: Dict[str, Any], gate_lib, violates: bool, label: str,
                  bar: Dict[str, float]) -> List[Dict[str, Any]]:
    """min_recall judged on the interval at each scope's `bar` (scopes whose bar is not in (0, 1]
    left out), as cases of rule `label`."""
    valid = {s for s, b in bar.items() if 0 < b <= 1}
    config = gate_lib.GateConfig(
        bar_test="interval", min_group_identities=1,
        min_recall_overall=bar[OVERALL] if OVERALL in valid else 0.0,
        group_min_recall={g: bar[g] if g in valid else 0.0 for g in GROUPS},
        target_fmr=metrics["gate_config"]["target_fmr"])
    verdicts = gate_lib.evaluate_gate(metrics["candidate"], config, None, metrics["verification"])
    return [{"rule": label, "scope": scope, "violates": violates,
             "blessed": _blessed(verdicts, "min_recall", scope)} for scope in sorted(valid)]


def _drop_cases(metrics: Dict[str, Any], truth, gate_lib, violates: bool) -> List[Dict[str, Any]]:
    """max_drop judged on the interval (regression_test "non_inferiority": pass only when the
    interval's lower end is >= -max_drop). Every scenario's candidate is the better model, so the
    drop is simulated with the roles swapped: the baseline (the worse model) as the candidate
    against the candidate as the last blessed model. Its change is -delta and the change's interval
    the delta's interval negated (evaluate()'s paired figures are antisymmetric in the two models:
    tests/test_coverage.py checks it), its true drop the truth of delta Recall@1. Per scope the
    allowed drop is set so that the true drop exceeds it by 10 % (violates) or is 10 % inside it;
    scopes whose true drop is not positive are left out."""
    swapped = {}
    for scope, delta in metrics["deltas"].items():
        interval = as_interval(delta.get("recall@1_ci"))
        change = as_number(delta.get("recall@1"))
        swapped[scope] = {"recall@1": None if change is None else -change,
                          "recall@1_ci": None if interval is None else [-interval[1], -interval[0]]}
    cases = []
    for scope in (OVERALL,) + GROUPS:
        drop = truth["delta Recall@1", scope]
        if not drop > 0:
            continue
        config = gate_lib.GateConfig(regression_test="non_inferiority", min_group_identities=1,
                                     max_drop=drop / (1.1 if violates else 0.9),
                                     target_fmr=metrics["gate_config"]["target_fmr"])
        verdicts = gate_lib.evaluate_gate(metrics["candidate"], config, swapped,
                                          metrics["verification"])
        cases.append({"rule": "max_drop", "scope": scope, "violates": violates,
                      "blessed": _blessed(verdicts, "max_drop", scope)})
    return cases


def operating_table(cells) -> str:
    lines = ["| rule (bar_test interval) | " + " | ".join(
        f"{c['scenario']}, {c['per_group']}/group" for c in cells) + " |",
        "|---|" + "---:|" * len(cells)]
    rules = sorted({case["rule"] for c in cells for case in c["cases"]},
                   key=lambda r: ["min_recall", "min_recall (miss rate)", "max_drop", "max_fnmr",
                                  "max_fmr_ratio", "max_fnmr_ratio"].index(r))
    for rule in rules:
        for violates, label in ((True, "false-bless (truth 10 % past the bar)"),
                                (False, "false-refuse (truth 10 % inside the bar)")):
            cells_text = []
            for c in cells:
                chosen = [x for x in c["cases"] if x["rule"] == rule and x["violates"] == violates]
                if not chosen:
                    cells_text.append("—")
                    continue
                wrong = np.mean([x["blessed"] == violates for x in chosen])
                cells_text.append(f"{wrong:.3f} (n={len(chosen)})")
            lines.append(f"| {rule}: {label} | " + " | ".join(cells_text) + " |")
    return "\n".join(lines)
