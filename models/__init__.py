"""Preprocessing, layers, losses, backbones and the Trainer run_fn."""
from core import legacy_keras, stored_import_errors

legacy_keras.enable()
stored_import_errors.release_at_exit()
