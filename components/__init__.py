"""Custom TFX components of FFEM-TFX."""
from core import legacy_keras

legacy_keras.enable()
