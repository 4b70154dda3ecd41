"""FFEM-TFX: a TFX pipeline that trains, evaluates and ships face-embedding models.

The packages declared here are what Beam workers and the Kubeflow image install. Two stacks, chosen by
the interpreter (environment markers): TFX 1.16 on Python 3.10, pinned by `constraints.txt`, and TFX
1.21 on Python 3.11, pinned by `constraints-1.21.txt` (install with
`pip install -c constraints-1.21.txt -e '.[dev,kfp,viewer]'`, as scripts/bootstrap.sh does). Python 3.12+ is
refused: TFX 1.21's kfp extra is not offered there and the suite is verified on 3.11 only.

Beam workers that are not local processes import the project's code from this package: Dataflow
workers from the pipeline image (which installs it), or from the package Beam builds with
`--setup_file=setup.py`. The wheel therefore holds every library package with its data files, and
nothing from tests/ (tests/test_worker_package.py builds it, installs it into an environment
without the checkout and runs the Beam steps on workers started from there).
"""
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
# The library layers: what the Kubeflow image and Beam workers need.
LIBRARY = ["core", "system", "models", "components", "pipeline", "schema"]
# The entry points (tools, benchmarks, the runners): installed from a repository checkout, left out
# of the container image, which runs component executors only.
ENTRY_PACKAGES = ["tools", "benchmarks"]
ENTRY_MODULES = ["local_runner", "kubeflow_runner"]
# The two pinned stacks (docs/stacks.md), told apart by the interpreter.
TFX_116, PY310 = "1.16.0", "python_version < '3.11'"
TFX_121, PY311 = "1.21.0", "python_version >= '3.11'"

setup(
    name="ffem-tfx",
    version="0.1.0",
    description="Face-embedding training pipeline (ArcFace, GroupFace, Center loss) on TFX",
    python_requires=">=3.10,<3.12",
    packages=find_packages(include=[name for package in LIBRARY + ENTRY_PACKAGES
                                    for name in (package, package + ".*")]),
    py_modules=[m for m in ENTRY_MODULES if os.path.exists(os.path.join(HERE, m + ".py"))],
    # Data the library reads or ships beside its modules: the schema, the pretrained networks'
    # licence.
    package_data={"schema": ["*.pbtxt"], "models": ["pretrained/*.txt"]},
    install_requires=[
        f"tfx=={TFX_116}; {PY310}",
        f"tfx=={TFX_121}; {PY311}",
        "tensorflow>=2.16,<2.22",
        "tf-keras>=2.16",
        "tensorflow-transform>=1.16",
        "tensorflow-data-validation>=1.16",
        "tfx-bsl>=1.16",
        "apache-beam[gcp]>=2.50",
        # tfx-bsl imports dill, which recent Beam releases no longer install.
        "dill",
        f"numpy>=1.23,<2; {PY310}",
        f"numpy>=1.23,<3; {PY311}",
        "scipy",          # sparse pair counts of the 1:1 bootstrap (core/intervals.py)
        # The compiled merge of the evaluation's blocked top-k pass (core/block_top_k.py); 0.60 is
        # the first release for numpy 2.
        "numba>=0.60,<1",
        "pillow>=10",
        "tqdm",
        "matplotlib",
        # The evaluator's Fairness Indicators summary (components/recall_evaluator/tfma_results.py)
        # and tools.embedding_projector; TensorFlow 2.21 no longer installs it.
        "tensorboard>=2.16,<2.22",
    ],
    extras_require={
        "kfp": [f"tfx[kfp]=={TFX_116}; {PY310}", f"tfx[kfp]=={TFX_121}; {PY311}", "kfp>=2.5,<3"],
        # model-card-toolkit 2.0.0 is not listed: its pins (TFMA < 0.42, absl < 1.1) cannot be
        # resolved beside TFX 1.16. tests/test_model_card.py fetches that pinned wheel without its
        # dependencies and validates model_card.json against the schema file inside it.
        "dev": ["pytest", "pytest-timeout", "ruff", "hypothesis", "jsonschema"],
        # Per-group review in TensorBoard (Fairness Indicators); not needed in the containers. The
        # plugin's 0.0.x releases import TFMA modules that TFMA 0.52 no longer has.
        "viewer": ["tensorboard-plugin-fairness-indicators>=0.47"],
    },
)
