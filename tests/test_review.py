"""tools.review's `show` and `compare` print the evaluation's intervals (no metadata store needed:
runs are the dicts `list_runs` returns, metrics.json is written here)."""
import math

from core import json_safe
from pipeline import runs as review


def run(tmp_path, name, model_id, recall, metrics):
    directory = tmp_path / name
    directory.mkdir()
    (directory / "metrics.json").write_text(json_safe.dumps(metrics))
    return {"run_id": name, "started": "2026-01-01T00:00:00", "model_id": model_id,
            "model_uri": f"/models/{model_id}", "trainer": "COMPLETE", "recall_at_1": recall,
            "blessed": True, "report": None, "pushed": True, "pushed_to": None,
            "evaluation_uri": str(directory), "tflite_uri": None, "failed_nodes": []}


def metrics(recall_ci, baseline_id=None, deltas=None):
    return {"candidate": {scope: {"recall@1": None, "recall@1_ci": ci} for scope, ci in recall_ci.items()},
            "baseline_model": {"id": baseline_id} if baseline_id else None, "deltas": deltas or {},
            "pixel_baseline": None,
            "verification": {"target_fmr": 0.001, "threshold": 0.4321,
                             "overall": {"fnmr": 0.05, "fnmr_ci": [0.04, 0.061], "fmr": 0.00105,
                                         "fmr_ci": [0.0008, 0.0013]},
                             "east": {"fnmr": None, "fnmr_ci": None, "fmr": 0.002, "fmr_ci": None}},
            "verdicts": [{"passed": False, "message": "east: Recall@1 0.5000 < bar 0.6000 (...)"}]}


def test_show_prints_recall_and_1to1_intervals(tmp_path):
    shown = review.format_show(run(tmp_path, "r1", 3, {"overall": 0.8, "east": 0.5},
                                   metrics({"overall": [0.75, 0.85], "east": [0.4, 0.61]})))
    assert "overall 0.800 [0.750, 0.850], east 0.500 [0.400, 0.610]" in shown
    assert "threshold 0.4321 (target FMR 0.001)" in shown
    assert "overall    FNMR 0.0500 [0.0400, 0.0610]  FMR 0.00105 [0.00080, 0.00130]" in shown
    assert "east       FNMR -  FMR 0.00200" in shown
    assert "FAIL  east: Recall@1 0.5000 < bar 0.6000" in shown


def test_compare_prints_both_intervals_and_the_paired_change_only_when_paired(tmp_path):
    a = run(tmp_path, "a", 3, {"overall": 0.8}, metrics({"overall": [0.75, 0.85]}))
    b = run(tmp_path, "b", 4, {"overall": 0.7},
            metrics({"overall": [0.6, 0.8]}, baseline_id=3,
                    deltas={"overall": {"recall@1": -0.1, "recall@1_ci": [-0.15, -0.05]}}))
    table = review.format_compare(a, b)
    overall = [line for line in table.splitlines() if line.startswith("overall")][0]
    assert "0.800 [0.750, 0.850]" in overall and "0.700 [0.600, 0.800]" in overall
    assert "-0.100 [-0.150, -0.050]" in overall
    assert "paired" in table.splitlines()[-1]
    unpaired = review.format_compare(b, a)          # a was not evaluated against b's model
    overall = [line for line in unpaired.splitlines() if line.startswith("overall")][0]
    assert overall.rstrip().endswith("+0.100")
    assert "no paired interval" in unpaired


def test_compare_without_metrics_files_still_prints_points(tmp_path):
    a = run(tmp_path, "a", 3, {"overall": 0.8}, metrics({}))
    b = dict(a, run_id="b", evaluation_uri=None, recall_at_1={"overall": 0.9})
    line = [x for x in review.format_compare(a, b).splitlines() if x.startswith("overall")][0]
    assert line.split() == ["overall", "0.800", "0.900", "+0.100"]


def test_show_names_what_is_not_gated_and_prints_unbounded_ends_and_missing_intervals(tmp_path):
    values = metrics({"overall": [0.75, 0.85]})
    values["verification"].update(fmr_differential=18.5, fmr_differential_ci=[7.6, 31.0],
                                  skewed_error_ratio=math.inf, skewed_error_ratio_ci=[1.05, math.inf])
    values["advisories"] = [{"statistic": "fmr_differential", "scope": "overall", "value": 18.5,
                             "interval": [7.6, 31.0], "level": 4.0,
                             "message": "FMR differential 18.5 [7.6, 31.0]: the whole 95 % interval "
                                        "lies above 4.0; not gated: max_fmr_ratio is off"}]
    shown = review.format_show(run(tmp_path, "r1", 3, {"overall": 0.8}, values))
    assert "FMR differential 18.50 [7.60, 31.00], skewed error ratio inf [1.05, inf]" in shown
    assert "east       FNMR -  FMR 0.00200 (no interval)" in shown
    line = [x for x in shown.splitlines() if x.startswith("not gated")]
    assert line == ["not gated  FMR differential 18.5 [7.6, 31.0]: the whole 95 % interval lies "
                    "above 4.0; not gated: max_fmr_ratio is off"]
    # Above the verdicts, and the file holds strict JSON that reads back as infinity.
    assert shown.index("not gated") < shown.index("FAIL  east")
    text = (tmp_path / "r1" / "metrics.json").read_text()
    assert "Infinity" not in text and '"inf"' in text
    assert review.read_metrics({"evaluation_uri": str(tmp_path / "r1")})["verification"][
        "skewed_error_ratio_ci"] == [1.05, math.inf]


def test_show_prints_the_shipped_operating_point_in_preference_to_the_evaluated_one(tmp_path):
    from core import operating_point

    def point(threshold):
        metrics = {"verification": {"target_fmr": 0.001, "threshold": threshold,
                                    "overall": {"n_genuine": 10, "n_impostor": 900, "fnmr": 0.1,
                                                "fnmr_ci": [0.05, 0.2], "fmr": 0.001,
                                                "fmr_ci": [0.0, 0.003]}},
                   "confidence": 0.95, "gate_config": {"min_recall": 0.7, "max_fmr_ratio": None},
                   "blessed": True, "failed_rules": ["max_drop"]}
        built = operating_point.build(metrics, "/ex", "eval", ["a/1.jpg"],
                                      {"uri": str(tmp_path / "r1"), "execution_id": "8"},
                                      {"id": 3, "uri": "/m"})
        return built

    shown_run = run(tmp_path, "r1", 3, {"overall": 0.8}, metrics({"overall": [0.75, 0.85]}))
    evaluated = point(0.25)
    (tmp_path / "r1" / operating_point.FILE).write_text(operating_point.dumps(evaluated))
    shown = review.format_show(dict(shown_run, evaluation_id=21))
    assert "evaluated  operating point: threshold 0.250000 at target FMR 0.001" in shown
    assert "overall          FNMR 0.10000 [0.05000, 0.20000]   FMR 0.00100 [0.00000, 0.00300]" in shown
    # What identifies it: the eval data's whole digest, the evaluation (its execution, and its
    # artifact id from the store), the model, and the gate that decided.
    lines = shown.splitlines()
    digest = operating_point.keys_digest(["a/1.jpg"])
    assert f"  eval data: /ex split 'eval', 1 images, keys sha256 {digest}" in lines
    assert f"  evaluation: {tmp_path / 'r1'} (execution 8)" in lines
    assert "  evaluation artifact: 21 (ML Metadata)" in lines
    assert "  model: 3 /m" in lines
    assert ('  gate: failed rules max_drop; settings {"max_fmr_ratio":null,"min_recall":0.7}'
            in lines)
    pushed = tmp_path / "serving" / "17"
    (pushed / "assets").mkdir(parents=True)
    shipped = dict(point(0.375), blessing={"id": 30, "uri": "/b"})
    (pushed / "assets" / operating_point.FILE).write_text(operating_point.dumps(shipped))
    shown = review.format_show(dict(shown_run, pushed_to=str(pushed)))
    assert "shipped    operating point: threshold 0.375000" in shown
    assert "  blessing: 30 /b" in shown.splitlines()


def test_show_marks_the_approximate_intervals_and_says_why(tmp_path):
    values = metrics({"overall": [0.75, 0.85]})
    values["approximate_intervals"] = {"fmr": "conservative, see results", "recall@1": "narrow"}
    shown = review.format_show(run(tmp_path, "r1", 3, {"overall": 0.8}, values))
    assert "overall 0.800 [0.750, 0.850] ≈" in shown
    assert "overall    FNMR 0.0500 [0.0400, 0.0610]  FMR 0.00105 [0.00080, 0.00130] ≈" in shown
    assert "  ≈ fmr: conservative, see results" in shown.splitlines()
    assert "  ≈ recall@1: narrow" in shown.splitlines()
    # Nothing approximate: no mark at all.
    plain = review.format_show(run(tmp_path, "r2", 3, {"overall": 0.8},
                                   metrics({"overall": [0.75, 0.85]})))
    assert "≈" not in plain


def test_show_marks_a_verdicts_interval_by_its_figure_and_a_changes_by_its_delta(tmp_path):
    values = metrics({"overall": [0.75, 0.85]})
    values["approximate_intervals"] = {"fnmr": "conservative", "delta recall@1": "conservative"}
    values["verdicts"] = [
        {"passed": True, "message": "overall: FNMR 0.0500 <= 0.0800 (interval)",
         "statistic": "fnmr", "interval": [0.04, 0.061]},
        {"passed": True, "message": "overall: Recall@1 change +0.010 (interval)",
         "statistic": "recall@1", "interval": [-0.01, 0.03], "difference": True},
        {"passed": True, "message": "overall: Recall@1 0.800 >= 0.600 (interval)",
         "statistic": "recall@1", "interval": [0.75, 0.85]},
        {"passed": False, "message": "east: FNMR is missing", "statistic": "fnmr", "interval": None}]
    lines = review.format_show(run(tmp_path, "r1", 3, {"overall": 0.8}, values)).splitlines()
    assert "  PASS  overall: FNMR 0.0500 <= 0.0800 (interval) ≈" in lines
    assert "  PASS  overall: Recall@1 change +0.010 (interval) ≈" in lines
    assert "  PASS  overall: Recall@1 0.800 >= 0.600 (interval)" in lines     # recall@1 is not listed
    assert "  FAIL  east: FNMR is missing" in lines                           # no interval quoted
