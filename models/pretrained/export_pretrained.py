"""The pretrained FaceRecognitionNet as a model of this project: a TFX Model artifact directory
(`Format-Serving/`, the SavedModel of models/export.py with its three signatures) that the
pipeline's RecallEvaluator can evaluate in place of a trained model (`--evaluate-model
pretrained:face_recognition_net`).

The serving signatures run a Transform graph inside, so the export needs one: it is made here by
tf.Transform (in-process Beam) from the pipeline's own `preprocessing_fn` with the crop recipe
"face_api_aligned" at 150 x 150, analyzed over a single generated record. Only the crop goes into
the embedding; the identity vocabulary of that one record is never used by a signature. The
embedding is the network's raw descriptor (the signatures L2-normalize it, as for every model).
"""
from __future__ import annotations

import functools
import io
import os
import tempfile
from typing import Optional

import numpy as np
import tensorflow as tf

from core import features, operating_point
from models.pretrained import alignment, fetch
from models.pretrained import recognition_net as frn

keras = tf.keras

PREFIX = "pretrained:"
NAMES = ("face_recognition_net",)
TRANSFORM_SETTINGS = {"image_size": frn.INPUT_SIZE, alignment.CROP_KEY: alignment.FACE_API_ALIGNED}


def parse(spec: str) -> Optional[str]:
    """"pretrained:<name>" -> name (ValueError naming the known ones); anything else -> None."""
    if not spec.startswith(PREFIX):
        return None
    name = spec[len(PREFIX):]
    if name not in NAMES:
        raise ValueError(f"--evaluate-model {spec!r}: unknown pretrained model {name!r}; known: "
                         + ", ".join(PREFIX + n for n in NAMES))
    return name


def embedding_model(cache: Optional[str] = None) -> keras.Model:
    """image [b, 150, 150, 3] in [0, 1] (the Transform's output) -> {"embedding": the descriptor}."""
    image = keras.Input((frn.INPUT_SIZE, frn.INPUT_SIZE, 3), name="image")
    network = frn.face_recognition_net(cache=cache)
    descriptor = network(keras.layers.Rescaling(255.0, name="to_0_255")(image))
    return keras.Model(image, {"embedding": descriptor}, name="pretrained_face_recognition_net")


def _sample_record():
    """One raw record of the schema's features: a generated JPEG with a box inside it."""
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, size=(96, 96, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return {features.IMAGE_RAW: [buffer.getvalue()], features.LABEL: [0], features.X1: [8],
            features.Y1: [8], features.X2: [88], features.Y2: [88], features.IMAGE_HEIGHT: [96],
            features.IMAGE_WIDTH: [96], features.GROUP: [b"g"], features.PATH: [b"g/0.jpg"],
            features.LANDMARKS: np.zeros(0, np.float32)}


def transform_graph(schema_path: str, out_dir: str) -> str:
    """Writes the Transform graph of `preprocessing_fn` with TRANSFORM_SETTINGS to `out_dir`."""
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from apache_beam.runners.portability.fn_api_runner import fn_runner as fn_api_runner
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils
    from tfx.utils import io_utils

    from models import preprocessing

    schema = io_utils.parse_pbtxt_file(schema_path, schema_pb2.Schema())
    spec = schema_utils.schema_from_feature_spec(schema_utils.schema_as_feature_spec(schema).feature_spec)
    record = {k: np.asarray(v) for k, v in _sample_record().items()
              if k in schema_utils.schema_as_feature_spec(schema).feature_spec}
    fn = functools.partial(preprocessing.preprocessing_fn, custom_config=dict(TRANSFORM_SETTINGS))
    # FnApiRunner, in process: Beam's default runner would first try to download Prism.
    with tempfile.TemporaryDirectory(prefix="tft-") as temp, \
            beam.Pipeline(runner=fn_api_runner.FnApiRunner()) as pipeline:
        with tft_beam.Context(temp_dir=temp, force_tf_compat_v1=False):
            data = pipeline | beam.Create([record])
            transform_fn = ((data, dataset_metadata.DatasetMetadata(spec))
                            | tft_beam.AnalyzeDataset(fn))
            _ = transform_fn | tft_beam.WriteTransformFn(out_dir)
    # The raw schema beside it, where TFX's Transform puts it (the serving signatures parse with it).
    metadata_io.write_metadata(dataset_metadata.DatasetMetadata(spec),
                               os.path.join(out_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
    return out_dir


def export(out_dir: str, schema_path: Optional[str] = None, cache: Optional[str] = None) -> str:
    """Writes the Model artifact directory (`<out_dir>/Format-Serving`) once; returns `out_dir`.

    Reuses a complete earlier export (Format-Serving/saved_model.pb and its operating-point asset
    present; an export from before the asset is remade). Raises
    PretrainedUnavailable, saying how to fetch it, when the face-api package is not cached.
    """
    import tensorflow_transform as tft

    import schema as schema_package
    from models import export as export_lib

    serving = os.path.join(out_dir, "Format-Serving")
    if tf.io.gfile.exists(os.path.join(serving, "saved_model.pb")):
        if tf.io.gfile.exists(os.path.join(serving, operating_point.ASSET)):
            return out_dir
        tf.io.gfile.rmtree(out_dir)     # an export from before the operating point: remade
    fetch.package_dir(cache)
    staging = out_dir.rstrip("/") + ".partial"
    if tf.io.gfile.exists(staging):
        tf.io.gfile.rmtree(staging)
    graph = transform_graph(schema_path or schema_package.SCHEMA_FILE, os.path.join(staging, "transform"))
    model = embedding_model(cache)
    export_lib.export_saved_model(
        model, tft.TFTransformOutput(graph), frn.INPUT_SIZE, os.path.join(staging, "Format-Serving"),
        {"backbone": "face_recognition_net", "pretrained": f"{fetch.PACKAGE}@{fetch.VERSION}",
         "embedding_size": frn.DESCRIPTOR_SIZE, **TRANSFORM_SETTINGS})
    tf.io.gfile.makedirs(os.path.dirname(out_dir.rstrip("/")) or ".")
    tf.io.gfile.rename(staging, out_dir, overwrite=False)
    return out_dir
