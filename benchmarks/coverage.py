"""Coverage of every interval the release gate decides on, by simulation:
`make bench ARGS="--only coverage"` (the coverage section of benchmarks/results.md) and, at a
smaller size, tests/test_coverage.py.

Population model (identity-level random effects, the evaluator's own input: embeddings):
* GROUPS of unequal size (GROUP_SHARE identities per nominal identity), each identity with 2 to 10
  images (uniform).
* Identity centre c_i: the unit vector of sqrt(rho_g) u_g + sqrt(1 - rho_g) z_i, with u_g a group
  direction and z_i isotropic noise: rho_g (GROUP_RHO) raises the cosine between different
  identities of group g, so the groups differ in FMR at the one global threshold.
* Image j of identity i: c_i + s_i e_j, e_j isotropic with unit expected norm, and the identity's
  noise s_i = noise x GROUP_NOISE[g] x a log-normal random effect (sd `spread` on the log scale):
  some identities are much harder (most of the false non-matches come from few identities), and the
  groups differ in FNMR.
* Two models embed the same images: the candidate (above) and the baseline, whose noise is
  BASELINE_NOISE times larger and correlated BASELINE_CORRELATION with the candidate's (the same
  images, a worse model): the paired candidate - baseline deltas.

The population holds POPULATION_FACTOR (100) x the identities of the largest eval set of each group;
an eval set draws its identities per group without replacement (as many per group as the design
says) and takes all their images, both models' embeddings. Every pair of population identities is
then equally likely to be in an eval set, so the population's pair-weighted rates are what an eval
set's ratios estimate.

Truths:
* FNMR of a scope at threshold t: the fraction of ALL the population's genuine pairs of the scope
  scoring below t (exact: every genuine pair is scored).
* FMR of a scope at t: the fraction of IMPOSTOR_SAMPLE uniformly drawn impostor image pairs of the
  scope (both images in the group; any two for overall) scoring >= t. Its relative standard error,
  1 / sqrt(IMPOSTOR_SAMPLE x FMR), is 1.6 % at FMR 1e-3 and 5 % at 1e-4, against interval half-widths
  of 30 % and more of the rate: negligible. t is the threshold the eval set chose
  (metrics["verification"]["threshold"]): the intervals hold the threshold fixed.
* FMR differential and skewed error ratio: the same functions of the population's per-group rates at t.
* Recall@1 depends on the gallery's size, so a population has no Recall@1 of its own; its truth is
  the expectation over eval sets of the same design (same identities per group, drawn from the same
  population): the ratio of the expected hits to the expected queries, by Monte Carlo over
  RECALL_TRUTH_SETS independent eval sets (not those whose intervals are judged), computed with a
  plain NumPy nearest neighbour. Its Monte Carlo error is about sd / sqrt(RECALL_TRUTH_SETS) of a
  set's Recall@1, under 5 % of an interval's half-width.
* Deltas: truth of the candidate - truth of the baseline, from the same truth sets (Recall@1), or at
  each model's own threshold (FNMR / FMR deltas, when evaluate() reports them).

An interval covers when truth lies in [lo, hi] (ends included; an end may be +inf). No interval
(None) counts as not covering. Coverage is reported with its Monte Carlo standard error over the
simulated sets (per-group figures: the sets' mean over groups, so the error is over sets).

Operating characteristics (each rule judged on the interval, bar_test "interval"): for each set
and scope the bar is placed so that the truth misses it by 10 % of the bar (a minimum rule: truth =
0.9 x bar; a maximum rule: truth = 1.1 x bar) or clears it by 10 % (1.1 x bar / 0.9 x bar); the
gate's own evaluate_gate judges the set's intervals; false-bless = blessed though the truth
violates, false-refuse = refused though the truth clears. Cases whose bar would be invalid (a
Recall@1 or FNMR bar above 1, a ratio bar below 1) are left out.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

GROUPS = ("g0", "g1", "g2", "g3")
GROUP_SHARE = (1.3, 1.0, 0.8, 0.9)       # identities of each group per nominal identity
GROUP_RHO = (0.0, 0.04, 0.08, 0.14)     # impostor similarity inside the group
GROUP_NOISE = (1.0, 1.12, 0.92, 1.25)   # genuine-score spread of the group
BASELINE_NOISE = 1.2
BASELINE_CORRELATION = 0.6
MIN_IMAGES, MAX_IMAGES = 2, 10
POPULATION_FACTOR = 100
IMPOSTOR_SAMPLE = 4_000_000
RECALL_TRUTH_SETS = 400
DIM = 32
OVERALL = "overall"
ZERO_ERROR_LIMIT = 5                    # "a group with 0-5 errors"


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    noise: float        # candidate's image noise (sets the genuine scores)
    spread: float       # sd of the identity random effect on the log noise
    about: str


SCENARIOS = {
    "low": Scenario("low", 0.32, 0.35, "FNMR about 0.1-2 % per group: groups with 0-5 false "
                    "non-matches"),
    "moderate": Scenario("moderate", 0.45, 0.35, "FNMR about 1-10 % per group"),
    "high": Scenario("high", 0.65, 0.35, "FNMR about 10-35 % per group"),
}


def design(per_group: int) -> Dict[str, int]:
    """Identities per group of an eval set of nominal size `per_group`."""
    return {g: int(round(share * per_group)) for g, share in zip(GROUPS, GROUP_SHARE)}


# ----------------------------------------------------------------------------- population

class Population:
    """Identities, their images, both models' unit embeddings, and the exact genuine / sampled
    impostor score distributions per scope (the truths of the 1:1 figures)."""

    def __init__(self, scenario: Scenario, largest_per_group: int, seed: int = 0, dim: int = DIM,
                 impostor_sample: int = IMPOSTOR_SAMPLE):
        rng = np.random.default_rng(seed)
        self.scenario, self.dim = scenario, dim
        sizes = [POPULATION_FACTOR * n for n in design(largest_per_group).values()]
        self.identity_group = np.repeat(np.arange(len(GROUPS)), sizes)
        n_ids = len(self.identity_group)
        self.image_counts = rng.integers(MIN_IMAGES, MAX_IMAGES + 1, size=n_ids)
        self.starts = np.concatenate([[0], np.cumsum(self.image_counts)[:-1]])
        self.image_identity = np.repeat(np.arange(n_ids), self.image_counts)
        self.image_group = self.identity_group[self.image_identity]
        directions = _unit(rng.standard_normal((len(GROUPS), dim)))
        rho = np.asarray(GROUP_RHO)[self.identity_group][:, None]
        centres = _unit(np.sqrt(rho) * directions[self.identity_group]
                        + np.sqrt(1 - rho) * rng.standard_normal((n_ids, dim)) / math.sqrt(dim))
        noise = (scenario.noise * np.asarray(GROUP_NOISE)[self.identity_group]
                 * np.exp(scenario.spread * rng.standard_normal(n_ids)))
        own = rng.standard_normal((len(self.image_identity), dim)) / math.sqrt(dim)
        other = rng.standard_normal(own.shape) / math.sqrt(dim)
        base = centres[self.image_identity]
        scale = noise[self.image_identity][:, None]
        self.embeddings = {
            "candidate": _unit(base + scale * own).astype(np.float32),
            "baseline": _unit(base + BASELINE_NOISE * scale * (
                BASELINE_CORRELATION * own + math.sqrt(1 - BASELINE_CORRELATION ** 2) * other)
            ).astype(np.float32)}
        self.group_ids = [np.flatnonzero(self.identity_group == g) for g in range(len(GROUPS))]
        self.genuine = {model: self._genuine_scores(x) for model, x in self.embeddings.items()}
        self.impostor = {model: self._impostor_tails(x, rng, impostor_sample)
                         for model, x in self.embeddings.items()}
        self.impostor_sample = impostor_sample

    def _genuine_scores(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        """Sorted scores of every genuine pair, per scope."""
        per_group = [[] for _ in GROUPS]
        for m in range(MIN_IMAGES, MAX_IMAGES + 1):
            ids = np.flatnonzero(self.image_counts == m)
            if not len(ids):
                continue
            rows = x[self.starts[ids][:, None] + np.arange(m)]          # [ids, m, D]
            gram = np.einsum("imd,ind->imn", rows, rows)
            a, b = np.triu_indices(m, 1)
            scores = gram[:, a, b]                                       # [ids, pairs]
            for g in range(len(GROUPS)):
                per_group[g].append(scores[self.identity_group[ids] == g].ravel())
        result = {name: np.sort(np.concatenate(s)) for name, s in zip(GROUPS, per_group)}
        result[OVERALL] = np.sort(np.concatenate(list(result.values())))
        return result

    def _impostor_tails(self, x, rng, sample) -> Dict[str, np.ndarray]:
        """Per scope, the largest 20 % of `sample` uniform impostor pair scores, sorted."""
        result = {}
        pools = [(OVERALL, np.arange(len(x)))] + [
            (name, np.flatnonzero(self.image_group == g)) for g, name in enumerate(GROUPS)]
        for name, pool in pools:
            scores, have = [], 0
            while have < sample:
                a = pool[rng.integers(0, len(pool), size=min(1_000_000, 2 * (sample - have)))]
                b = pool[rng.integers(0, len(pool), size=len(a))]
                keep = self.image_identity[a] != self.image_identity[b]
                a, b = a[keep][:sample - have], b[keep][:sample - have]
                scores.append(np.einsum("nd,nd->n", x[a], x[b]))
                have += len(a)
            every = np.sort(np.concatenate(scores))
            result[name] = every[-sample // 5:]
        return result

    def fnmr(self, model: str, scope: str, threshold: float) -> float:
        scores = self.genuine[model][scope]
        return float(np.searchsorted(scores, threshold, "left") / len(scores))

    def fmr(self, model: str, scope: str, threshold: float) -> float:
        tail = self.impostor[model][scope]
        if threshold < tail[0]:
            raise ValueError(f"threshold {threshold} below the kept impostor tail of {scope}")
        return float((len(tail) - np.searchsorted(tail, threshold, "left")) / self.impostor_sample)

    def eval_set(self, per_group: int, rng) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
        """(candidate, baseline) inputs of evaluate(): one eval set of the design."""
        chosen = [rng.choice(ids, size=n, replace=False)
                  for ids, n in zip(self.group_ids, design(per_group).values())]
        identities = np.concatenate(chosen)
        images = np.concatenate([np.arange(s, s + m) for s, m in
                                 zip(self.starts[identities], self.image_counts[identities])])
        labels = self.image_identity[images]
        groups = np.asarray(GROUPS)[self.image_group[images]]
        return tuple({"embeddings": self.embeddings[model][images], "labels": labels,
                      "groups": groups} for model in ("candidate", "baseline"))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ----------------------------------------------------------------------------- Recall@1 truth

def recall_hits(embedded: Dict[str, np.ndarray]) -> Dict[Tuple[str, str], Tuple[int, int]]:
    """{(scope, "recall@1" | "recall@1_within"): (hits, queries)} by a plain nearest neighbour
    over the unit embeddings (every identity has >= 2 images, so every image is a query)."""
    x = embedded["embeddings"].astype(np.float64)
    labels, groups = embedded["labels"], embedded["groups"]
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    mixed = labels[np.argmax(sims, axis=1)] == labels
    sims[groups[:, None] != groups[None, :]] = -np.inf
    within = labels[np.argmax(sims, axis=1)] == labels
    result = {(OVERALL, "recall@1"): (int(mixed.sum()), len(labels))}
    for g in GROUPS:
        members = groups == g
        result[g, "recall@1"] = (int(mixed[members].sum()), int(members.sum()))
        result[g, "recall@1_within"] = (int(within[members].sum()), int(members.sum()))
    return result


def recall_truths(population: Population, per_group: int, sets: int, seed: int
                  ) -> Dict[str, Dict[Tuple[str, str], float]]:
    """{model: {(scope, key): expected hits / expected queries}} over `sets` eval sets."""
    rng = np.random.default_rng(seed)
    totals = {m: {} for m in ("candidate", "baseline")}
    for _ in range(sets):
        for model, embedded in zip(("candidate", "baseline"), population.eval_set(per_group, rng)):
            for key, (hits, queries) in recall_hits(embedded).items():
                h, q = totals[model].get(key, (0, 0))
                totals[model][key] = (h + hits, q + queries)
    return {m: {key: h / q for key, (h, q) in t.items()} for m, t in totals.items()}


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
    return cases


# ----------------------------------------------------------------------------- a whole cell

def simulate(scenario: Scenario, per_group: int, sets: int, population: Population,
             resamples: int = 1000, seed: int = 1, truth_sets: int = RECALL_TRUTH_SETS
             ) -> Dict[str, Any]:
    """`sets` eval sets of the design through evaluate(): their judged rows and gate cases."""
    from components.recall_evaluator import component
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
        metrics = component.evaluate(candidate, config, baseline)
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
                   key=lambda r: ["min_recall", "max_fnmr", "max_fmr_ratio", "max_fnmr_ratio"].index(r))
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


def coverage_table(cells) -> str:
    lines = ["| interval | " + " | ".join(f"{c['scenario']}, {c['per_group']}/group"
                                          for c in cells) + " |",
             "|---|" + "---:|" * len(cells)]
    labels = []
    for c in cells:
        for line in families(c["rows"]):
            if line not in labels:
                labels.append(line)
    for label, family, scopes in labels:
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
    labels = []
    for c in cells:
        for line in families(c["rows"]):
            if line not in labels:
                labels.append(line)
    for label, family, scopes in labels:
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
