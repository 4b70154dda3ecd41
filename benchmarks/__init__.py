"""benchmarks."""
from core import legacy_keras

legacy_keras.enable()
