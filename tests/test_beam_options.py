"""pipeline/beam_options.py: which runners' workers are outside this process, and what they get to
find the project's code. Expected values are Beam's documented behaviour, and the classification
of portable runners is checked against the environment Beam's own runner classes build."""
import glob
import tempfile

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns, python_urns
from apache_beam.runners.runner import create_runner
from apache_beam.transforms.environments import DockerEnvironment, Environment

from pipeline import beam_options
from pipeline.beam_options import Workers

IMAGE = "gcr.io/acme/ffem-tfx:1.2"
SETUP = "/pipeline/setup.py"


@pytest.mark.parametrize("args", [
    ["--runner=DataflowRunner", "--project=p"],
    ["--runner", "dataflow", "--region=europe-west4"],
    ["--runner=apache_beam.runners.dataflow.dataflow_runner.DataflowRunner"],
    ["--runner=TestDataflowRunner"],
])
def test_dataflow_workers_get_the_pipeline_image_as_their_sdk_container(args):
    assert beam_options.workers_of(args) is Workers.DATAFLOW
    assert beam_options.with_worker_code(args, image=IMAGE, setup_file=SETUP) == \
        [*args, f"--sdk_container_image={IMAGE}"]


def test_an_environment_option_does_not_count_as_dataflow_workers_code():
    """Dataflow ignores --environment_config: the image is still added."""
    args = ["--runner=DataflowRunner", "--environment_config=gcr.io/acme/other:1"]
    assert beam_options.worker_code_args(args, image=IMAGE) == [f"--sdk_container_image={IMAGE}"]


def test_without_an_image_dataflow_workers_get_the_setup_file_and_without_either_it_is_refused():
    args = ["--runner=DataflowRunner"]
    assert beam_options.worker_code_args(args, setup_file=SETUP) == [f"--setup_file={SETUP}"]
    with pytest.raises(ValueError, match="not local processes.*--sdk_container_image=IMAGE.*"
                                         "--setup_file"):
        beam_options.worker_code_args(args)


@pytest.mark.parametrize("own", [
    "--sdk_container_image=gcr.io/acme/custom:3",
    "--worker_harness_container_image=gcr.io/acme/custom:3",
    "--setup_file=/pipeline/setup.py",
    "--extra_package=dist/ffem_tfx-0.1.0-py3-none-any.whl",
    "--extra_packages=dist/ffem_tfx-0.1.0-py3-none-any.whl",
])
def test_a_users_own_way_to_the_code_wins(own):
    args = ["--runner=DataflowRunner", own]
    assert beam_options.with_worker_code(args, image=IMAGE, setup_file=SETUP) == args


@pytest.mark.parametrize("args", [
    [],                                                           # DirectRunner: Prism, LOOPBACK
    ["--runner=FnApiRunner"],
    ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
    # FnApiRunner runs its workers itself, whatever the environment options say.
    ["--runner=FnApiRunner", "--environment_type=DOCKER", "--environment_config=img"],
    ["--runner=PrismRunner"],
    ["--runner=FlinkRunner"],                                     # [auto]: a local cluster
    ["--runner=SparkRunner", "--spark_master_url=local[2]"],
    ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"],
])
def test_local_workers_share_this_process_code_and_get_nothing(args):
    assert beam_options.workers_of(args) is Workers.LOCAL
    assert beam_options.with_worker_code(args, image=IMAGE) == args


@pytest.mark.parametrize("args", [
    ["--runner=PortableRunner", "--job_endpoint=localhost:8099"],
    ["--runner=PortableRunner", "--job_endpoint=embed"],          # Docker is the default
    ["--runner=FlinkRunner", "--flink_master=flink.example:8081"],
    ["--runner=SparkRunner", "--spark_master_url=spark://spark.example:7077"],
    ["--runner=PrismRunner", "--environment_type=beam:env:docker:v1"],
])
def test_portable_docker_workers_get_the_image_as_their_environment(args):
    assert beam_options.workers_of(args) is Workers.DOCKER
    assert beam_options.worker_code_args(args, image=IMAGE) == [f"--environment_config={IMAGE}"]
    assert beam_options.worker_code_args(args, setup_file=SETUP) == [f"--setup_file={SETUP}"]
    own = [*args, "--environment_config=gcr.io/acme/custom:3"]
    assert beam_options.worker_code_args(own, image=IMAGE) == []
    # Beam ignores --sdk_container_image for portable Docker workers: refused, not dropped.
    with pytest.raises(ValueError, match="--environment_config=IMAGE"):
        beam_options.worker_code_args([*args, "--sdk_container_image=x"], image=IMAGE)


@pytest.mark.parametrize("args", [
    ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
     "--environment_config=127.0.0.1:50000"],
    ["--runner=FlinkRunner", "--flink_master=flink.example:8081", "--environment_type=PROCESS",
     "--environment_config={\"command\": \"/opt/apache/beam/boot\"}"],
])
def test_worker_pools_the_user_started_are_left_as_they_are(args):
    assert beam_options.workers_of(args) is Workers.EXTERNAL
    assert beam_options.with_worker_code(args, image=IMAGE, setup_file=SETUP) == args


def test_an_unknown_runner_class_is_left_alone():
    args = ["--runner=acme.runners.CustomRunner"]
    assert beam_options.workers_of(args) is Workers.UNKNOWN
    assert beam_options.with_worker_code(args, image=IMAGE) == args


@pytest.mark.parametrize("args", [
    ["--runner=PortableRunner", "--job_endpoint=embed"],
    ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"],
    ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
     "--environment_config=127.0.0.1:50000"],
    ["--runner=FlinkRunner"],
    ["--runner=FlinkRunner", "--flink_master=flink.example:8081"],
    ["--runner=SparkRunner"],
    ["--runner=SparkRunner", "--spark_master_url=spark://spark.example:7077"],
    ["--runner=PrismRunner"],
])
def test_the_classification_of_portable_runners_matches_the_environment_beam_builds(args):
    """Beam's own runner class, asked for its default environment with these options."""
    options = PipelineOptions(args)
    runner = create_runner(args[0].split("=", 1)[1])
    built = type(runner.default_environment(options))
    expected = {Environment.get_env_cls_from_urn(urn): workers for urn, workers in (
        (python_urns.EMBEDDED_PYTHON_LOOPBACK, Workers.LOCAL),
        (common_urns.environments.DOCKER.urn, Workers.DOCKER),
        (common_urns.environments.EXTERNAL.urn, Workers.EXTERNAL))}[built]
    assert beam_options.workers_of(args) is expected



def test_only_local_workers_without_code_options_are_told_beams_default_image():
    image = DockerEnvironment.default_docker_image()
    local = ["--runner=FnApiRunner", "--direct_num_workers=2"]
    assert beam_options.without_tfx_package_args(local) == [f"--sdk_container_image={image}"]
    for args in (
            [*local, f"--setup_file={SETUP}"], [*local, "--requirements_file=r.txt"],
            [*local, "--sdk_container_image=gcr.io/acme/other:1"],
            ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
             "--environment_config=127.0.0.1:50000"],
            ["--runner=DataflowRunner", f"--sdk_container_image={IMAGE}"],
            ["--runner=PortableRunner", "--job_endpoint=localhost:8099"],
            ["--runner=some.module.CustomRunner"]):
        assert beam_options.without_tfx_package_args(args) == [], args


def test_a_tfx_beam_executor_given_the_pipelines_local_args_packages_nothing(tmp_path, monkeypatch):
    """What the args are for, observed: a TFX Beam executor built with a local runner alone
    packages TFX into the temporary directory; with the pipeline's Beam args it does not."""
    from tfx.components.statistics_gen.executor import Executor
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor

    from pipeline import configs
    from pipeline.pipeline import beam_pipeline_args

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def packages():
        return glob.glob(str(tmp_path / "*" / "build" / "tfx" / "dist" / "tfx_ephemeral-*"))

    Executor(BaseBeamExecutor.Context(beam_pipeline_args=["--runner=FnApiRunner"]))
    assert len(packages()) == 1
    args = beam_pipeline_args(configs.preset("demo"))
    assert args[0] == "--runner=FnApiRunner"
    Executor(BaseBeamExecutor.Context(beam_pipeline_args=args))
    assert len(packages()) == 1
