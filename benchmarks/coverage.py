"""Coverage of every interval the release gate decides on, by simulation:
`make bench ARGS="--only coverage"` (the coverage section of benchmarks/results.md) and, at a
smaller size, tests/test_coverage.py.

The population model and the truths: benchmarks/coverage_population.py (its docstring).

An interval covers when truth lies in [lo, hi] (ends included; an end may be +inf). No interval
(None) counts as not covering. Coverage is reported with its Monte Carlo standard error over the
simulated sets (per-group figures: the sets' mean over groups, so the error is over sets).

The gate's operating characteristics (each rule judged on the interval): benchmarks/coverage_rules.py.
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
from benchmarks.coverage_rules import as_interval, as_number, operating_cases, operating_table

ZERO_ERROR_LIMIT = 5                    # "a group with 0-5 errors"

# ----------------------------------------------------------------------------- one eval set

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
    threshold = as_number(verification["threshold"])
    target_fmr = as_number(verification["target_fmr"])

    def add(family, scope, interval, truth, estimate, errors=None):
        lo_hi = as_interval(interval)
        rows.append({"family": family, "scope": scope, "lo": None if lo_hi is None else lo_hi[0],
                     "hi": None if lo_hi is None else lo_hi[1], "truth": truth,
                     "estimate": as_number(estimate), "errors": errors})

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
            rate = as_number(figures.get(key))
            errors = None if rate is None else int(round(rate * figures[pairs]))
            add(key.upper(), scope, figures.get(f"{key}_ci"), truth, rate, errors)
    ratios = _ratio_truths(population, "candidate", threshold, target_fmr)
    add("FMR differential", OVERALL, verification.get("fmr_differential_ci"),
        ratios["fmr_differential"], verification.get("fmr_differential"))
    add("skewed error ratio", OVERALL, verification.get("skewed_error_ratio_ci"),
        ratios["skewed_error_ratio"], verification.get("skewed_error_ratio"))

    baseline_threshold = as_number((metrics.get("baseline_verification") or {}).get("threshold"))
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
