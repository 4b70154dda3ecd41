"""Pipeline configuration and the create_pipeline factory."""
from core import legacy_keras

legacy_keras.enable()
