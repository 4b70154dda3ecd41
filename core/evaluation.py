"""The numbers of one evaluation, TensorFlow-free: Recall@K (whole gallery and within group), the
1:1 view at the global threshold, every interval (identity bootstrap plus the small-count and
maxima corrections) and the paired candidate - baseline deltas, from the embeddings of the eval
split (`measure`). The RecallEvaluator's executor adds the gate's verdicts and writes it all
(components/recall_evaluator/executor.py)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from core import intervals, rate_intervals, small_counts, studentized
from core import verification as verification_lib
from core.features import OVERALL
from core.recall import QueryRanks, recall_at_k
from core.settings.gate import GateConfig

CURVE_KS = (1, 2, 5, 10, 20)


def _split_curve(result: Dict[str, Dict], ks, suffix: str = "") -> Dict[str, Dict[str, float]]:
    return {scope: {str(k): entry[f"recall@{k}{suffix}"] for k in ks} for scope, entry in result.items()}


def _pick(result: Dict[str, Dict], ks) -> Dict[str, Dict]:
    keep = {"n_queries", "n_skipped", "n_identities", "n_queries_within", "n_identities_within"}
    keep |= {f"recall@{k}{suffix}" for k in ks for suffix in ("", "_within")}
    return {scope: {k: v for k, v in entry.items() if k in keep}
            for scope, entry in result.items()}


def _statistic_sums(ranks: QueryRanks, verification: verification_lib.VerificationResult,
                    units: np.ndarray, n_units: int, ks
                    ) -> Tuple[intervals.UnitSums, intervals.UnitSums, List[Tuple[str, str]]]:
    """Numerators and denominators (core.intervals.UnitSums of M columns) of every statistic that
    gets an interval, and each column's (scope, key): recall@k and recall@k_within (hits /
    answerable queries, per unit), fnmr and fmr (core/verification.py's sums, pairs of two
    identities weighted by the product of their weights)."""
    numerators, denominators, columns = [], [], []
    for scope, members in ranks.scopes():
        within = ranks.mixed if scope == OVERALL else ranks.within   # as QueryRanks.summary
        for suffix, ranked in (("", ranks.mixed), ("_within", within)):
            found = ranked[members]
            answerable = found >= 0
            owners = units[members][answerable]
            queries = np.bincount(owners, minlength=n_units).astype(np.float64)
            for k in ks:
                numerators.append(intervals.UnitSums(np.bincount(
                    owners, weights=(found[answerable] < k).astype(np.float64), minlength=n_units)))
                denominators.append(intervals.UnitSums(queries))
                columns.append((scope, f"recall@{k}{suffix}"))
        for key in ("fnmr", "fmr"):
            top, bottom = verification.unit_sums[scope][key]
            numerators.append(top)
            denominators.append(bottom)
            columns.append((scope, key))
    return (intervals.UnitSums.columns(numerators), intervals.UnitSums.columns(denominators),
            columns)


def _measure(embedded: Dict[str, np.ndarray], config: GateConfig, curve_ks, weights,
             units, unit_groups) -> Dict[str, Any]:
    """One model on the eval split: recall (whole gallery and within group), 1:1 verification and
    the bootstrap replicates of every statistic, from one ranking/scoring pass."""
    ranks, verification = verification_lib.ranks_and_verification(embedded["embeddings"], embedded["labels"],
                                                 embedded["groups"], ks=curve_ks,
                                                 target_fmr=config.target_fmr)
    numerators, denominators, columns = _statistic_sums(ranks, verification, units,
                                                        weights.shape[1], config.ks)
    # The FNMR columns' per-unit sums, and the resamples, for its studentized intervals; their
    # variance's degrees of freedom for the score interval's t quantile (core.small_counts
    # .variance_degrees). The other columns keep G - 1 (docs/evaluation.md, "Errors in a handful
    # of identities").
    fnmr = [i for i, (_, key) in enumerate(columns) if key == "fnmr"]
    errors, trials = small_counts.unit_trials(numerators), small_counts.unit_trials(denominators)
    degrees = np.full(len(columns), np.inf)
    degrees[fnmr] = small_counts.variance_degrees(errors[:, fnmr], trials[:, fnmr], unit_groups)
    return {"full": ranks.summary(curve_ks), "verification": verification,
            "replicates": intervals.ratio_replicates(weights, numerators, denominators),
            "weights": weights, "unit_groups": unit_groups,
            "fnmr_units": {i: (errors[:, i], trials[:, i]) for i in fnmr},
            "clusters": rate_intervals.unit_clusters(denominators),
            "degrees": degrees, "columns": columns}


def _with_intervals(measured: Dict[str, Any], config: GateConfig) -> Tuple[Dict, Dict]:
    """metrics.json's recall entries and verification summary of one model, with `<key>_ci`;
    `measured["entries"]`: the entry holding each column's rate and trials (for `_deltas`)."""
    recall = _pick(measured["full"], config.ks)
    summary = {key: value for key, value in measured["verification"].summary.items()}
    # Percentile intervals widened for few errors (misses): core.rate_intervals, core.small_counts.
    columns = measured["columns"]
    entries = {(scope, key): (summary if key in rate_intervals.TRIALS else recall)[scope]
               for scope, key in columns}
    widened, effects = rate_intervals.widened_intervals(columns, entries, measured["replicates"],
                                                        measured["clusters"], config.confidence,
                                                        measured["degrees"])
    for i, ((scope, key), ci) in enumerate(zip(columns, widened)):
        if key == "fnmr":       # skewed per-identity errors: core.studentized
            ci = _wider(ci, _studentized(measured, i, measured["fnmr_units"][i][0],
                                         measured["replicates"][:, i], entries[scope, key][key],
                                         config.confidence))
        entries[scope, key][f"{key}_ci"] = ci
    measured["entries"] = entries
    # The ratios over the gated groups, each with its interval from the same replicates.
    gated = [scope for scope in recall if scope != OVERALL and config.gated(scope)]
    summary["ratio_groups"] = gated
    summary["fmr_differential"] = verification_lib.fmr_differential([summary[g]["fmr"] for g in gated],
                                                   config.target_fmr)
    summary["skewed_error_ratio"] = verification_lib.skewed_error_ratio([summary[g]["fnmr"] for g in gated])
    index = {column: i for i, column in enumerate(measured["columns"])}
    reps = measured["replicates"]
    fmr = np.stack([reps[:, index[(g, "fmr")]] for g in gated], axis=1) if gated else None
    fnmr = np.stack([reps[:, index[(g, "fnmr")]] for g in gated], axis=1) if gated else None
    summary["fmr_differential_ci"] = summary["skewed_error_ratio_ci"] = None
    if gated:
        # A maximum (over a minimum) of group rates: core.rate_intervals (bias-corrected).
        summary["fmr_differential_ci"] = rate_intervals.fmr_differential_interval(
            _max_defined(fmr) / config.target_fmr, summary["fmr_differential"], config.confidence)
        summary["skewed_error_ratio_ci"] = rate_intervals.skewed_error_ratio_interval(
            _skewed_error_ratios(fnmr), summary["skewed_error_ratio"], columns, entries, reps,
            measured["clusters"], effects, gated, config.confidence, measured["degrees"])
    return recall, summary


def _studentized(measured: Dict[str, Any], i: int, errors: np.ndarray, replicates: np.ndarray,
                 rate: Optional[float], level: float, bounds=(0.0, 1.0)) -> Optional[List[float]]:
    """core.studentized's interval of FNMR column i's rate (or of a paired difference: `errors` the
    two models' per-unit differences, `replicates` the resampled differences) on its trials."""
    return studentized.studentized_interval(measured["weights"], measured["unit_groups"], errors,
                                            measured["fnmr_units"][i][1], replicates, rate, level,
                                            bounds)


def _wider(ci: Optional[List[float]], other: Optional[List[float]]) -> Optional[List[float]]:
    """Per end the wider of two intervals; `ci` when `other` is None, None when `ci` is (a figure
    without its own interval has none: fail closed)."""
    if ci is None or other is None:
        return ci
    return [min(ci[0], other[0]), max(ci[1], other[1])]


def _max_defined(replicates: np.ndarray) -> np.ndarray:
    """Per resample, the largest defined (not NaN) value of [resamples, groups]; NaN if none."""
    defined = ~np.isnan(replicates)
    return np.where(defined.any(axis=1),
                    np.max(np.where(defined, replicates, -np.inf), axis=1), np.nan)


def _skewed_error_ratios(fnmr: np.ndarray) -> np.ndarray:
    """Per resample, verification.skewed_error_ratio of the groups' FNMRs [resamples, groups]:
    max / min over the defined ones, 1.0 when both are 0, +inf when only the minimum is (kept in
    the percentiles: the interval may end at +inf), NaN when no group is defined."""
    defined = ~np.isnan(fnmr)
    high = _max_defined(fnmr)
    low = np.where(defined.any(axis=1), np.min(np.where(defined, fnmr, np.inf), axis=1), np.nan)
    ratios = intervals.ratio(high, low)
    ratios[(low == 0) & (high == 0)] = 1.0
    return ratios


def _deltas(candidate: Dict[str, Any], baseline: Optional[Dict[str, Any]],
            config: GateConfig) -> Dict[str, Dict[str, Any]]:
    """candidate - baseline per scope for recall@k, recall@k_within, fnmr and fmr (at each model's
    own operating threshold), each with the interval of the paired bootstrap (the same resampled
    identities, and for 1:1 the same product weights, for both models); None without a baseline."""
    index = {column: i for i, column in enumerate(candidate["columns"])}
    result = {}
    for scope, entry in candidate["full"].items():
        result[scope] = {}
        keys = [f"recall@{k}{suffix}" for k in config.ks for suffix in ("", "_within")]
        for key in keys + ["fnmr", "fmr"]:
            if key in ("fnmr", "fmr"):
                mine = candidate["verification"].summary[scope][key]
                theirs = (baseline["verification"].summary[scope][key]
                          if baseline is not None else None)
            else:
                mine = entry.get(key)
                theirs = baseline["full"][scope].get(key) if baseline is not None else None
            both = mine is not None and theirs is not None
            result[scope][key] = mine - theirs if both else None
            result[scope][f"{key}_ci"] = intervals.percentile_interval(
                candidate["replicates"][:, index[(scope, key)]]
                - baseline["replicates"][:, index[(scope, key)]], config.confidence) if both else None
            if both:     # few misses: core.rate_intervals.paired_interval
                result[scope][f"{key}_ci"] = rate_intervals.paired_interval(
                    (scope, key), mine, theirs, candidate, baseline, index,
                    result[scope][f"{key}_ci"], config.confidence)
            if both and key == "fnmr":   # the same genuine pairs: a ratio of paired differences
                i = index[(scope, key)]
                result[scope][f"{key}_ci"] = _wider(result[scope][f"{key}_ci"], _studentized(
                    candidate, i, candidate["fnmr_units"][i][0] - baseline["fnmr_units"][i][0],
                    candidate["replicates"][:, i] - baseline["replicates"][:, i], mine - theirs,
                    config.confidence, (-1.0, 1.0)))
    return result


def _same_images(candidate: Dict[str, np.ndarray], other: Dict[str, np.ndarray], name: str):
    for key in ("labels", "groups"):
        if not np.array_equal(np.asarray(candidate[key]), np.asarray(other[key])):
            raise ValueError(f"{name} must be the candidate's eval images in the same order: its "
                             f"{key} differ")


def measure(candidate: Dict[str, np.ndarray], config: GateConfig,
             baseline: Optional[Dict[str, np.ndarray]] = None,
             pixels: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """All numbers, intervals, thresholds and deltas of one evaluation (no I/O, no verdicts: the
    release gate, components/recall_evaluator/gate.py, judges them).

    Each model is ranked and scored once (core/verification.py's single blocked pass plus the
    within-group passes); every interval comes from resampling identities over sums per identity
    and per pair of identities (core/intervals.py; the 1:1 pairs of two identities weighted by the
    product of their draws, core/verification.py), with the same resamples for the candidate and
    the baseline."""
    curve_ks = sorted(set(CURVE_KS) | set(config.ks))
    if baseline is not None:
        _same_images(candidate, baseline, "the baseline's embedded split")
    units, unit_groups = intervals.identity_units(candidate["labels"], candidate["groups"])
    weights = intervals.resample_weights(unit_groups, config.bootstrap_resamples, config.bootstrap_seed)
    measured = _measure(candidate, config, curve_ks, weights, units, unit_groups)
    measured_baseline = (_measure(baseline, config, curve_ks, weights, units, unit_groups)
                         if baseline is not None else None)
    candidate_recall, candidate_verification = _with_intervals(measured, config)
    metrics = {
        "gate_config": config.to_dict(),
        "candidate": candidate_recall,
        "baseline": None,
        "pixel_baseline": None,
        "curves": {"candidate": _split_curve(measured["full"], curve_ks),
                   "candidate_within": _split_curve(measured["full"], curve_ks, "_within")},
        "thresholds": {scope: config.bar(scope) for scope in measured["full"]},
        "ungated": [scope for scope in measured["full"] if not config.gated(scope)],
        "verification": candidate_verification,
        "baseline_verification": None,
        "confidence": config.confidence,
    }
    if measured_baseline is not None:
        metrics["baseline"], metrics["baseline_verification"] = _with_intervals(measured_baseline,
                                                                                config)
        metrics["curves"]["baseline"] = _split_curve(measured_baseline["full"], curve_ks)
        metrics["curves"]["baseline_within"] = _split_curve(measured_baseline["full"], curve_ks,
                                                            "_within")
    if pixels is not None:
        metrics["pixel_baseline"] = _pick(recall_at_k(pixels["embeddings"], pixels["labels"],
                                                      pixels["groups"], ks=config.ks), config.ks)
        metrics["pixel_baseline_resolution"] = pixels["resolution"]
    metrics["deltas"] = _deltas(measured, measured_baseline, config)
    return metrics
