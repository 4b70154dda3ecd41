"""Dependencies point one way: core -> models -> components -> pipeline -> entry points.

core is TensorFlow-free (face-list format and checks, feature names, metrics); models holds the
TensorFlow code (preprocessing, losses, layers, trainer, export, TFLite conversion); components are
thin TFX components; pipeline builds and runs them; runners, the converter CLI, tools and benchmarks
sit on top. A module may import from its own layer or below, and a component only from its own
package, the shared `components.artifacts`, or lower layers (the package root may re-export).
"""
import os
import subprocess
from typing import List

from pipeline.code_version import imported_modules
from tests.conftest import REPO_ROOT

LAYERS = {"core": 0, "schema": 0, "system": 0, "models": 1, "components": 2, "pipeline": 3,
          "local_runner": 4, "kubeflow_runner": 4, "generate_tfrecord": 4, "tools": 4,
          "benchmarks": 4}
SHARED_COMPONENT_MODULES = {"components", "components.artifacts"}
# Entry points share code through pipeline/ and below, not through each other: a tool never imports
# a runner (it runs one as a command), a runner no tool. The one exception: a benchmark measures a
# tool, so benchmarks may import tools.
ENTRY_POINT_IMPORTS_ALLOWED = {("benchmarks", "tools")}
HEAVY_LIBRARIES = ("tensorflow", "tensorflow_transform", "tfx", "tfx_bsl", "apache_beam", "keras",
                   "tf_keras", "tensorflow_model_analysis")


def module_name(relative_path: str) -> str:
    parts = relative_path[:-len(".py")].split(os.sep)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def violations(source: str, module: str, is_package: bool = False) -> List[str]:
    top = module.split(".")[0]
    if top not in LAYERS:
        return []
    found = []
    for line, imported in imported_modules(source, module, is_package):
        target = imported.split(".")[0]
        if top == "core" and target in HEAVY_LIBRARIES:
            found.append(f"{module}:{line} imports {imported}: core must not import TensorFlow/TFX/Beam")
        if target not in LAYERS:
            continue
        if LAYERS[target] > LAYERS[top]:
            found.append(f"{module}:{line} imports {imported} from a layer above it")
        elif LAYERS[top] == LAYERS[target] == LAYERS["tools"] and target != top and \
                (top, target) not in ENTRY_POINT_IMPORTS_ALLOWED:
            found.append(f"{module}:{line} imports {imported}: entry points do not import each other")
        if top == "components" == target and module != "components":   # the root may re-export
            own = ".".join(module.split(".")[:2])
            other = ".".join(imported.split(".")[:2])
            if other != own and other not in SHARED_COMPONENT_MODULES and imported not in \
                    SHARED_COMPONENT_MODULES and imported != "components":
                found.append(f"{module}:{line} imports {imported}: another component's module")
    return found


def project_sources() -> List[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                             "*.py"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return [p for p in listed.stdout.split() if not p.startswith("tests" + os.sep)
            and os.path.exists(os.path.join(REPO_ROOT, p))]


def test_every_import_points_down():
    found = []
    for relative in project_sources():
        with open(os.path.join(REPO_ROOT, relative)) as f:
            found += violations(f.read(), module_name(relative), relative.endswith("__init__.py"))
    assert not found, "\n".join(found)


def test_the_check_catches_an_upward_import_a_tensorflow_import_in_core_and_a_borrowed_helper():
    assert violations("from components.recall_evaluator.recall import x\n", "models.trainer")
    assert violations("def f():\n    from tools import export_tflite\n",
                      "components.tflite_exporter.component")
    assert violations("import tensorflow as tf\n", "core.recall")
    assert violations("from components.recall_evaluator.component import crop_side\n",
                      "components.tflite_exporter.component")
    assert violations("from ..pipeline import configs\n", "models.trainer") == [
        "models.trainer:1 imports pipeline from a layer above it",
        "models.trainer:1 imports pipeline.configs from a layer above it"]
    # Allowed: the same layer, lower layers, a component's own package, the shared module.
    assert not violations("from core import features\nfrom models import export\n", "models.trainer")
    assert not violations("from components.artifacts import split_files\n"
                          "from components.recall_evaluator import gate\n",
                          "components.recall_evaluator.component")
    assert violations("import local_runner\n", "tools.review_pretrained")
    assert violations("def f():\n    from tools import review\n", "local_runner")
    assert violations("from benchmarks import common\n", "tools.review")
    assert not violations("from pipeline import configs\nfrom tools import face_lists\n",
                          "benchmarks.run")
