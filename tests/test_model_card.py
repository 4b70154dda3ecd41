"""The model card: model_card.json validates against the Model Card Toolkit schema file shipped in
the model-card-toolkit wheel (fetched without its dependencies, whose pins conflict with this
stack; offline, against the schema's fields written in tests/model_card_schema.py, which are
checked here against the wheel's file); its per-group figures are the brute-force ones at the
operating point; model_card.html shows them and fetches nothing."""
import json
import re

import numpy as np
import pytest

from components.recall_evaluator import model_card
from core import model_card as card_lib
from core import operating_point
from tests import model_card_schema
from tests.test_operating_point import TARGET, _brute_force, evaluated  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def card(evaluated):  # noqa: F811
    embeddings, labels, groups, metrics, keys = evaluated
    metrics = dict(metrics, split="eval", model={"id": 5, "uri": "/models/5"})
    point = operating_point.build(metrics, "/examples", "eval", keys, {"uri": "/ev", "execution_id": "6"},
                                  metrics["model"])
    config = {"backbone": "small_cnn", "embedding_size": 16, "image_size": 32, "loss": "ArcFace",
              "train_images": 900, "num_classes": 300}
    return card_lib.build(metrics, point, config, model_card.group_images(groups), "/examples")


def _wrong(card):
    """The card with a number where the schema wants a string, and a field it does not know."""
    wrong = json.loads(json.dumps(card))
    wrong["quantitative_analysis"]["performance_metrics"][0]["value"] = 0.5
    wrong["model_card_extra"] = {}
    return wrong


def test_the_card_validates_against_the_toolkits_schema(card):
    """The wheel's schema when it can be fetched, else the schema's published fields (with a
    warning in the summary): the card validates, and the schema is strict enough to catch a
    wrong card (the check can fail)."""
    model_card_schema.assert_valid(card)
    against, _ = model_card_schema.schema()
    assert len(model_card_schema.errors(_wrong(card), against)) == 2


def test_the_offline_fields_are_the_wheels_schema_and_judge_a_card_as_it_does(card):
    """PUBLISHED_FIELDS (the fallback when the wheel cannot be fetched) are the wheel's schema
    0.0.2, field for field, and find the same errors in a wrong card."""
    wheel, reason = model_card_schema.wheel_schema()
    if wheel is None:
        pytest.skip(reason)       # nothing to compare the literal with; the cards still validate
    assert model_card_schema.fields_of_schema(wheel) == model_card_schema.PUBLISHED_FIELDS
    published = model_card_schema.schema_of_fields(model_card_schema.PUBLISHED_FIELDS)
    assert (model_card_schema.errors(_wrong(card), published)
            == model_card_schema.errors(_wrong(card), wheel))
    assert model_card_schema.errors(card, published) == []


def test_offline_the_card_is_validated_against_the_published_fields_not_skipped(card, monkeypatch):
    """Without the wheel (no network) the validation runs against PUBLISHED_FIELDS and says so."""
    monkeypatch.setattr(model_card_schema, "wheel_schema", lambda: (None, "could not fetch (test)"))
    with pytest.warns(model_card_schema.SchemaFallbackWarning, match="could not fetch"):
        assert model_card_schema.assert_valid(card) == "PUBLISHED_FIELDS"
    with pytest.warns(model_card_schema.SchemaFallbackWarning), pytest.raises(AssertionError):
        model_card_schema.assert_valid(_wrong(card))


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
