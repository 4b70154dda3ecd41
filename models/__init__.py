"""Preprocessing, layers, losses, backbones and the Trainer run_fn."""
from core import legacy_keras

legacy_keras.enable()
