"""local_runner's options reach the config, and TFX's Beam executors never see them."""
import sys

import local_runner
from pipeline import configs


def test_beam_args_take_everything_after_them(tmp_path):
    args = local_runner.parse_args(["-v", "--epochs", "3", "--beam-args",
                                    "--direct_num_workers=4", "--direct_running_mode=multi_threading"])
    config = local_runner.build_config(args)
    assert args.verbose and config.training["epochs"] == 3
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
    monkeypatch.setattr(local_runner, "ensure_sample_data", lambda config, seed: None)
    monkeypatch.setattr(local_runner, "print_outcome", lambda config: None)
    argv = ["local_runner.py", "-v", "--pipeline-root", str(tmp_path / "root"), "--metadata",
            str(tmp_path / "m.sqlite"), "--beam-args", "--direct_num_workers=2"]
    monkeypatch.setattr(sys, "argv", argv)
    local_runner.run(argv[1:])
    assert seen["argv"] == ["local_runner.py"]
    assert sys.argv == argv
    assert seen["beam_args"] == ["--runner=FnApiRunner", "--direct_num_workers=2"]
