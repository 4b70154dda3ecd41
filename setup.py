"""FFEM-TFX: a TFX pipeline that trains, evaluates and ships face-embedding models.

The packages declared here are what Beam workers and the Kubeflow image install. Versions are pinned by
`constraints.txt` (install with `pip install -c constraints.txt -e '.[dev,kfp]'`, as the Makefile does).
"""
from setuptools import find_packages, setup

setup(
    name="ffem-tfx",
    version="0.1.0",
    description="Face-embedding training pipeline (ArcFace, GroupFace, Center loss) on TFX",
    python_requires=">=3.10,<3.11",
    packages=find_packages(
        include=["core", "core.*", "pipeline", "pipeline.*", "components", "components.*", "models",
                 "models.*",
                 "tools", "tools.*", "benchmarks",
                 "benchmarks.*", "schema"]),
    py_modules=["local_runner", "kubeflow_runner"],
    package_data={"schema": ["*.pbtxt"], "components": ["**/*.html"]},
    install_requires=[
        "tfx==1.16.0",
        "tensorflow>=2.16,<2.22",
        "tf-keras>=2.16",
        "tensorflow-transform>=1.16",
        "tensorflow-data-validation>=1.16",
        "tfx-bsl>=1.16",
        "apache-beam[gcp]>=2.50",
        # tfx-bsl 1.16 imports dill, which recent Beam releases no longer install.
        "dill",
        "numpy>=1.23,<2",
        "pillow>=10",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        "kfp": ["tfx[kfp]==1.16.0", "kfp>=2.5,<3"],
        "dev": ["pytest", "pytest-timeout", "ruff"],
    },
)
