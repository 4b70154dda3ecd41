"""The population model and the truths of the coverage simulation (benchmarks/coverage.py).

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

"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, Tuple

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
