"""model_card.json: the pushed model's card in the Model Card Toolkit schema (v0.0.2, the schema of
model-card-toolkit 2.0.0; tests/test_model_card.py validates against the file in its wheel).

Built from what the evaluation knows (`build`): the model (its settings from the export's
ffem_model_config.json), intended use and limitations for face recognition, the training data
summary, the eval data with per-group sizes, per group Recall@1, FNMR and FMR with intervals at the
operating point, the gate's verdicts and advisories. Every metric value is a string, as the schema
wants; an interval that cannot be computed is left out rather than invented. The toolkit itself is
not a runtime dependency (its pins conflict with this stack): the card is plain JSON.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from core.features import OVERALL

SCHEMA_VERSION = "0.0.2"
JSON_FILE, HTML_FILE = "model_card.json", "model_card.html"

USE_CASES = (
    "1:1 verification: decide whether two face crops show the same person, at the shipped "
    "threshold (the `verify` and `compare` signatures), with the FMR and FNMR measured per group.",
    "1:N search: rank a gallery of enrolled faces by cosine similarity of the embeddings "
    "(Recall@K below).",
)
USERS = ("Engineers who deploy the model behind an identity check, with a human review path for "
         "refusals.", "Reviewers who sign off a release per demographic group.")
LIMITATIONS = (
    "The figures hold for data like the eval split (its capture conditions, crop recipe and group "
    "mix); other cameras, poses, ages or groups need their own evaluation.",
    "Groups are the labels of the eval data (the first folder of each image key), not a complete "
    "description of the people in it; a group absent from the eval split was not measured.",
    "Faces must be detected and boxed before the model; detector errors are not measured here.",
    "The threshold was set on all eval impostor pairs: a deployment whose impostor mix differs "
    "(e.g. mostly within one group) sees another FMR; see each group's FMR.",
)
TRADEOFF = ("The threshold trades false matches (FMR) against false non-matches (FNMR): raising it "
            "lowers FMR and raises FNMR. The shipped threshold is the lowest with overall FMR <= "
            "the target FMR on the eval split.")
RISKS = [
    {"name": "Unequal error rates across demographic groups (a group falsely matched or rejected "
             "more often than others).",
     "mitigation_strategy": "The release gate checks Recall@1 per group and reports FNMR/FMR per "
                            "group with bootstrap intervals; advisories flag differentials."},
    {"name": "Face images and identities are biometric personal data.",
     "mitigation_strategy": "Evaluation reports can leave example images out "
                            "(--report-examples 0); deploy only with the data subjects' consent "
                            "and a lawful basis."},
]


def _metric(kind: str, scope: str, value, interval=None) -> Optional[Dict[str, Any]]:
    if value is None:
        return None
    metric = {"type": kind, "value": f"{value:.6g}", "slice": scope}
    if interval and None not in interval:
        metric["confidence_interval"] = {"lower_bound": f"{interval[0]:.6g}",
                                         "upper_bound": f"{interval[1]:.6g}"}
    return metric


def performance_metrics(metrics: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per scope (overall first): Recall@1, FNMR and FMR at the threshold, with intervals."""
    verification = metrics.get("verification") or {}
    scopes = [OVERALL] + sorted(s for s in metrics["candidate"] if s != OVERALL)
    result = []
    for scope in scopes:
        recall = metrics["candidate"][scope]
        rates = verification.get(scope) or {}
        for metric in (_metric("Recall@1", scope, recall.get("recall@1"), recall.get("recall@1_ci")),
                       _metric("FNMR at the threshold", scope, rates.get("fnmr"), rates.get("fnmr_ci")),
                       _metric("FMR at the threshold", scope, rates.get("fmr"), rates.get("fmr_ci"))):
            if metric is not None:
                result.append(metric)
    return result


def _eval_description(metrics: Dict[str, Any], group_images: Dict[str, int]) -> str:
    verification = metrics.get("verification") or {}
    parts = []
    for scope in sorted(group_images):
        entry = metrics["candidate"].get(scope, {})
        rates = verification.get(scope) or {}
        parts.append(f"{scope}: {group_images[scope]} images, {entry.get('n_identities', 'n/a')} "
                     f"identities, {rates.get('n_genuine', 'n/a')} genuine / "
                     f"{rates.get('n_impostor', 'n/a')} impostor pairs")
    total = sum(group_images.values())
    return (f"Eval split '{metrics.get('split', 'eval')}' ({total} images, identities unseen in "
            f"training). Per group: " + "; ".join(parts) + ".")


def _training_description(model_config: Dict[str, Any], examples_uri: str) -> str:
    if model_config.get("pretrained"):
        return (f"Pretrained network {model_config['pretrained']} (trained by its authors on their "
                f"own data; not trained by this pipeline).")
    return (f"Train split of {examples_uri}: {model_config.get('train_images', 'n/a')} images of "
            f"{model_config.get('num_classes', 'n/a')} identities.")


def build(metrics: Dict[str, Any], point: Optional[Dict[str, Any]], model_config: Dict[str, Any],
          group_images: Dict[str, int], examples_uri: str) -> Dict[str, Any]:
    """The card (Model Card Toolkit schema 0.0.2) of the evaluated model."""
    model = metrics.get("model") or {}
    verdicts = [f"{'PASS' if v['passed'] else 'FAIL'}: {v['message']}" for v in metrics["verdicts"]]
    advisories = [a.get("message", "") for a in metrics.get("advisories") or []]
    if point is not None:
        operating = (f"Operating point: threshold {point['threshold']:.6g} on the cosine score, set "
                     f"at target FMR {point['target_fmr']:g}; shipped in the SavedModel as "
                     f"assets/operating_point.json and used by its `verify` and `compare` "
                     f"signatures.")
    else:
        operating = "No operating point: the evaluation set no threshold (no impostor pair)."
    documentation = "\n".join(
        [operating, f"Release gate: {'BLESSED' if metrics['blessed'] else 'NOT BLESSED'}."]
        + [f"- {v}" for v in verdicts]
        + [f"Advisory: {a}" for a in advisories])
    architecture = ", ".join(f"{key}={model_config[key]}" for key in
                             ("backbone", "embedding_size", "image_size", "loss", "pretrained")
                             if model_config.get(key) is not None)
    limitations = list(LIMITATIONS) + [f"Advisory from the evaluation: {a}" for a in advisories]
    limitations += [f"Failed release rule: {v['message']}" for v in metrics["verdicts"]
                    if not v["passed"]]
    return without_nulls({
        "schema_version": SCHEMA_VERSION,
        "model_details": {
            "name": f"FFEM face embedding ({model_config.get('backbone', 'model')})",
            "overview": ("A face-embedding model: L2-normalized embeddings of face crops, compared "
                         "by cosine similarity, with its evaluated operating point."),
            "documentation": documentation,
            "version": {"name": f"model artifact {model.get('id')}"},
            "path": str(model.get("uri", "")),
        },
        "model_parameters": {
            "model_architecture": architecture or "see ffem_model_config.json",
            "data": [
                {"name": "training data", "description": _training_description(model_config,
                                                                               examples_uri)},
                {"name": "evaluation data", "link": examples_uri if "://" in examples_uri else None,
                 "description": _eval_description(metrics, group_images),
                 "sensitive": {"sensitive_data": ["face images (biometric data)",
                                                  "group labels (may encode demographics)"]}},
            ],
            "input_format": "JPEG/PNG image bytes with a face box in pixels (x1, y1, x2, y2)",
            "output_format": "embedding: float32, L2-normalized; verify/compare: score, match",
        },
        "quantitative_analysis": {"performance_metrics": performance_metrics(metrics)},
        "considerations": {
            "users": [{"description": u} for u in USERS],
            "use_cases": [{"description": u} for u in USE_CASES],
            "limitations": [{"description": text} for text in limitations],
            "tradeoffs": [{"description": TRADEOFF}],
            "ethical_considerations": RISKS,
        },
    })


def without_nulls(value: Any) -> Any:
    """The card without None values (the schema types every field; absent is allowed)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value
