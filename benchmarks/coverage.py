"""Coverage of every interval the release gate decides on, by simulation:
`make bench ARGS="--only coverage"` (the coverage section of benchmarks/results.md) and, at a
smaller size, tests/test_coverage.py.

The population model and the truths: benchmarks/coverage_population.py (its docstring).

An interval covers when truth lies in [lo, hi] (ends included; an end may be +inf). No interval
(None) counts as not covering. Coverage is reported with its Monte Carlo standard error over the
simulated sets (per-group figures: the sets' mean over groups, so the error is over sets).

Operating characteristics (each rule judged on the interval, bar_test "interval"): for each set
and scope the bar is placed so that the truth misses it by 10 % of the bar (a minimum rule: truth =
0.9 x bar; a maximum rule: truth = 1.1 x bar) or clears it by 10 % (1.1 x bar / 0.9 x bar); the
gate's own evaluate_gate judges the set's intervals; false-bless = blessed though the truth
violates, false-refuse = refused though the truth clears. Cases whose bar would be invalid (a
Recall@1 or FNMR bar above 1, a ratio bar below 1) are left out. min_recall is judged a second
time with the 10 % on its miss rate 1 - Recall@1 (`_miss_rate_cases`: a Recall@1 near 1 has no
valid bar 10 % above it). max_drop is judged on the interval by its "non_inferiority" test, with
the two models' roles swapped (`_drop_cases`).
"""
from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from benchmarks.coverage_population import (
    DIM,
    GROUP_SHARE,
    GROUPS,
    IMPOSTOR_SAMPLE,
    MAX_IMAGES,
    MIN_IMAGES,
    OVERALL,
    POPULATION_FACTOR,
    RECALL_TRUTH_SETS,
    SCENARIOS,
    Population,
    Scenario,
    recall_truths,
)

ZERO_ERROR_LIMIT = 5                    # "a group with 0-5 errors"

# ----------------------------------------------------------------------------- one eval set

def _number(value) -> Optional[float]:
    """A figure from metrics: float, +-inf written as a string, or None."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower().lstrip("+")
        if text in ("inf", "infinity"):
            return math.inf
        if text in ("-inf", "-infinity"):
            return -math.inf
        return float(text)
    return float(value)


def _interval(value) -> Optional[Tuple[float, float]]:
    if not value or value[0] is None or value[1] is None:
        return None
    return _number(value[0]), _number(value[1])


def _ratio_truths(population, model, threshold, target_fmr) -> Dict[str, float]:
    fnmrs = [population.fnmr(model, g, threshold) for g in GROUPS]
    fmrs = [population.fmr(model, g, threshold) for g in GROUPS]
    low, high = min(fnmrs), max(fnmrs)
    skewed = (1.0 if high == 0 else math.inf) if low == 0 else high / low
    return {"fmr_differential": max(fmrs) / target_fmr, "skewed_error_ratio": skewed}


def judge_set(metrics: Dict[str, Any], population: Population,
              recall_truth: Dict[str, Dict[Tuple[str, str], float]]) -> List[Dict[str, Any]]:
    """Every interval of one evaluate() result against its truth: rows {family, scope, lo, hi,
    truth, estimate, errors (1:1 rates: observed error count)}."""
    rows = []
    verification = metrics["verification"]
    threshold = _number(verification["threshold"])
    target_fmr = _number(verification["target_fmr"])

    def add(family, scope, interval, truth, estimate, errors=None):
        lo_hi = _interval(interval)
        rows.append({"family": family, "scope": scope, "lo": None if lo_hi is None else lo_hi[0],
                     "hi": None if lo_hi is None else lo_hi[1], "truth": truth,
                     "estimate": _number(estimate), "errors": errors})

    for scope in (OVERALL,) + GROUPS:
        entry = metrics["candidate"][scope]
        add("Recall@1 whole gallery", scope, entry.get("recall@1_ci"),
            recall_truth["candidate"][scope, "recall@1"], entry.get("recall@1"))
        if scope != OVERALL:
            add("Recall@1 within group", scope, entry.get("recall@1_within_ci"),
                recall_truth["candidate"][scope, "recall@1_within"], entry.get("recall@1_within"))
        figures = verification[scope]
        for key, pairs in (("fnmr", "n_genuine"), ("fmr", "n_impostor")):
            truth = getattr(population, key)("candidate", scope, threshold)
            rate = _number(figures.get(key))
            errors = None if rate is None else int(round(rate * figures[pairs]))
            add(key.upper(), scope, figures.get(f"{key}_ci"), truth, rate, errors)
    ratios = _ratio_truths(population, "candidate", threshold, target_fmr)
    add("FMR differential", OVERALL, verification.get("fmr_differential_ci"),
        ratios["fmr_differential"], verification.get("fmr_differential"))
    add("skewed error ratio", OVERALL, verification.get("skewed_error_ratio_ci"),
        ratios["skewed_error_ratio"], verification.get("skewed_error_ratio"))

    baseline_threshold = _number((metrics.get("baseline_verification") or {}).get("threshold"))
    for scope in (OVERALL,) + GROUPS:
        delta = metrics["deltas"][scope]
        for key in ("recall@1", "recall@1_within"):
            if scope == OVERALL and key.endswith("within"):
                continue
            truth = recall_truth["candidate"][scope, key] - recall_truth["baseline"][scope, key]
            add(f"delta {key.replace('recall@1', 'Recall@1').replace('_within', ' within')}",
                scope, delta.get(f"{key}_ci"), truth, delta.get(key))
        for key in ("fnmr", "fmr"):             # when evaluate() reports 1:1 deltas
            if f"{key}_ci" in delta and baseline_threshold is not None:
                rate = getattr(population, key)
                truth = rate("candidate", scope, threshold) - rate("baseline", scope,
                                                                      baseline_threshold)
                add(f"delta {key.upper()}", scope, delta.get(f"{key}_ci"), truth, delta.get(key))
    return rows


# ----------------------------------------------------------------------------- the gate's rules

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
        recall_bar = {s: truth["Recall@1 whole gallery", s] / (0.9 if violates else 1.1)
                      for s in (OVERALL,) + GROUPS}
        # Maximum rules: truth = 1.1 bar (violates) or 0.9 bar (clears).
        factor = 1.1 if violates else 0.9
        fnmr_bar = {s: truth["FNMR", s] / factor for s in (OVERALL,) + GROUPS}
        ratio_bar = {rule: truth[family, OVERALL] / factor for rule, family in
                     (("max_fmr_ratio", "FMR differential"),
                      ("max_fnmr_ratio", "skewed error ratio"))}
        valid_recall = {s for s, b in recall_bar.items() if 0 < b <= 1}
        valid_fnmr = {s for s, b in fnmr_bar.items() if 0 < b <= 1}
        valid_ratio = {r for r, b in ratio_bar.items() if 1 <= b < math.inf}
        config = gate_lib.GateConfig(
            bar_test="interval", min_group_identities=1,
            min_recall_overall=recall_bar[OVERALL] if OVERALL in valid_recall else 0.0,
            group_min_recall={g: recall_bar[g] if g in valid_recall else 0.0 for g in GROUPS},
            max_fnmr={s: fnmr_bar[s] if s in valid_fnmr else 1.0 for s in (OVERALL,) + GROUPS},
            target_fmr=metrics["gate_config"]["target_fmr"],
            **{r: (ratio_bar[r] if r in valid_ratio else None) for r in ratio_bar})
        verdicts = gate_lib.evaluate_gate(metrics["candidate"], config, None,
                                          metrics["verification"])
        for scope in sorted(valid_recall):
            cases.append({"rule": "min_recall", "scope": scope, "violates": violates,
                          "blessed": _blessed(verdicts, "min_recall", scope)})
        for scope in sorted(valid_fnmr):
            cases.append({"rule": "max_fnmr", "scope": scope, "violates": violates,
                          "blessed": _blessed(verdicts, "max_fnmr", scope)})
        for rule in sorted(valid_ratio):
            cases.append({"rule": rule, "scope": OVERALL, "violates": violates,
                          "blessed": _blessed(verdicts, rule, OVERALL)})
        cases += _drop_cases(metrics, truth, gate_lib, violates)
        cases += _miss_rate_cases(metrics, truth, gate_lib, violates)
    return cases


def _miss_rate_cases(metrics: Dict[str, Any], truth, gate_lib, violates: bool
                     ) -> List[Dict[str, Any]]:
    """min_recall with the 10 % taken on the miss rate 1 - Recall@1 (rule "min_recall (miss
    rate)"): the true miss rate 1.1 x the allowed one (violates) or 0.9 x (clears). A Recall@1 near
    1 has no bar 10 % above it (it would exceed 1), so the plain min_recall cases leave such
    scopes out; a bar on the misses is how such a model's bar is set in practice."""
    misses = {s: 1.0 - truth["Recall@1 whole gallery", s] for s in (OVERALL,) + GROUPS}
    bar = {s: 1.0 - m / (1.1 if violates else 0.9) for s, m in misses.items() if m > 0}
    valid = {s for s, b in bar.items() if 0 < b < 1}
    config = gate_lib.GateConfig(
        bar_test="interval", min_group_identities=1,
        min_recall_overall=bar[OVERALL] if OVERALL in valid else 0.0,
        group_min_recall={g: bar[g] if g in valid else 0.0 for g in GROUPS},
        target_fmr=metrics["gate_config"]["target_fmr"])
    verdicts = gate_lib.evaluate_gate(metrics["candidate"], config, None, metrics["verification"])
    return [{"rule": "min_recall (miss rate)", "scope": scope, "violates": violates,
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
        interval = _interval(delta.get("recall@1_ci"))
        change = _number(delta.get("recall@1"))
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


# ----------------------------------------------------------------------------- a whole cell

def simulate(scenario: Scenario, per_group: int, sets: int, population: Population,
             resamples: int = 1000, seed: int = 1, truth_sets: int = RECALL_TRUTH_SETS
             ) -> Dict[str, Any]:
    """`sets` eval sets of the design through evaluate(): their judged rows and gate cases."""
    from components.recall_evaluator import executor
    from components.recall_evaluator import gate as gate_lib

    start = time.perf_counter()
    recall_truth = recall_truths(population, per_group, truth_sets, seed + 10_000)
    truth_seconds = time.perf_counter() - start
    config = gate_lib.GateConfig(bootstrap_resamples=resamples, min_group_identities=1)
    rng = np.random.default_rng(seed)
    rows, cases = [], []
    start = time.perf_counter()
    for index in range(sets):
        candidate, baseline = population.eval_set(per_group, rng)
        config.bootstrap_seed = index          # fresh resamples for every set
        metrics = executor.evaluate(candidate, config, baseline)
        judged = judge_set(metrics, population, recall_truth)
        for row in judged:
            row["set"] = index
        rows += judged
        for case in operating_cases(metrics, judged, gate_lib):
            case["set"] = index
            cases.append(case)
    return {"scenario": scenario.name, "per_group": per_group, "sets": sets, "rows": rows,
            "cases": cases, "seconds": time.perf_counter() - start,
            "truth_seconds": truth_seconds, "images": int(len(candidate["labels"]))}


def _covered(row) -> bool:
    return row["lo"] is not None and row["lo"] <= row["truth"] <= row["hi"]


def coverage(rows: List[Dict[str, Any]], family: str, scopes: Sequence[str]
             ) -> Optional[Tuple[float, float, int]]:
    """(coverage, its Monte Carlo standard error over sets, sets) of one family over `scopes`."""
    by_set: Dict[int, List[bool]] = {}
    for row in rows:
        if row["family"] == family and row["scope"] in scopes:
            by_set.setdefault(row["set"], []).append(_covered(row))
    if not by_set:
        return None
    per_set = np.array([np.mean(v) for v in by_set.values()])
    n = len(per_set)
    value = float(per_set.mean())
    error = float(per_set.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return value, error, n


def families(rows) -> List[Tuple[str, str, Tuple[str, ...]]]:
    """(label, family, scopes) of every reported line, in report order."""
    present = {r["family"] for r in rows}
    lines = []
    order = ["Recall@1 whole gallery", "Recall@1 within group", "FNMR", "FMR", "FMR differential",
             "skewed error ratio", "delta Recall@1", "delta Recall@1 within", "delta FNMR",
             "delta FMR"]
    for family in order:
        if family not in present:
            continue
        scopes = {r["scope"] for r in rows if r["family"] == family}
        if OVERALL in scopes:
            lines.append((f"{family}, overall", family, (OVERALL,)))
        if scopes - {OVERALL}:
            lines.append((f"{family}, per group", family, GROUPS))
    return lines


def small_count_rows(rows, limit: int = ZERO_ERROR_LIMIT):
    """Per-group FNMR / FMR rows with at most `limit` observed errors, and those with none."""
    few = [r for r in rows if r["family"] in ("FNMR", "FMR") and r["scope"] != OVERALL
           and r["errors"] is not None and r["errors"] <= limit]
    return few, [r for r in few if r["errors"] == 0]


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


def _family_lines(cells) -> list:
    """Every cell's (label, family, scopes) lines, first-seen order, each once."""
    labels = []
    for c in cells:
        for line in families(c["rows"]):
            if line not in labels:
                labels.append(line)
    return labels


def coverage_table(cells) -> str:
    lines = ["| interval | " + " | ".join(f"{c['scenario']}, {c['per_group']}/group"
                                          for c in cells) + " |",
             "|---|" + "---:|" * len(cells)]
    for label, family, scopes in _family_lines(cells):
        texts = []
        for c in cells:
            measured = coverage(c["rows"], family, scopes)
            texts.append("—" if measured is None else f"{measured[0]:.3f} ± {measured[1]:.3f}")
        lines.append(f"| {label} | " + " | ".join(texts) + " |")
    few_texts, zero_texts = [], []
    for c in cells:
        few, zero = small_count_rows(c["rows"])
        few_texts.append(f"{np.mean([_covered(r) for r in few]):.3f} (n={len(few)})" if few else "—")
        zero_texts.append(f"{np.mean([_covered(r) for r in zero]):.3f} (n={len(zero)})"
                          if zero else "—")
    lines.append(f"| FNMR / FMR per group with 0-{ZERO_ERROR_LIMIT} errors | "
                 + " | ".join(few_texts) + " |")
    lines.append("| FNMR / FMR per group with 0 errors | " + " | ".join(zero_texts) + " |")
    return "\n".join(lines)


def rates_table(cells) -> str:
    """Median truths per cell: what each scenario's rates are."""
    lines = ["| truth (median over sets) | " + " | ".join(
        f"{c['scenario']}, {c['per_group']}/group" for c in cells) + " |",
        "|---|" + "---:|" * len(cells)]
    for family in ("Recall@1 whole gallery", "FNMR", "FMR", "FMR differential",
                   "skewed error ratio", "delta Recall@1"):
        for scope in (OVERALL,) + GROUPS:
            texts = []
            for c in cells:
                values = [r["truth"] for r in c["rows"] if r["family"] == family and r["scope"] == scope]
                texts.append(f"{np.median(values):.4g}" if values else "")
            if any(texts):
                lines.append(f"| {family}, {scope} | " + " | ".join(texts) + " |")
    return "\n".join(lines)


def run(quick: bool = False, sets: Union[None, int, Dict[int, int]] = None,
        sizes: Sequence[int] = (20, 80), scenarios: Sequence[str] = ("low", "moderate", "high"),
        resamples: Union[int, Dict[int, int]] = 1000, progress: bool = True
        ) -> List[Dict[str, Any]]:
    """Every (scenario, size) cell; one population per scenario, 100 x the largest size. `sets`:
    eval sets per cell, one number or {identities per group: sets} (then its keys are the sizes)."""
    if quick:
        sets, sizes, scenarios, resamples = sets or 4, (10,), ("moderate",), 200
    if isinstance(sets, dict):
        sizes = tuple(sets)
    per_size = sets if isinstance(sets, dict) else {size: sets or 500 for size in sizes}
    cells = []
    for name in scenarios:
        scenario = SCENARIOS[name]
        start = time.perf_counter()
        population = Population(scenario, max(sizes), seed=sorted(SCENARIOS).index(name),
                                impostor_sample=200_000 if quick else IMPOSTOR_SAMPLE)
        built = time.perf_counter() - start
        for size in sizes:
            if progress:
                print(f"coverage: {name}, {size}/group, {per_size[size]} sets ...", flush=True)
            per_set = resamples[size] if isinstance(resamples, dict) else resamples
            cell = simulate(scenario, size, per_size[size], population, resamples=per_set,
                            truth_sets=20 if quick else RECALL_TRUTH_SETS)
            cell["population_seconds"] = built
            cell["population_identities"] = len(population.identity_group)
            cell["population_images"] = len(population.image_identity)
            cell["resamples"] = per_set
            cell["impostor_sample"] = population.impostor_sample
            cell["truth_sets"] = 20 if quick else RECALL_TRUTH_SETS
            cells.append(cell)
    return cells


GOAL = (0.93, 0.97)
# The metric key (core.interval_quality's figure names) of each reported family of intervals.
FAMILY_FIGURE = {"Recall@1 whole gallery": "recall@1", "Recall@1 within group": "recall@1_within",
                 "FNMR": "fnmr", "FMR": "fmr", "FMR differential": "fmr_differential",
                 "skewed error ratio": "skewed_error_ratio", "delta Recall@1": "delta recall@1",
                 "delta Recall@1 within": "delta recall@1_within", "delta FNMR": "delta fnmr",
                 "delta FMR": "delta fmr"}


def approximate(cells) -> List[str]:
    """One line per interval whose coverage lies outside GOAL in some cell: the range measured
    and whether it is too narrow (below: the gate may bless on noise) or conservative (above)."""
    lines = []
    for label, family, scopes in _family_lines(cells):
        values = [m[0] for m in (coverage(c["rows"], family, scopes) for c in cells) if m]
        low, high = min(values), max(values)
        if low < GOAL[0] or high > GOAL[1]:
            kinds = (["too narrow somewhere"] if low < GOAL[0] else []) + (
                ["conservative somewhere"] if high > GOAL[1] else [])
            lines.append(f"* {label}: approximate, {low:.3f}-{high:.3f} ({', '.join(kinds)})")
    return lines


def markdown(cells) -> str:
    first = cells[0]
    conditions = (
        f"Population model and truths: `benchmarks/coverage.py` (docstring). {len(GROUPS)} groups of "
        f"unequal size ({', '.join(f'{g}: {s}' for g, s in zip(GROUPS, GROUP_SHARE))} x the nominal "
        f"identities per group), {MIN_IMAGES}-{MAX_IMAGES} images per identity, D = {DIM}, "
        f"population {first['population_identities']:,} identities "
        f"({first['population_images']:,} images; {POPULATION_FACTOR} x the largest eval set), "
        f"FMR truths from {first['impostor_sample']:,} impostor pairs per scope, Recall@1 truths "
        f"from {first['truth_sets']} independent eval sets per cell. evaluate() with the gate's defaults "
        "(target_fmr 1e-3, confidence 0.95; bootstrap resamples per set: "
        + ", ".join(sorted({f"{c['resamples']} at {c['per_group']}/group" for c in cells}))
        + "; a fresh bootstrap seed per set). Sets per cell: "
        + ", ".join(sorted({f"{c['sets']} at {c['per_group']}/group" for c in cells})) + ". Scenarios: "
        + "; ".join(f"{s.name}: {s.about}" for s in SCENARIOS.values() if
                    s.name in {c['scenario'] for c in cells}) + ". Time: "
        + ", ".join(f"{c['scenario']} {c['per_group']}/group {c['seconds']:.0f} s "
                    f"({c['images']} images in the last set)" for c in cells) + ".")
    return "\n".join([
        "Coverage of the nominal 95 % intervals (fraction of sets whose interval holds the truth, "
        "± its Monte Carlo standard error over sets; per-group lines pool the 4 groups). Goal "
        "0.93-0.97.", "", coverage_table(cells), "",
        "Operating characteristics of each rule judged on the interval (fraction of cases decided "
        "wrongly; n = set x scope cases with a valid bar). Goal: false-bless <= 0.025.", "",
        operating_table(cells), "",
        f"Intervals outside {GOAL[0]}-{GOAL[1]} in some cell (\"approximate\"):", "",
        *(approximate(cells) or ["* none"]), "",
        "The scenarios' truths:", "", rates_table(cells), "", conditions])
