"""The model card: model_card.json validates against the Model Card Toolkit schema file shipped in
the model-card-toolkit wheel (fetched without its dependencies, whose pins conflict with this
stack); its per-group figures are the brute-force ones at the operating point; model_card.html
shows them and fetches nothing."""
import glob
import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from components.recall_evaluator import model_card
from core import model_card as card_lib
from core import operating_point
from tests.conftest import REPO_ROOT
from tests.test_operating_point import TARGET, _brute_force, evaluated  # noqa: F401 (fixture)

# The toolkit release whose schema the card follows (schema_version 0.0.2).
WHEEL = "model-card-toolkit==2.0.0"
SCHEMA_IN_WHEEL = "model_card_toolkit/schema/v0.0.2/model_card.schema.json"


@pytest.fixture(scope="module")
def schema():
    """The schema JSON from the wheel: downloaded once (no dependencies) into .cache/wheels."""
    cache = os.path.join(REPO_ROOT, ".cache", "wheels")
    found = glob.glob(os.path.join(cache, "model_card_toolkit-2.0.0-*.whl"))
    if not found:
        download = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                                   "--disable-pip-version-check", WHEEL, "-d", cache],
                                  capture_output=True, text=True)
        found = glob.glob(os.path.join(cache, "model_card_toolkit-2.0.0-*.whl"))
        if not found:
            pytest.skip(f"could not fetch {WHEEL}: {download.stderr[-300:]}")
    with zipfile.ZipFile(found[0]) as wheel:
        return json.loads(wheel.read(SCHEMA_IN_WHEEL))


@pytest.fixture(scope="module")
def card(evaluated):  # noqa: F811
    embeddings, labels, groups, metrics, keys = evaluated
    metrics = dict(metrics, split="eval", model={"id": 5, "uri": "/models/5"})
    point = operating_point.build(metrics, "/examples", "eval", keys, {"uri": "/ev", "execution_id": "6"},
                                  metrics["model"])
    config = {"backbone": "small_cnn", "embedding_size": 16, "image_size": 32, "loss": "ArcFace",
              "train_images": 900, "num_classes": 300}
    return card_lib.build(metrics, point, config, model_card.group_images(groups), "/examples")


def test_the_card_validates_against_the_toolkits_schema(card, schema):
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(
        schema, format_checker=jsonschema.FormatChecker())
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(card)]
    assert errors == []
    assert card["schema_version"] == "0.0.2"
    # And the schema is strict enough to catch a wrong card (the check can fail).
    wrong = json.loads(json.dumps(card))
    wrong["quantitative_analysis"]["performance_metrics"][0]["value"] = 0.5     # not a string
    wrong["model_card_extra"] = {}                                               # unknown field
    assert len(list(validator.iter_errors(wrong))) == 2


def test_the_cards_figures_are_the_brute_force_ones_per_group(card, evaluated):  # noqa: F811
    embeddings, labels, groups, metrics, _ = evaluated
    scores, genuine, first, second, _ = _brute_force(embeddings, labels, groups)
    threshold = metrics["verification"]["threshold"]
    match = scores >= threshold
    figures = {(m["slice"], m["type"]): m for m in card["quantitative_analysis"]["performance_metrics"]}
    for scope in ("overall", "g1", "g2"):
        inside = (np.ones_like(match) if scope == "overall"
                  else (groups[first] == scope) & (groups[second] == scope))
        fmr = figures[(scope, "FMR at the threshold")]
        fnmr = figures[(scope, "FNMR at the threshold")]
        assert float(fmr["value"]) == pytest.approx(match[inside & ~genuine].mean(), rel=1e-5)
        assert float(fnmr["value"]) == pytest.approx((~match[inside & genuine]).mean(), rel=1e-5)
        interval = fnmr["confidence_interval"]
        assert float(interval["lower_bound"]) <= float(fnmr["value"]) <= float(interval["upper_bound"])
        assert (scope, "Recall@1") in figures
    evaluation = card["model_parameters"]["data"][1]["description"]
    for group, count in zip(*np.unique(groups, return_counts=True)):
        assert f"{group}: {count} images" in evaluation
    assert f"threshold {threshold:.6g}" in card["model_details"]["documentation"]
    assert card["model_details"]["documentation"].count("\n- ") == len(metrics["verdicts"])


def test_the_html_card_shows_every_figure_and_fetches_nothing(card):
    page = model_card.render_html(card)
    for metric in card["quantitative_analysis"]["performance_metrics"]:
        assert re.search(rf"<td>{re.escape(metric['slice'])}</td>\s*<td>{re.escape(metric['type'])}"
                         rf"</td><td>{re.escape(metric['value'])}</td>", page), metric
    assert "Content-Security-Policy" in page
    assert not re.search(r"(src|href)=", page)


def test_the_card_files_are_written_where_the_pusher_and_the_ui_read_them(evaluated, tmp_path):  # noqa: F811
    import system

    _, _, groups, metrics, _ = evaluated
    page = system.HTML()
    page.uri = str(tmp_path / "ui" / "model_card.html")
    written = model_card.write_model_card(dict(metrics, model={"id": 1, "uri": "/m"}), None, {},
                                          groups, "/ex", [str(tmp_path / "blessing")], [page])
    with open(tmp_path / "blessing" / card_lib.JSON_FILE) as f:
        assert json.load(f) == written
    with open(tmp_path / "blessing" / card_lib.HTML_FILE) as f, open(page.uri) as g:
        assert f.read() == g.read()
    assert "No operating point" in written["model_details"]["documentation"]
