"""local_runner's options reach the config, and TFX's Beam executors never see them."""
import json
import os
import sys

import pytest

import local_runner
from pipeline import beam_options, configs, local_run, sample_data


def test_beam_args_take_everything_after_them(tmp_path):
    args = local_runner.parse_args(["-v", "--epochs", "3", "--beam-args",
                                    "--direct_num_workers=4", "--direct_running_mode=multi_threading"])
    config = local_runner.build_config(args)
    assert args.verbose and config.training.epochs == 3
    assert config.beam_pipeline_args == ["--direct_num_workers=4",
                                         "--direct_running_mode=multi_threading"]
    alone = local_runner.build_config(local_runner.parse_args(["--beam-args"]))
    assert alone.beam_pipeline_args == []
    default = local_runner.build_config(local_runner.parse_args([]))
    assert default.beam_pipeline_args == configs.PipelineConfig().beam_pipeline_args


def test_runner_options_are_hidden_from_tfx_executors(tmp_path, monkeypatch):
    """TFX's BaseBeamExecutor parses sys.argv with absl flags, where -v means --verbosity:
    `local_runner.py -v --beam-args ...` used to fail with "flag --verbosity=--beam-args"."""
    from tfx import v1 as tfx

    seen = {}

    class RecordingRunner:
        def run(self, pipeline):
            seen["argv"] = list(sys.argv)
            seen["beam_args"] = list(pipeline.beam_pipeline_args)

    monkeypatch.setattr(tfx.orchestration, "LocalDagRunner", RecordingRunner)
    monkeypatch.setattr(sample_data, "ensure_sample_data", lambda config, seed, say: None)
    monkeypatch.setattr(local_run, "print_outcome", lambda config: None)
    argv = ["local_runner.py", "-v", "--pipeline-root", str(tmp_path / "root"), "--metadata",
            str(tmp_path / "m.sqlite"), "--beam-args", "--direct_num_workers=2"]
    monkeypatch.setattr(sys, "argv", argv)
    local_runner.run(argv[1:])
    assert seen["argv"] == ["local_runner.py"]
    assert sys.argv == argv
    assert seen["beam_args"] == ["--runner=FnApiRunner", "--direct_num_workers=2",
                                 *beam_options.without_tfx_package_args(["--runner=FnApiRunner"])]


def write_config(tmp_path, values, name="experiment.json"):
    path = tmp_path / name
    path.write_text(json.dumps(values))
    return str(path)


def test_config_file_sets_fields_and_flags_win_over_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path, {
        "training": {"epochs": 3, "batch_size": 16}, "gate": {"min_recall": 0.7, "max_drop": 0.1},
        "image_size": 48, "ingest": {"data_root": "faces", "offset_labels": True},
        "enable_cache": False, "last_stage": "train"})
    config = local_runner.build_config(local_runner.parse_args([
        "--config", path, "--epochs", "7", "--min-recall", "0.8", "--gate", "max_drop=0.2"]))
    # Flags win; the file's other settings stay; the preset's untouched settings stay.
    demo = json.loads(open(configs.preset_path("demo")).read())
    assert config.training.to_dict() == configs.TrainingConfig.from_dict(
        {**demo["training"], "epochs": 7, "batch_size": 16}).to_dict()
    assert config.gate.to_dict() == configs.GateConfig.from_dict(
        {**demo["gate"], "min_recall": 0.8, "max_drop": 0.2}).to_dict()
    assert config.model.backbone == demo["model"]["backbone"]
    assert config.image_size == 48 and config.last_stage == "train"
    # Flags not given do not reset the file's settings.
    assert config.enable_cache is False and config.ingest.offset_labels is True
    # Relative paths resolve against the working directory; image root follows the data root.
    assert config.ingest.data_root == str(tmp_path / "faces")
    assert config.ingest.image_root == str(tmp_path / "faces" / "images")
    without_file = local_runner.build_config(local_runner.parse_args([]))
    assert without_file.enable_cache is True and without_file.image_size == demo["image_size"]


def test_pair_options_read_json_values_and_plain_strings():
    config = local_runner.build_config(local_runner.parse_args([
        "--training", "optimizer=sgd", "mixed_precision=true", "epochs=3", "--model", "margin=0.4",
        "--list-files", "train=lists/train-*.json", "eval=3.json",
        "--identity-split", "train=9", "eval=1", "--group-min-recall", "north=0.75",
        "--training", '{"schedule": "constant"}']))
    assert config.training.optimizer == "sgd" and config.training.mixed_precision is True
    assert config.training.epochs == 3 and config.model.margin == 0.4
    assert config.training.schedule == "constant"   # a repeated --training adds to the first
    assert config.ingest.list_files == {"train": "lists/train-*.json", "eval": "3.json"}
    assert config.ingest.identity_split == {"train": 9, "eval": 1}
    assert config.gate.group_min_recall == {"north": 0.75}


@pytest.mark.parametrize("argv, message", [
    (["--training", "epochs"], "--training: expected KEY=JSON, got 'epochs'"),
    (["--group-min-recall", "north=high"], "--group-min-recall north=high: 'high' is not a number"),
    (["--identity-split", "train=0.9"], "--identity-split train=0.9: '0.9' is not an integer"),
    (["--gate", "min_recal=0.5"], "command line: gate: unknown setting 'min_recal'; closest known: "
                                  "min_recall"),
    (["--gate", "min_recall=1.5"], "command line: gate: "),
    (["--training", "loss=CosFace"], "command line: training: unknown setting 'loss'; 'loss' is a "
                                     "setting of model"),
    (["--training", 'augmentation={"flipp": false}'], "command line: training.augmentation: unknown "
                                                       "setting 'flipp'; closest known: flip"),
])
def test_bad_options_are_errors_naming_option_and_reason(argv, message):
    with pytest.raises(ValueError) as error:
        local_runner.build_config(local_runner.parse_args(argv))
    assert message in str(error.value)
    if "min_recall=1.5" in argv:
        assert "min_recall" in str(error.value) and "1.5" in str(error.value)


def test_unknown_trainer_setting_stops_the_run_before_anything_starts(tmp_path, monkeypatch, capfd):
    """Every key is checked when the settings are built: the command exits naming the key and its
    closest known name before a log, a pipeline root or the pipeline exist."""
    from tfx import v1 as tfx

    class FailingRunner:
        def run(self, pipeline):
            raise AssertionError("the pipeline must not start")

    monkeypatch.setattr(tfx.orchestration, "LocalDagRunner", FailingRunner)
    root = tmp_path / "root"
    with pytest.raises(SystemExit) as error:
        local_runner.run(["--pipeline-root", str(root), "--metadata", str(tmp_path / "m.sqlite"),
                          "--training", "epochz=3"])
    assert "unknown setting 'epochz'" in str(error.value) and "epochs" in str(error.value)
    assert not root.exists()


def test_a_pretrained_backbone_on_the_box_crop_is_refused_naming_both_settings(tmp_path):
    from pipeline.pipeline import check_config

    config = local_runner.build_config(local_runner.parse_args(
        ["--backbone", "face_recognition_net", "--crop", "box"]))
    with pytest.raises(ValueError, match=r"crop 'box' does not suit model.backbone "
                                         r"'face_recognition_net'.*face_api_aligned"):
        check_config(config)
    check_config(local_runner.build_config(local_runner.parse_args(
        ["--backbone", "face_recognition_net"])))     # its own crop: accepted


def test_a_setting_the_build_refuses_stops_the_run_before_sample_data_is_written(tmp_path,
                                                                               monkeypatch):
    # The settings are checked once, when the pipeline is built, and that happens before the run
    # writes anything (here: the sample data it would generate into a missing default data root).
    data = tmp_path / "sample"
    monkeypatch.setattr(configs, "SAMPLE_DATA_DIR", str(data))
    config = local_runner.build_config(local_runner.parse_args(
        ["--pipeline-root", str(tmp_path / "root"), "--metadata", str(tmp_path / "m.sqlite"),
         "--backbone", "face_recognition_net", "--crop", "box"]))
    config.ingest.data_root = str(data)
    with pytest.raises(SystemExit, match="crop 'box' does not suit model.backbone"):
        local_run.run(config, verbose=True)
    assert not data.exists()


@pytest.mark.parametrize("values, key, closest", [
    ({"trainng": {"epochs": 3}}, "trainng", "training"),
    ({"image_sise": 64}, "image_sise", "image_size"),
    ({"ingest": {"data_rot": "x"}}, "data_rot", "data_root"),
    ({"gate": {"max_dorp": 0.1}}, "max_dorp", "max_drop"),
])
def test_unknown_config_key_names_it_and_the_closest_known(tmp_path, values, key, closest):
    path = write_config(tmp_path, values)
    with pytest.raises(SystemExit) as error:
        local_runner.run(["--config", path])
    text = str(error.value)
    assert f"unknown setting {key!r}" in text and closest in text.split("closest known:")[1]
    assert path in text


def test_config_file_values_must_have_the_settings_type(tmp_path):
    path = write_config(tmp_path, {"image_size": "64"})
    with pytest.raises(ValueError, match=r"image_size must be an integer, got '64'"):
        local_runner.build_config(local_runner.parse_args(["--config", path]))
    path = write_config(tmp_path, {"training": ["epochs", 3]})
    with pytest.raises(ValueError, match=r"training must be an object of settings"):
        local_runner.build_config(local_runner.parse_args(["--config", path]))
    with pytest.raises(ValueError, match="no such file"):
        local_runner.build_config(local_runner.parse_args(["--config", str(tmp_path / "no.json")]))


def test_the_production_preset_gates_the_1to1_view_on_the_interval_and_the_demo_keeps_its_rule():
    from components.recall_evaluator import gate

    production = local_runner.build_config(local_runner.parse_args(["--preset", "production"]))
    config = production.gate
    assert (config.max_fmr_ratio, config.max_fnmr_ratio, config.bar_test) == (8.0, 3.0, "interval")
    demo = local_runner.build_config(local_runner.parse_args([]))
    assert demo.gate == gate.GateConfig(ks=[1, 5], min_recall=0.6, max_drop=0.05)
    # A differential of 18.5 [7.6, 31.0] over two groups of 2,500 impostor pairs among 10,000
    # (composition ceiling 2): the production gate refuses it, the demo blesses it and names it.
    recall = {s: {"recall@1": 0.95, "recall@1_ci": [0.9, 0.99], "n_identities": 30, "n_queries": 90}
              for s in ("overall", "a", "b")}
    verification = {"target_fmr": 1e-3, "ratio_groups": ["a", "b"], "fmr_differential": 18.5,
                    "fmr_differential_ci": [7.6, 31.0], "skewed_error_ratio": 1.2,
                    "skewed_error_ratio_ci": [0.8, 1.9]}
    for scope, pairs in (("overall", 10_000), ("a", 2_500), ("b", 2_500)):
        verification[scope] = {"fnmr": 0.05, "fnmr_ci": [0.03, 0.07], "fmr": 1e-3, "n_impostor": pairs}
    refused = [v["rule"] for v in gate.evaluate_gate(recall, config, None, verification) if not v["passed"]]
    assert refused == ["max_fmr_ratio"]
    demo_config = demo.gate
    assert all(v["passed"] for v in gate.evaluate_gate(recall, demo_config, None, verification))
    assert [a["statistic"] for a in gate.advisories(verification, demo_config)] == ["fmr_differential"]
    assert gate.advisories(verification, config) == []


def record_beam_args(monkeypatch, tmp_path, beam_args):
    """The Beam args the pipeline would run with, from local_runner with `beam_args`."""
    from tfx import v1 as tfx

    seen = {}

    class RecordingRunner:
        def run(self, pipeline):
            seen["beam_args"] = list(pipeline.beam_pipeline_args)

    monkeypatch.setattr(tfx.orchestration, "LocalDagRunner", RecordingRunner)
    monkeypatch.setattr(sample_data, "ensure_sample_data", lambda config, seed, say: None)
    monkeypatch.setattr(local_run, "print_outcome", lambda config: None)
    local_runner.run(["--pipeline-root", str(tmp_path / "root"), "--metadata",
                      str(tmp_path / "m.sqlite"), "--beam-args", *beam_args])
    return seen.get("beam_args")


def test_dataflow_workers_launched_from_a_checkout_get_its_setup_file_unless_told(
        tmp_path, monkeypatch):
    from tests.conftest import REPO_ROOT

    dataflow = ["--runner=DataflowRunner", "--project=acme"]
    assert record_beam_args(monkeypatch, tmp_path, dataflow) == [
        *dataflow, f"--setup_file={os.path.join(REPO_ROOT, 'setup.py')}"]
    own = [*dataflow, "--sdk_container_image=gcr.io/acme/ffem-tfx:1"]
    assert record_beam_args(monkeypatch, tmp_path, own) == own


def test_an_image_option_beam_ignores_stops_the_run_before_the_pipeline(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="--environment_config=IMAGE"):
        record_beam_args(monkeypatch, tmp_path, ["--runner=PortableRunner",
                                                 "--job_endpoint=flink:8099",
                                                 "--sdk_container_image=gcr.io/acme/x:1"])
