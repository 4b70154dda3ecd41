"""Custom TFX components of FFEM-TFX."""
from core import legacy_keras, stored_import_errors

legacy_keras.enable()
stored_import_errors.release_at_exit()


def __getattr__(name):
    # Custom artifact types by their KFP v2 schema title (`components.<Name>`), which TFX's
    # container entrypoint imports; loaded on first use so importing the package stays light.
    if name == "TFLiteModel":
        from components.tflite_exporter.component import TFLiteModel
        return TFLiteModel
    raise AttributeError(f"module 'components' has no attribute {name!r}")
