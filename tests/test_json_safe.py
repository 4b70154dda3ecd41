"""metrics.json is strict JSON: +-inf as "inf" / "-inf", NaN as null, decoded back to floats in the
numeric places only (a group may be named "inf")."""
import json
import math

from core import json_safe

INF = math.inf


def strict_loads(text):
    """JSON as a strict parser reads it: the bare tokens Infinity, -Infinity and NaN are errors."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")
    return json.loads(text, parse_constant=refuse)


def metrics_with_unbounded_figures():
    return {"verification": {"skewed_error_ratio": INF, "skewed_error_ratio_ci": [1.05, INF],
                             "fmr_differential": 3.5, "fmr_differential_ci": [-INF, 4.0],
                             "ratio_groups": ["inf", "west"],
                             "inf": {"fnmr": 0.0, "fnmr_ci": [0.0, 0.0]}},
            "verdicts": [{"rule": "max_fnmr_ratio", "scope": "inf", "value": INF, "judged": INF,
                          "interval": [1.05, INF], "threshold": 20.0, "statistic": "skewed_error_ratio",
                          "message": "inf"}],
            "advisories": [{"statistic": "skewed_error_ratio", "scope": "overall", "value": INF,
                            "interval": [1.6, INF], "level": 1.5, "message": "m"}],
            "ungated": ["inf"], "failed_rules": ["inf"], "split": "eval", "confidence": 0.95}


def test_infinity_round_trips_through_strict_json_and_names_stay_text():
    metrics = metrics_with_unbounded_figures()
    text = json_safe.dumps(metrics, sort_keys=True, indent=1)
    plain = strict_loads(text)
    assert plain["verification"]["skewed_error_ratio_ci"] == [1.05, "inf"]
    assert plain["verification"]["fmr_differential_ci"] == ["-inf", 4.0]
    assert json_safe.loads(text) == metrics
    back = json_safe.loads(text)
    assert back["verdicts"][0]["scope"] == "inf" and back["verdicts"][0]["message"] == "inf"
    assert back["verification"]["ratio_groups"] == ["inf", "west"] and back["ungated"] == ["inf"]
    assert back["verdicts"][0]["judged"] == INF and back["advisories"][0]["interval"][1] == INF


def test_nan_is_written_as_null():
    assert strict_loads(json_safe.dumps({"recall@1": math.nan, "x_ci": [math.nan, 1.0]})) == {
        "recall@1": None, "x_ci": [None, 1.0]}
    assert json_safe.loads(json_safe.dumps((1.0, {"a": (math.nan,)}))) == [1.0, {"a": [None]}]


def test_the_file_functions_match_the_text_functions(tmp_path):
    metrics = metrics_with_unbounded_figures()
    path = tmp_path / "metrics.json"
    with open(path, "w") as f:
        json_safe.dump(metrics, f, indent=1)
    assert path.read_text() == json_safe.dumps(metrics, indent=1)
    with open(path) as f:
        assert json_safe.load(f) == metrics
