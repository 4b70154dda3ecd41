"""Models evaluated instead of trained (`--evaluate-model`): what the pipeline's Importer reads."""
import hashlib
import os
import shutil
from typing import Callable

from pipeline import configs


def resolve_evaluate_model(config: configs.PipelineConfig, say=print) -> None:
    """`plan_import`, then the import itself."""
    plan_import(config)(say)


def plan_import(config: configs.PipelineConfig) -> Callable[[Callable[[str], None]], None]:
    """Turns `config.evaluate_model` into the URI of a Model artifact directory (Format-Serving/
    holding the SavedModel) for the pipeline's Importer, in place, and returns what writes that
    directory (called with a `say` for the console), so that the pipeline (and with it every
    setting) is built and checked before anything is written:

    * pretrained:NAME: exported once into <pipeline root>/imported_models/NAME (the network with
      the pipeline's Transform at its crop recipe and size, which this run then uses too);
    * a Model artifact directory: as it is;
    * a SavedModel directory (e.g. a pushed version): copied into <pipeline root>/imported_models/
      (an artifact must not change under the metadata that records it).
    """
    spec = config.evaluate_model
    if "://" in spec:
        return _nothing
    imported = os.path.join(config.pipeline_root, "imported_models")
    from models.pretrained import export_pretrained  # TensorFlow: only when a model is imported

    name = export_pretrained.parse(spec)
    if name is not None:
        settings = export_pretrained.TRANSFORM_SETTINGS
        config.crop, config.image_size = settings["crop"], settings["image_size"]
        target = config.evaluate_model = os.path.join(imported, name)
        schema_path, crop = config.schema_path, config.crop

        def export(say):
            if not os.path.exists(os.path.join(target, "Format-Serving", "saved_model.pb")):
                say(f"Exporting {spec} (face-api's weights, the {crop} crop) to {target} ...")
            export_pretrained.export(target, schema_path)
        return export
    path = os.path.abspath(spec)
    if os.path.isfile(os.path.join(path, "Format-Serving", "saved_model.pb")):
        config.evaluate_model = path
        return _nothing
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(f"--evaluate-model {spec!r}: no SavedModel there (neither "
                                f"saved_model.pb nor Format-Serving/saved_model.pb)")
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        digest = hashlib.sha256(path.encode() + f.read()).hexdigest()[:16]
    target = config.evaluate_model = os.path.join(imported, digest)

    def copy(say):
        if not os.path.isdir(target):
            shutil.copytree(path, os.path.join(target + ".partial", "Format-Serving"))
            os.replace(target + ".partial", target)
    return copy


def _nothing(say) -> None:
    """Nothing to write: the Importer reads the directory as it is."""
