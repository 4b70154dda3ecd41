"""TFLiteExporter: the pushed model as TFLite at the chosen quantization levels (optional step).

Runs after the Pusher when `PipelineConfig.tflite_levels` is set. When the Pusher pushed nothing
(the model was not blessed) it exports nothing and says so. Otherwise it converts the pushed
SavedModel with models/tflite.py (the same code as tools/export_tflite.py), calibrating on the
Transform's eval-split crops and checking each level's embeddings against the SavedModel's on other
eval crops; a level whose mean cosine is under its bound, or that does not carry the pushed model's
operating point (which must be there: models/tflite.py), fails the step (the report is written
first). Output: a `components.TFLiteModel` artifact holding model_q{level}.tflite and tflite_report.json.
"""

import json
import os

from absl import logging
from tfx import types
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

EVAL_SPLIT = "eval"


class TFLiteModel(types.Artifact):
    """A directory of TFLite models (one per quantization level) and their check report.

    The type name is also an import path: KFP v2 compiles a custom artifact type to its schema
    title, which must read `<module>.<Name>` (one dot, a short lower-case module), and TFX's
    container entrypoint imports the class by that title. `components/__init__.py` serves
    `components.TFLiteModel` lazily.
    """
    TYPE_NAME = "components.TFLiteModel"


def eval_crops(transformed_examples: types.Artifact, limit: int):
    """Up to `limit` transformed eval crops, float32 [n, s, s, 3] in [0, 1] (the stored uint8
    crops decoded by preprocessing.decode_crops, the values the SavedModel's serving signatures
    embed), in file order."""
    import tensorflow as tf

    from components.artifacts import crop_side, split_files
    from models import preprocessing

    files = split_files(transformed_examples, EVAL_SPLIT)
    side = crop_side(files)
    records = tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit).batch(limit)
    spec = {preprocessing.IMAGE: tf.io.FixedLenFeature([], tf.string)}
    stored = tf.io.parse_example(next(iter(records)), spec)[preprocessing.IMAGE]
    return preprocessing.decode_crops(stored, side).numpy()


@component
def TFLiteExporter(
        pushed_model: InputArtifact[standard_artifacts.PushedModel],
        transformed_examples: InputArtifact[standard_artifacts.Examples],
        tflite_model: OutputArtifact[TFLiteModel],
        levels: Parameter[str] = "[0, 1, 2]",
        calibration_images: Parameter[int] = 200,
        check_images: Parameter[int] = 100,
        code_version: Parameter[str] = "") -> None:
    """`code_version` (a fingerprint of this code) only keys TFX's cache."""
    if pushed_model.get_int_custom_property("pushed") != 1:
        logging.info("TFLiteExporter: nothing was pushed, nothing to export")
        tflite_model.set_int_custom_property("exported", 0)
        return
    from models import tflite

    source = pushed_model.get_string_custom_property("pushed_destination")
    crops = eval_crops(transformed_examples, calibration_images + check_images)
    keys = list(range(len(crops)))
    calibration, check, disjoint = tflite.split_calibration_and_check(
        keys, calibration_images, check_images)
    report = tflite.export_tflite(
        source, json.loads(levels), tflite_model.uri, crops[calibration], crops[check],
        extra_report={"calibration": "Transform eval-split crops",
                      "check_disjoint_from_calibration": disjoint}, pushed=True)
    tflite_model.set_int_custom_property("exported", 1)
    tflite_model.set_string_custom_property("source_model", source)
    tflite_model.set_string_custom_property("cosine_mean", json.dumps(
        {level: entry["cosine_mean"] for level, entry in report["levels"].items()}))
    failed = [f"level {level}: mean cosine {entry['cosine_mean']:.5f} (bound "
              f"{entry['min_mean_cosine']}), threshold {entry['threshold']} (SavedModel's "
              f"{report['saved_model_threshold']})" for level, entry in report["levels"].items()
              if not entry["passed"]]
    if report["operating_point_error"]:
        failed.append(f"no operating point: {report['operating_point_error']}")
    if failed:
        raise RuntimeError(f"TFLite export of {source} is not faithful to the SavedModel: "
                           f"{'; '.join(failed)}. Report: "
                           f"{os.path.join(tflite_model.uri, tflite.REPORT_FILE)}")
    logging.info("TFLiteExporter: %s -> %s (%s)", source, tflite_model.uri,
                 ", ".join(f"level {level} cosine {entry['cosine_mean']:.5f}"
                           for level, entry in report["levels"].items()))
