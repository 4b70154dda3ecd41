"""The settings tree (core/settings, pipeline/configs.py): every key at every depth is checked when
it is built, layers merge section by section, the presets are experiment files, and the generated
page of every setting is current."""
import json

import pytest

from core.settings.model import LOSS_DEFAULTS
from pipeline import config_docs, configs, overrides

SECTIONS = {"ingest": configs.IngestConfig, "model": configs.ModelConfig,
            "training": configs.TrainingConfig, "training.augmentation": configs.AugmentationConfig,
            "gate": configs.GateConfig}


def nested(path: str, key: str, value):
    """{"a": {"b": {key: value}}} for path "a.b"."""
    layer = {key: value}
    for part in reversed(path.split(".")):
        layer = {part: layer}
    return layer


@pytest.mark.parametrize("path", sorted(SECTIONS))
def test_a_misspelt_key_in_any_section_names_it_and_the_closest_known_one(path):
    known = max(SECTIONS[path].field_types(), key=len)      # long enough to have a close match
    typo = known[:-1] + ("x" if known[-1] != "x" else "y")
    with pytest.raises(ValueError) as error:
        configs.PipelineConfig().updated(nested(path, typo, 1), "--config exp.json")
    assert str(error.value).startswith(f"--config exp.json: {path}: unknown setting {typo!r}; ")
    assert known in str(error.value).split("closest known:")[1]


def test_a_key_in_the_wrong_section_names_the_section_that_has_it():
    for path, key in (("training", "loss"), ("model", "epochs"), ("gate", "data_root"),
                      ("training", "flip")):
        owner = {"loss": "model", "epochs": "training", "data_root": "ingest",
                 "flip": "training.augmentation"}[key]
        with pytest.raises(ValueError, match=f"'{key}' is a setting of {owner}"):
            configs.PipelineConfig().updated(nested(path, key, 1), "test")


def test_values_must_have_the_settings_type_at_every_depth():
    cases = [({"image_size": "64"}, "image_size must be an integer"),
             ({"training": {"augmentation": {"flip": "no"}}}, "training.augmentation.flip must be "
                                                              "true or false"),
             ({"gate": {"ks": [1, "5"]}}, r"gate.ks\[1\] must be an integer"),
             ({"ingest": {"list_files": {"train": 3}}}, r"list_files\['train'\] must be a string"),
             ({"model": "ArcFace"}, "model must be an object of settings")]
    for values, message in cases:
        with pytest.raises(ValueError, match=message):
            configs.PipelineConfig().updated(values, "test")


def test_layers_merge_section_by_section_and_replace_other_values():
    base = configs.preset("demo")
    merged = overrides.merge({"training": {"epochs": 3, "augmentation": {"cutout": False}},
                              "ingest": {"list_files": {"train": "a.json", "eval": "b.json"}}},
                             {"training": {"augmentation": {"flip": False}},
                              "ingest": {"list_files": {"train": "c.json"}}})
    config = overrides.apply(base, merged, "test")
    assert config.training.epochs == 3 and config.training.batch_size == base.training.batch_size
    assert (config.training.augmentation.flip, config.training.augmentation.cutout,
            config.training.augmentation.colour) == (False, False, True)
    assert config.ingest.list_files == {"train": "c.json"}        # a plain dict is replaced whole
    assert base.training.epochs != 3                                # the base is not changed


def test_a_loss_changed_by_a_later_layer_takes_that_losss_defaults():
    """Loss hyper-parameters stay null in the settings: a preset's ArcFace (m = 0.5) changed to
    CosFace by a flag trains with CosFace's m = 0.35, not with the margin ArcFace left behind."""
    config = overrides.apply(configs.preset("production"), {"model": {"loss": "CosFace"}}, "test")
    assert config.model.loss_value("margin") == LOSS_DEFAULTS["CosFace"]["margin"] == 0.35
    set_by_hand = overrides.apply(config, {"model": {"margin": 0.2}}, "test")
    assert set_by_hand.model.loss_value("margin") == 0.2


def test_every_preset_file_is_a_complete_readable_experiment():
    for name in configs.presets():
        with open(configs.preset_path(name)) as f:
            values = json.load(f)
        config = configs.preset(name)
        assert values["description"] and config.description == values["description"]
        for section in ("model", "training", "gate"):
            for key, value in values[section].items():
                assert getattr(getattr(config, section), key) == value, (name, section, key)
    production = configs.preset("production")
    assert (production.gate.bar_test, production.gate.max_fmr_ratio,
            production.gate.max_fnmr_ratio) == ("interval", 8.0, 3.0)
    with pytest.raises(ValueError, match="no preset 'prod'"):
        configs.preset("prod")


def test_trainer_settings_are_the_model_and_training_sections_flat():
    config = configs.preset("demo")
    settings = configs.trainer_settings(config)
    assert settings["image_size"] == config.image_size
    assert settings["epochs"] == config.training.epochs and settings["loss"] == config.model.loss
    assert settings["augmentation"] == config.training.augmentation.to_dict()
    assert set(settings) == set(configs.ModelConfig.field_types()) | set(
        configs.TrainingConfig.field_types())


def test_model_image_size_is_refused_in_favour_of_the_top_level_one():
    with pytest.raises(ValueError, match="set the top-level image_size"):
        configs.PipelineConfig().updated({"model": {"image_size": 64}}, "test")


def test_settings_of_the_kubeflow_runner_cannot_come_from_a_file(tmp_path):
    path = tmp_path / "exp.json"
    path.write_text(json.dumps({"resources": {}}))
    with pytest.raises(ValueError, match="come from the Kubeflow runner's flags"):
        configs.read_settings_file(str(path))


def test_the_configuration_page_is_generated_from_the_settings_and_current():
    with open(config_docs.DOC_PATH) as f:
        page = f.read()
    assert page == config_docs.markdown(), "run python -m tools.config_docs"
    for path, cls in SECTIONS.items():
        for name in cls.field_types():
            if (name == "image_size" and cls is configs.ModelConfig) or name == "augmentation":
                continue    # set through the top-level image_size; a section has its own table
            assert f"| `{path}.{name}` |" in page, (path, name)
    assert "| `model.sample_rate` | a number | `1.0` |" in page
