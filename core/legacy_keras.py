"""TF_USE_LEGACY_KERAS=1, set before TensorFlow is first imported.

TFT's feature layer (inside every exported signature) works only with Keras 2 (`tf_keras`), and
TensorFlow reads this variable once, when it is imported. Each package that may import TensorFlow
(`models`, `components`, `pipeline`, `tools`, `benchmarks`) calls `enable()` in its `__init__`, which
Python runs before any module of the package, so no module needs a header of its own.
"""
import os

VARIABLE = "TF_USE_LEGACY_KERAS"


def enable() -> None:
    os.environ[VARIABLE] = "1"
