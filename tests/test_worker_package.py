"""The project's Beam code runs on workers that have no checkout, as Dataflow workers have none.

setup.py's wheel is built from a clean copy of the checkout and installed into a fresh virtual
environment (tests/worker_env.py: `import core` fails there before the install); a Beam worker
pool is started from that environment in a directory outside the checkout, and the pipeline's
Beam steps run on its workers through the portable runner: FaceExampleGen's ingest and the
evaluator's embedding, each compared with the same run in this process. The workers report their
process, parent (the pool), interpreter, sys.path and where they imported the project's modules
from. A wheel without one package fails on the workers with ModuleNotFoundError. The package
Beam builds for --setup_file (the alternative to the image) passes the same check."""
import json
import os
import zipfile

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf

from components.recall_evaluator import beam_embed
from core import features
from pipeline import worker_check
from tests import worker_env
from tests.conftest import REPO_ROOT
from tests.test_layering import LAYERS

# Nothing here may hang on a worker that never answers: each test has its own limit.
pytestmark = pytest.mark.timeout(600)
# The library layers (what the components' executors and Beam steps may import), by the layering
# rule, not by setup.py's own list.
LIBRARY = sorted(name for name, layer in LAYERS.items() if layer <= LAYERS["pipeline"])


def library_files():
    """Every file of the library packages in the checkout (relative paths), caches aside."""
    found = []
    for top in LIBRARY:
        for folder, dirs, files in os.walk(os.path.join(REPO_ROOT, top)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            found += [os.path.relpath(os.path.join(folder, name), REPO_ROOT) for name in files
                      if not name.endswith(".pyc")]
    return sorted(found)


def module_name(path):
    parts = path[:-len(".py")].split(os.sep)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def under(path, directory):
    return os.path.realpath(path).startswith(os.path.realpath(directory) + os.sep)


def project_sources_on(sys_path, cwd, environment):
    """The sys.path entries, other than `environment`'s site-packages, that hold the project's
    packages (the checkout, a PYTHONPATH naming it): none may, on a worker without the checkout.
    The borrowed third-party site-packages directory holds none of them."""
    entries = [os.path.realpath(p or cwd) for p in sys_path]
    return [p for p in entries if p != os.path.realpath(environment.site_packages) and
            any(os.path.exists(os.path.join(p, top, "__init__.py")) for top in LIBRARY)]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return worker_env.build_wheel(str(tmp_path_factory.mktemp("wheel")))


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """The workers' working directory: not the checkout, not under it."""
    path = str(tmp_path_factory.mktemp("outside"))
    assert not under(path, REPO_ROOT)
    return path


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, wheel):
    return worker_env.fresh_environment(str(tmp_path_factory.mktemp("env") / "fresh"), wheel)


@pytest.fixture(scope="module")
def pool(fresh, outside):
    with worker_env.worker_pool(fresh, outside) as started:
        yield started


def test_the_wheel_holds_every_library_module_and_its_data_and_nothing_from_tests(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = library_files()
    assert any(path.endswith(".pbtxt") for path in expected)       # the schema is among them
    missing = [path for path in expected if path.replace(os.sep, "/") not in names]
    assert not missing, f"not in the wheel: {missing}"
    tops = {name.split("/")[0] for name in names}
    assert "tests" not in tops and "conftest.py" not in tops
    assert not [name for name in names if os.path.basename(name).startswith("test_")]


def test_every_library_module_imports_from_the_fresh_environment_not_the_checkout(fresh, outside):
    modules = [module_name(path) for path in library_files() if path.endswith(".py")]
    result = fresh.run(
        "import importlib, json, sys\n"
        f"files = {{m: importlib.import_module(m).__file__ for m in {modules!r}}}\n"
        "print(json.dumps({'files': files, 'sys_path': sys.path}))", cwd=outside)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(seen["files"]) == set(modules)
    assert all(under(path, fresh.site_packages) for path in seen["files"].values()), seen["files"]
    assert project_sources_on(seen["sys_path"], outside, fresh) == []


def check_workers_are_the_pool(probes, pool, fresh, outside):
    assert probes
    for probe in probes:
        assert probe.pid != os.getpid() and probe.ppid == pool.pid
        assert under(probe.executable, fresh.root) or probe.executable == fresh.python
        assert set(probe.modules) == set(worker_check.WORKER_MODULES), probe.import_errors
        assert all(under(path, fresh.site_packages) for path in probe.modules.values()), \
            probe.modules
        assert project_sources_on(probe.sys_path, outside, fresh) == []


def test_face_example_gen_ingest_on_workers_without_the_checkout_equals_the_in_process_run(
        pool, fresh, outside):
    sample = worker_check.write_sample(os.path.join(outside, "ingest-sample"))
    local = worker_check.run_ingest(sample, os.path.join(outside, "ingest-local"),
                                    worker_check.IN_PROCESS)
    remote = worker_check.run_ingest(sample, os.path.join(outside, "ingest-pool"),
                                     pool.beam_args())
    check_workers_are_the_pool(remote.probes, pool, fresh, outside)
    assert remote.examples == local.examples
    assert remote.quarantine == local.quarantine
    assert remote.summary == local.summary
    # And the runs are what the sample plants: every good record an Example, each bad one
    # quarantined for its reason.
    by_path = {}
    for record in remote.examples:
        feature = tf.train.Example.FromString(record).features.feature
        by_path[feature[features.PATH].bytes_list.value[0].decode()] = \
            feature[features.LABEL].int64_list.value[0]
    assert by_path == {key: value["label"] for key, value in sample.good.items()}
    assert {line["key"]: line["reason"] for line in remote.quarantine} == sample.bad
    assert worker_check.differences(local, remote) == []


def test_the_evaluators_embedding_on_workers_without_the_checkout_equals_the_in_process_run(
        pool, outside):
    from tests.test_beam_embed import BoxMeanModel, example, image, reference_embedding, write_files

    model_dir = os.path.join(outside, "embed-model")
    module = BoxMeanModel()
    tf.saved_model.save(module, model_dir, signatures={"serving_default": module.serve})
    rows = [(f"{'ab'[i % 2]}/id{i // 2}/{i}.png", i // 2, "ab"[i % 2], image(100 + i),
             (2 + i, 3, 40, 30 + i % 5)) for i in range(10)]
    files = write_files(os.path.join(outside, "embed-eval"), [example(*row) for row in rows])

    def embed(argv, name):
        return beam_embed.embed_split({"candidate": model_dir}, files, 4,
                                      lambda: beam.Pipeline(argv=argv),
                                      os.path.join(outside, name))["candidate"]

    local = embed(worker_check.IN_PROCESS, "embed-local")
    remote = embed(pool.beam_args(), "embed-pool")
    for key in ("paths", "labels", "groups"):
        assert remote[key].tolist() == local[key].tolist(), key
    np.testing.assert_allclose(remote["embeddings"], local["embeddings"], atol=1e-6, rtol=0)
    by_path = {row[0]: row for row in rows}
    np.testing.assert_allclose(
        remote["embeddings"], [reference_embedding(by_path[p][3], by_path[p][4])
                               for p in remote["paths"]], atol=1e-5)


@pytest.mark.parametrize("dropped, expected", [
    # The ingest's own modules: the run on the workers fails, with the worker's error.
    ("core", "ModuleNotFoundError: No module named 'core'"),
    # Only the evaluator's step needs this one: the ingest passes, the workers' probe does not.
    (os.path.join("components", "recall_evaluator", "beam_embed.py"),
     "cannot import components.recall_evaluator.beam_embed: ModuleNotFoundError"),
])
def test_a_wheel_without_one_module_fails_the_check_on_the_workers(tmp_path, dropped, expected):
    """The check against workers whose wheel lacks a package or module (as a setup.py that
    forgot it would build): it fails, and says why."""
    broken = worker_env.build_wheel(str(tmp_path / "wheel"), drop=[dropped])
    with zipfile.ZipFile(broken) as archive:
        assert not [name for name in archive.namelist()
                    if name.startswith(dropped.replace(os.sep, "/"))]
    environment = worker_env.fresh_environment(str(tmp_path / "env"), broken)
    work = tmp_path / "outside"
    work.mkdir()
    with worker_env.worker_pool(environment, str(work)) as broken_pool:
        report = worker_check.check_workers(broken_pool.beam_args(), str(work / "check"))
    assert not report.ok
    assert expected in (report.error or "\n".join(report.differences))
    assert expected.split(": ")[-1] in worker_check.format_report(report)


def test_the_package_beam_stages_for_setup_file_runs_on_workers_without_the_checkout(tmp_path):
    """The alternative to the image: Beam builds the package from setup.py (--setup_file) and
    each worker's boot program pip-installs it. That package, built by Beam's own stager from a
    clean copy, holds every library file and no test, and once installed into a fresh
    environment its workers pass the ingest check."""
    import tarfile

    from apache_beam.runners.portability.stager import Stager

    source = worker_env.clean_copy(str(tmp_path / "copy"))
    (tmp_path / "staged").mkdir()
    sdist = Stager._build_setup_package(os.path.join(source, "setup.py"),
                                        str(tmp_path / "staged"))
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert not [path for path in library_files() if path.replace(os.sep, "/") not in names]
    assert not [name for name in names if name.startswith("tests/") or
                os.path.basename(name).startswith("test_")]
    environment = worker_env.fresh_environment(str(tmp_path / "env"), sdist)
    work = tmp_path / "outside"
    work.mkdir()
    with worker_env.worker_pool(environment, str(work)) as staged_pool:
        report = worker_check.check_workers(staged_pool.beam_args(), str(work / "check"))
    assert report.ok, worker_check.format_report(report)
    for probe in report.workers:
        assert probe.ppid == staged_pool.pid
        assert all(under(path, environment.site_packages) for path in probe.modules.values())


def test_the_check_refuses_to_pass_steps_that_ran_in_this_process(tmp_path):
    report = worker_check.check_workers(worker_check.IN_PROCESS, str(tmp_path))
    assert not report.ok and "proves nothing" in worker_check.format_report(report)


def test_the_check_command_passes_against_workers_with_the_package(pool, outside, capsys):
    from tools import check_beam_workers

    status = check_beam_workers.main(["--worker-pool", pool.address,
                                      "--work-dir", os.path.join(outside, "command")])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "OK: the workers' Examples, quarantine and summary equal this process's" in out
    assert f"(parent {pool.pid})" in out


@pytest.mark.pipeline
def test_face_example_gen_from_the_compiled_spec_runs_its_beam_steps_on_the_pools_workers(
        pool, small_sample, tmp_path):
    """FaceExampleGen as Kubeflow runs it (TFX's container entrypoint, the compiled spec's Beam
    args), with the spec compiled for the pool's workers: its Beam pipeline runs there."""
    from tests import kfp_harness

    spec = kfp_harness.compile_spec(tmp_path / "spec", "--beam-args", *pool.beam_args())
    container = spec["deploymentSpec"]["executors"]["FaceExampleGen_executor"]["container"]
    assert container["args"][-len(pool.beam_args()):] == pool.beam_args()   # passed unchanged
    started = pool.workers_started()
    outputs = kfp_harness.run_component(
        spec, "FaceExampleGen", kfp_harness.VertexStore(), str(tmp_path / "work"), {},
        {"examples": str(tmp_path / "examples")},
        {"input_base": {"stringValue": small_sample},
         "image_root": {"stringValue": os.path.join(small_sample, "images")}})
    assert pool.workers_started() > started
    summary = json.loads(outputs["examples"]["metadata"]["ingest_summary"])
    for split, name in (("train", "train.json"), ("eval", "test.json")):
        with open(os.path.join(small_sample, name)) as f:
            assert summary[split]["valid"] == len(json.load(f))
        assert tf.io.gfile.glob(os.path.join(str(tmp_path / "examples"), f"Split-{split}", "*.gz"))


def test_the_clean_copy_leaves_out_every_stacks_venv_and_local_state(tmp_path, monkeypatch):
    """A venv of either stack (.venv, .venv-1.21: gigabytes each) or local state in the checkout
    never reaches the copy the wheel is built from."""
    checkout = tmp_path / "checkout"
    for path in ("core/a.py", ".venv/lib/x.py", ".venv-1.21/lib/x.py", ".cache/c", "runs/r",
                 "data/d", "setup.py"):
        (checkout / path).parent.mkdir(parents=True, exist_ok=True)
        (checkout / path).write_text("")
    monkeypatch.setattr(worker_env, "REPO_ROOT", str(checkout))
    source = worker_env.clean_copy(str(tmp_path / "work"))
    assert sorted(os.listdir(source)) == ["core", "setup.py"]
