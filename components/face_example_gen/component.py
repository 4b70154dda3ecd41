"""FaceExampleGen: face lists (JSON / JSON Lines) + an image root -> validated tf.Examples.

Built on TFX's file-based ExampleGen machinery: its spec (spec.py), its driver with the image files
in the cache key (driver.py) and BaseExampleGenExecutor with WriteSplit (executor.py: the records,
the quarantine and the checks, and the output layout).
"""
from __future__ import annotations

from typing import Dict, Optional

from tfx import types as tfx_types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts

from components.face_example_gen.driver import FaceExampleGenDriver
from components.face_example_gen.executor import Executor
from components.face_example_gen.spec import FaceExampleGenSpec
from core import features
from core.records import IngestOptions

DEFAULT_LIST_FILES = {"train": "train.json", "eval": "test.json"}


class FaceExampleGen(FileBasedExampleGen):
    """Face lists + image root -> Examples with image_raw, label, box, image size, group, path.

    Args:
      input_base: directory (or URI) holding the list files.
      image_root: directory (or URI) the list keys are relative to.
      list_files: split name -> list file pattern under input_base. Default train <- train.json,
        eval <- test.json (the original's files: eval identities are unseen).
      identity_split: instead of one list per split, one list (`list_files` must name a single
        split) split by a hash of the label, e.g. {"train": 9, "eval": 1}: an identity's images
        all land in the same split, so eval identities are unseen.
      max_bad_fraction: the run fails when a split quarantines more than this fraction.
      max_image_pixels / max_image_bytes / box_tolerance: see records.IngestOptions.
      list_format: "json" or "jsonl"; default by file extension (.jsonl/.ndjson are JSON Lines).
      fingerprint_images: include the image files in the cache fingerprint (default on).
      offset_labels: a split's pattern matches several lists (data sets merged, each labelled
        from 0): shift each list's labels past the previous ones'; the ranges used are recorded
        in the summary (`label_ranges`).
      code_version: a fingerprint of the ingest code, only for TFX's cache key.
    """

    SPEC_CLASS = FaceExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
    DRIVER_CLASS = FaceExampleGenDriver

    def __init__(self, input_base: str, image_root: str,
                 list_files: Optional[Dict[str, str]] = None,
                 identity_split: Optional[Dict[str, int]] = None,
                 max_bad_fraction: float = 0.01,
                 max_image_pixels: int = IngestOptions.max_image_pixels,
                 max_image_bytes: int = IngestOptions.max_image_bytes,
                 box_tolerance: float = IngestOptions.box_tolerance,
                 list_format: Optional[str] = None,
                 fingerprint_images: bool = True,
                 offset_labels: bool = False,
                 code_version: Optional[str] = None):
        list_files = dict(list_files or DEFAULT_LIST_FILES)
        IngestOptions(max_image_pixels, max_image_bytes, box_tolerance)   # validates early
        input_config = example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name=name, pattern=pattern)
            for name, pattern in list_files.items()])
        if identity_split:
            if len(list_files) != 1:
                raise ValueError("identity_split needs exactly one list file (list_files with one "
                                 f"entry), got {list_files}")
            output_config = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
                splits=[example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=buckets)
                        for name, buckets in identity_split.items()],
                partition_feature_name=features.LABEL))
        else:
            output_config = example_gen_utils.make_default_output_config(input_config)
        spec = FaceExampleGenSpec(
            input_base=input_base,
            input_config=input_config,
            output_config=output_config,
            custom_config=None,
            range_config=None,
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            examples=tfx_types.Channel(type=standard_artifacts.Examples),
            image_root=image_root,
            max_bad_fraction=float(max_bad_fraction),
            max_image_pixels=int(max_image_pixels),
            max_image_bytes=int(max_image_bytes),
            box_tolerance=float(box_tolerance),
            list_format=list_format,
            fingerprint_images=int(bool(fingerprint_images)),
            offset_labels=int(bool(offset_labels)),
            code_version=code_version,
        )
        base_beam_component.BaseBeamComponent.__init__(self, spec=spec)
