"""Beam options shared by the pipeline and the converter CLI: the default runner, and how Beam
workers that are not local processes get the project's code."""
from __future__ import annotations

import enum
import re
from typing import List, Optional, Sequence

from apache_beam.options import pipeline_options as beam_pipeline_options


def with_default_runner(beam_args: List[str]) -> List[str]:
    """Beam args with --runner=FnApiRunner added unless they name a runner.

    Beam's DirectRunner first tries to download and start the Prism runner and falls back to
    FnApiRunner only when that fails (e.g. offline): the same pipeline would run on a different
    runner depending on network access. FnApiRunner honours --direct_running_mode and
    --direct_num_workers."""
    if any(arg == "--runner" or arg.startswith("--runner=") for arg in beam_args):
        return list(beam_args)
    return ["--runner=FnApiRunner", *beam_args]


class Workers(str, enum.Enum):
    """Where a Beam pipeline's SDK workers run, as Beam itself decides from the options."""
    LOCAL = "local"           # in this process or processes it forks: they see its sys.path
    DATAFLOW = "dataflow"     # Dataflow VMs, in --sdk_container_image (default: Beam's image)
    DOCKER = "docker"         # a portable runner's Docker containers (--environment_config)
    EXTERNAL = "external"     # EXTERNAL worker pools or PROCESS commands the user started
    UNKNOWN = "unknown"       # a runner class this module does not know


# Runner names as Beam resolves them: lower case, without the "runner" suffix.
_DATAFLOW = {"dataflow", "testdataflow"}
_IN_PROCESS = {"fnapi", "bundlebaseddirect", "interactive"}
# Portable runners whose default environment is LOOPBACK (workers in this process) ...
_LOOPBACK_BY_DEFAULT = {"prism", "direct", "switchingdirect", "testdirect"}
# ... and those whose default is DOCKER, unless a local cluster is named (see _workers_of).
_PORTABLE = {"portable", "flink", "spark"}
_FLINK_LOCAL_MASTERS = ("[local]", "[auto]")        # Beam's FlinkRunner MAGIC_HOST_NAMES
_SPARK_LOCAL_MASTER = re.compile(r"local(\[.*\])?$")  # Beam's SparkRunner LOCAL_MASTER_PATTERN


def _runner_key(runner: Optional[str]) -> str:
    name = (runner or "DirectRunner").rsplit(".", 1)[-1].lower()
    return name[:-len("runner")] if name.endswith("runner") else name


def _environment_type(portable: beam_pipeline_options.PortableOptions) -> Optional[str]:
    """DOCKER / PROCESS / EXTERNAL / LOOPBACK / EMBEDDED, from a name or a beam:env:...:v1 URN."""
    kind = portable.environment_type
    if not kind:
        return None
    if kind.startswith("beam:env:"):
        kind = kind.split(":")[2]
    return kind.upper()


def workers_of(beam_args: Sequence[str]) -> Workers:
    """Where the SDK workers of a pipeline run with `beam_args` are, by Beam's own rules:
    Dataflow always remote; FnApiRunner always in process (it ignores --environment_type);
    portable runners by --environment_type, else their default (PortableRunner: Docker; Flink and
    Spark: in process for a local master, Docker for a cluster; Prism/DirectRunner: in process)."""
    options = beam_pipeline_options.PipelineOptions(list(beam_args))
    runner = _runner_key(options.view_as(beam_pipeline_options.StandardOptions).runner)
    if runner in _DATAFLOW:
        return Workers.DATAFLOW
    if runner in _IN_PROCESS:
        return Workers.LOCAL
    if runner not in _LOOPBACK_BY_DEFAULT | _PORTABLE:
        return Workers.UNKNOWN
    kind = _environment_type(options.view_as(beam_pipeline_options.PortableOptions))
    if kind is None:
        if runner in _LOOPBACK_BY_DEFAULT:
            kind = "LOOPBACK"
        elif runner == "flink":
            master = options.view_as(beam_pipeline_options.FlinkRunnerOptions).flink_master
            kind = "LOOPBACK" if master in _FLINK_LOCAL_MASTERS else "DOCKER"
        elif runner == "spark":
            master = options.view_as(beam_pipeline_options.SparkRunnerOptions).spark_master_url
            kind = "LOOPBACK" if _SPARK_LOCAL_MASTER.match(master or "") else "DOCKER"
        else:
            kind = "DOCKER"
    if kind in ("LOOPBACK", "EMBEDDED"):
        return Workers.LOCAL
    if kind == "DOCKER":
        return Workers.DOCKER
    return Workers.EXTERNAL


_IMAGE_OPTIONS = ("--sdk_container_image", "--worker_harness_container_image")


def _own_code_options(options: beam_pipeline_options.PipelineOptions,
                      workers: Workers) -> List[str]:
    """The options of `options` that name the workers' code: staged packages, or an image (the
    Dataflow options for Dataflow, the environment's for portable Docker workers)."""
    setup = options.view_as(beam_pipeline_options.SetupOptions)
    worker = options.view_as(beam_pipeline_options.WorkerOptions)
    portable = options.view_as(beam_pipeline_options.PortableOptions)
    given = {"--setup_file": setup.setup_file, "--extra_package": setup.extra_packages,
             _IMAGE_OPTIONS[0]: worker.sdk_container_image,
             _IMAGE_OPTIONS[1]: worker.worker_harness_container_image}
    if workers is Workers.DOCKER:
        given.update({"--environment_config": portable.environment_config,
                      "--environment_option=docker_container_image":
                          portable.lookup_environment_option("docker_container_image")})
    return [flag for flag, value in given.items() if value]


def worker_code_args(beam_args: Sequence[str], image: Optional[str] = None,
                     setup_file: Optional[str] = None) -> List[str]:
    """The Beam args to add to `beam_args` so that workers outside this process can import the
    project's code (components.face_example_gen.beam_ingest, core.records, ...); [] when none
    are needed or the user chose already.

    Workers.DATAFLOW: `--sdk_container_image=<image>` (the pipeline's image, built from the
    Dockerfile as a Beam SDK container: Beam's boot entrypoint, the same Beam, the project
    installed), else `--setup_file=<setup_file>` (Beam builds the package and each worker installs
    it with its dependencies at start-up). Workers.DOCKER (portable runners): the image as
    `--environment_config`, else the setup file. A user's own --sdk_container_image,
    --setup_file, --extra_package(s) or Docker --environment_config wins: nothing is added.
    Workers.LOCAL share this process's code; Workers.EXTERNAL pools and PROCESS commands were
    started by the user, with whatever code their environment holds (start them from the image,
    or from an environment with the wheel installed); Workers.UNKNOWN runners are left alone.

    Raises ValueError when remote workers would get no code (no image and no setup file), and
    for --sdk_container_image on a portable runner with Docker workers, which Beam ignores
    there (it takes the image from --environment_config)."""
    workers = workers_of(beam_args)
    if workers not in (Workers.DATAFLOW, Workers.DOCKER):
        return []
    options = beam_pipeline_options.PipelineOptions(list(beam_args))
    own = _own_code_options(options, workers)
    if workers is Workers.DOCKER and own and set(own) <= set(_IMAGE_OPTIONS):
        raise ValueError(
            f"{' and '.join(own)} is ignored by portable runners: their Docker workers take the "
            "image from --environment_config=IMAGE")
    if own:
        return []
    if image:
        flag = "--sdk_container_image" if workers is Workers.DATAFLOW else "--environment_config"
        return [f"{flag}={image}"]
    if setup_file:
        return [f"--setup_file={setup_file}"]
    raise ValueError(
        "the Beam workers of this runner are not local processes and would not have the "
        "project's code: pass --sdk_container_image=IMAGE (an image built from the Dockerfile) "
        "or --setup_file=PATH/setup.py in the Beam args")


def without_tfx_package_args(beam_args: Sequence[str]) -> List[str]:
    """The Beam args that stop TFX from packaging its own installation for workers that install
    no package: [`--sdk_container_image=<Beam's default image>`] for Workers.LOCAL without a code
    option of their own, else [].

    Why: a TFX Beam executor given Beam args that name none of --extra_package(s), --setup_file,
    --requirements_file or an SDK image copies the installed `tfx` package into a temporary
    directory, builds an sdist of it (`tfx_ephemeral`) and adds it as --extra_package
    (tfx.utils.dependency_utils): about 4 s and 50 MB left in the temporary directory for every
    Beam step of every run. Local workers (this process, or processes it starts) share this
    process's installation and stage nothing, so that work is wasted. Naming Beam's default SDK
    image, the one Beam would use anyway, changes nothing for them: only Docker and Dataflow
    workers read it, and those are never Workers.LOCAL."""
    if workers_of(beam_args) is not Workers.LOCAL:
        return []
    options = beam_pipeline_options.PipelineOptions(list(beam_args))
    if (_own_code_options(options, Workers.LOCAL) or
            options.view_as(beam_pipeline_options.SetupOptions).requirements_file):
        return []
    from apache_beam.transforms import environments

    return [f"--sdk_container_image={environments.DockerEnvironment.default_docker_image()}"]


def with_worker_code(beam_args: Sequence[str], image: Optional[str] = None,
                     setup_file: Optional[str] = None) -> List[str]:
    """`beam_args` followed by `worker_code_args(beam_args, image, setup_file)`: the one place
    the runners (local, Kubeflow) and the converter CLI decide how workers get the code."""
    return [*beam_args, *worker_code_args(beam_args, image, setup_file)]
