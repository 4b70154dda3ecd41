"""Custom TFX components of FFEM-TFX."""
import os

# TFT's feature layer and the Trainer's export need Keras 2 (tf_keras); set before TF is imported.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
