"""What setup.py declares is enough to import the project. The pipeline's container installs
`.[kfp]` only (Dockerfile), the development venv more (the dev and viewer extras, and whatever
those pull in), so a third-party import that nothing declared shows in no other test: TensorFlow
2.21 stopped installing tensorboard, which the evaluator imports, and only the container would
have failed.

For every third-party module imported anywhere in a package (at the top or inside a function),
some distribution that provides it must be in the closure of the declared requirements on this
stack: setup.py's requirements and extras, then each installed distribution's own requirements
(environment markers and requested extras evaluated), found from the installed metadata."""
import importlib.metadata
import os
import sys

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipeline import code_version
from tests.conftest import REPO_ROOT
from tests.test_layering import LAYERS
from tests.test_setup_scripts import setup_kwargs

# The packages the container runs (the library layers, the runners, the converter CLI), and the
# rest, which the development venv runs.
CONTAINER = sorted(name for name, layer in LAYERS.items()
                   if layer <= LAYERS["pipeline"] or name in {"local_runner", "kubeflow_runner",
                                                              "generate_tfrecord"})
DEVELOPMENT = sorted(set(LAYERS) - set(CONTAINER))


def closure(requirements):
    """Canonical names of the distributions `requirements` pull in on this interpreter."""
    environment = default_environment()
    seen, todo = set(), [(Requirement(r), "") for r in requirements]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker and not requirement.marker.evaluate({**environment, "extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        for wanted in sorted(requirement.extras) or [""]:
            if (name, wanted) in seen:
                continue
            seen.add((name, wanted))
            try:
                own = importlib.metadata.requires(name) or []
            except importlib.metadata.PackageNotFoundError:
                continue
            todo += [(Requirement(r), wanted) for r in own]
    return {name for name, _ in seen}


def third_party_imports(packages):
    """{top-level module: first file importing it} of the absolute imports in `packages`."""
    own = set(LAYERS) | {"tests"}
    found = {}
    for top in packages:
        path = os.path.join(REPO_ROOT, top)
        files = [path + ".py"] if os.path.isfile(path + ".py") else [
            os.path.join(folder, name) for folder, dirs, names in os.walk(path)
            for name in names if name.endswith(".py")]
        for file in files:
            with open(file) as f:
                source = f.read()
            name = os.path.relpath(file, REPO_ROOT)[:-len(".py")].replace(os.sep, ".")
            # The project's one import resolver (relative imports resolve into the project).
            for _, imported in code_version.imported_modules(source, name, file.endswith("__init__.py")):
                module = imported.split(".")[0]
                if module and module not in own and module not in sys.stdlib_module_names and \
                        module != "__future__":
                    found.setdefault(module, os.path.relpath(file, REPO_ROOT))
    return found


def module_providers():
    """{top-level module: [distribution names]} of every installed distribution, from its
    top_level.txt or else the files it installed (Python 3.10's packages_distributions() reads
    top_level.txt only, which e.g. numpy's wheels do not have)."""
    providers = {}
    for dist in importlib.metadata.distributions():
        tops = (dist.read_text("top_level.txt") or "").split()
        if not tops:
            tops = {str(f).split("/")[0].removesuffix(".py") for f in dist.files or []
                    if not str(f).split("/")[0].endswith((".dist-info", ".egg-info", ".data"))}
        for top in tops:
            providers.setdefault(top, []).append(dist.metadata["Name"])
    return providers


def undeclared(packages, requirements):
    providers = module_providers()
    declared = closure(requirements)
    return sorted(f"{module} (imported by {file}; provided by {providers.get(module)})"
                  for module, file in third_party_imports(packages).items()
                  if not declared & {canonicalize_name(d) for d in providers.get(module, [])})


def test_the_containers_packages_import_only_what_setup_py_and_its_kfp_extra_pull_in(monkeypatch):
    kwargs = setup_kwargs(monkeypatch)
    assert undeclared(CONTAINER, kwargs["install_requires"] + kwargs["extras_require"]["kfp"]) == []


def test_the_development_tools_import_only_what_the_bootstrap_installs(monkeypatch):
    kwargs = setup_kwargs(monkeypatch)
    everything = kwargs["install_requires"] + [r for extra in ("kfp", "dev", "viewer")
                                               for r in kwargs["extras_require"][extra]]
    assert undeclared(DEVELOPMENT, everything) == []


def test_a_module_nothing_declares_is_found(monkeypatch):
    """The check can fail: without tensorboard in the requirements, the evaluator's import of it
    is reported on a stack where nothing else pulls it in, and the closure follows requirements
    (tfx reaches apache-beam)."""
    assert "apache-beam" in closure(["tfx"])
    kwargs = setup_kwargs(monkeypatch)
    without = [r for r in kwargs["install_requires"] if not r.startswith("tensorboard")]
    if "tensorboard" in closure(without + kwargs["extras_require"]["kfp"]):
        return      # TensorFlow 2.16 still installs it: nothing to find on this stack
    assert any(line.startswith("tensorboard (imported by components/recall_evaluator/")
               for line in undeclared(CONTAINER, without + kwargs["extras_require"]["kfp"]))
