"""Models evaluated instead of trained (`--evaluate-model`): what the pipeline's Importer reads."""
import hashlib
import os
import shutil

from pipeline import configs


def resolve_evaluate_model(config: configs.PipelineConfig, say=print) -> None:
    """Turns `config.evaluate_model` into the URI of a Model artifact directory (Format-Serving/
    holding the SavedModel) for the pipeline's Importer, in place:

    * pretrained:NAME: exported once into <pipeline root>/imported_models/NAME (the network with
      the pipeline's Transform at its crop recipe and size, which this run then uses too);
    * a Model artifact directory: as it is;
    * a SavedModel directory (e.g. a pushed version): copied into <pipeline root>/imported_models/
      (an artifact must not change under the metadata that records it).
    """
    spec = config.evaluate_model
    if "://" in spec:
        return
    from models.pretrained import export_pretrained  # TensorFlow: only when a model is imported

    name = export_pretrained.parse(spec)
    imported = os.path.join(config.pipeline_root, "imported_models")
    if name is not None:
        settings = export_pretrained.TRANSFORM_SETTINGS
        config.crop, config.image_size = settings["crop"], settings["image_size"]
        target = os.path.join(imported, name)
        if not os.path.exists(os.path.join(target, "Format-Serving", "saved_model.pb")):
            say(f"Exporting {spec} (face-api's weights, the {config.crop} crop) to {target} ...")
        config.evaluate_model = export_pretrained.export(target, config.schema_path)
        return
    path = os.path.abspath(spec)
    if os.path.isfile(os.path.join(path, "Format-Serving", "saved_model.pb")):
        config.evaluate_model = path
        return
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(f"--evaluate-model {spec!r}: no SavedModel there (neither "
                                f"saved_model.pb nor Format-Serving/saved_model.pb)")
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        digest = hashlib.sha256(path.encode() + f.read()).hexdigest()[:16]
    target = os.path.join(imported, digest)
    if not os.path.isdir(target):
        shutil.copytree(path, os.path.join(target + ".partial", "Format-Serving"))
        os.replace(target + ".partial", target)
    config.evaluate_model = target
