"""FaceExampleGen: face lists (JSON / JSON Lines) + an image root -> validated tf.Examples.

Built on TFX's file-based ExampleGen machinery (spec, driver, BaseExampleGenExecutor, WriteSplit);
the records themselves go through `beam_ingest.IngestFaceRecords`, the transform the
`generate_tfrecord` CLI runs too.

Output artifact layout (besides the usual `Split-<name>/` data):
    ingest/<input split>.quarantine.jsonl   every rejected record: {"key", "reason", "detail"}
    ingest/<input split>.summary.json       counts per reason, label range, groups
and custom properties `ingest_summary` (JSON of all splits), `num_valid`, `num_quarantined`.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, List, Optional

import apache_beam as beam
from absl import logging
from apache_beam.io.filesystems import FileSystems
from tfx import types as tfx_types
from tfx.components.example_gen import driver as example_gen_driver
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import proto_utils

from components.face_example_gen import beam_ingest
from core import features
from core.records import IngestOptions

IMAGE_ROOT = "image_root"
MAX_BAD_FRACTION = "max_bad_fraction"
MAX_IMAGE_PIXELS = "max_image_pixels"
MAX_IMAGE_BYTES = "max_image_bytes"
BOX_TOLERANCE = "box_tolerance"
LIST_FORMAT = "list_format"
FINGERPRINT_IMAGES = "fingerprint_images"
OFFSET_LABELS = "offset_labels"
CODE_VERSION = "code_version"
_OUTPUT_URI = "_face_examples_uri"   # passed from Do() to the per-split PTransform

DEFAULT_LIST_FILES = {"train": "train.json", "eval": "test.json"}


class FaceExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        IMAGE_ROOT: ExecutionParameter(type=str),
        MAX_BAD_FRACTION: ExecutionParameter(type=float),
        MAX_IMAGE_PIXELS: ExecutionParameter(type=int),
        MAX_IMAGE_BYTES: ExecutionParameter(type=int),
        BOX_TOLERANCE: ExecutionParameter(type=float),
        LIST_FORMAT: ExecutionParameter(type=str, optional=True),
        FINGERPRINT_IMAGES: ExecutionParameter(type=int),
        OFFSET_LABELS: ExecutionParameter(type=int, optional=True),
        # Hash of the ingest code (pipeline/code_version.py): changed code is a cache miss.
        CODE_VERSION: ExecutionParameter(type=str, optional=True),
    }


def image_tree_fingerprint(image_root: str) -> str:
    """Path, size and modification time of every file under the image root, hashed.

    ExampleGen's own fingerprint covers the list files only; images are referenced from inside
    them, so a replaced image would otherwise silently reuse a stale cached artifact.
    """
    pattern = image_root.rstrip("/") + "/**"
    metadata = FileSystems.match([pattern])[0].metadata_list
    digest = hashlib.sha256()
    prefix = len(image_root.rstrip("/")) + 1
    for m in sorted(metadata, key=lambda m: m.path):
        digest.update(f"{m.path[prefix:]}\t{m.size_in_bytes}\t{m.last_updated_in_seconds!r}\n"
                      .encode("utf-8", "surrogateescape"))
    return f"image_root:{image_root},files:{len(metadata)},sha256:{digest.hexdigest()}"


class FaceExampleGenDriver(example_gen_driver.FileBasedDriver):
    """The file-based driver, with the images under the root added to the input fingerprint."""

    def resolve_exec_properties(self, exec_properties, pipeline_info, component_info):
        exec_properties = super().resolve_exec_properties(exec_properties, pipeline_info,
                                                          component_info)
        if exec_properties.get(FINGERPRINT_IMAGES, 1):
            fingerprint = image_tree_fingerprint(exec_properties[IMAGE_ROOT])
            logging.info("FaceExampleGen image fingerprint: %s", fingerprint)
            key = example_gen_utils.FINGERPRINT_PROPERTY_NAME
            exec_properties[key] = f"{exec_properties.get(key) or ''}\n{fingerprint}"
        return exec_properties


def ingest_paths(examples_uri: str, split: str) -> Dict[str, str]:
    base = os.path.join(examples_uri, "ingest")
    return {"quarantine": os.path.join(base, f"{split}.quarantine.jsonl"),
            "summary": os.path.join(base, f"{split}.summary.json")}


def options_from(exec_properties: Dict[str, Any]) -> IngestOptions:
    return IngestOptions(max_image_pixels=int(exec_properties[MAX_IMAGE_PIXELS]),
                         max_image_bytes=int(exec_properties[MAX_IMAGE_BYTES]),
                         box_tolerance=float(exec_properties[BOX_TOLERANCE]))


def _input_splits(exec_properties: Dict[str, Any]) -> List[example_gen_pb2.Input.Split]:
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
                              input_config)
    return list(input_config.splits)


@beam.ptransform_fn
def _FaceListToExample(pipeline: beam.Pipeline, exec_properties: Dict[str, Any],
                       split_pattern: str, split: Optional[str] = None) -> beam.pvalue.PCollection:
    if split is None:   # TFX's single-input path (output split by hash): one input split
        [split] = [s.name for s in _input_splits(exec_properties) if s.pattern == split_pattern]
    input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    outputs = pipeline | "Ingest" >> beam_ingest.IngestFaceRecords(
        os.path.join(input_base, split_pattern), exec_properties[IMAGE_ROOT],
        options_from(exec_properties), exec_properties.get(LIST_FORMAT) or None,
        offset_labels=bool(exec_properties.get(OFFSET_LABELS)))
    paths = ingest_paths(exec_properties[_OUTPUT_URI], split)
    beam_ingest.write_quarantine_and_summary(outputs, paths["quarantine"], paths["summary"])
    output_config = example_gen_pb2.Output()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
                              output_config)
    if output_config.split_config.partition_feature_name:
        # TFX's hash split reads the partition feature from Example protos, not bytes.
        import tensorflow as tf
        return outputs["examples"] | "Parse" >> beam.Map(tf.train.Example.FromString)
    return outputs["examples"]


class Executor(BaseExampleGenExecutor):
    """Runs the ingest per split, then reconciles counts and enforces the bad-record limit."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _FaceListToExample

    def GenerateExamplesByBeam(self, pipeline, exec_properties):
        """Per input split, passing the split's name on: two splits may share one list file."""
        output_config = example_gen_pb2.Output()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
                                  output_config)
        if output_config.split_config.splits:
            return super().GenerateExamplesByBeam(pipeline, exec_properties)
        return {split.name: pipeline | f"InputToRecord[{split.name}]" >> _FaceListToExample(
                    exec_properties, split.pattern, split.name)
                for split in _input_splits(exec_properties)}

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        examples = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY])
        exec_properties = dict(exec_properties)
        exec_properties[_OUTPUT_URI] = examples.uri
        super().Do(input_dict, output_dict, exec_properties)

        summaries = {}
        for split in _input_splits(exec_properties):
            paths = ingest_paths(examples.uri, split.name)
            summaries[split.name] = beam_ingest.read_summary(paths["summary"])
            logging.info("FaceExampleGen %s; quarantine: %s",
                         beam_ingest.format_summary(split.name, summaries[split.name]),
                         paths["quarantine"])
        examples.set_string_custom_property("ingest_summary", json.dumps(summaries, sort_keys=True))
        examples.set_int_custom_property("num_valid", sum(s["valid"] for s in summaries.values()))
        examples.set_int_custom_property("num_quarantined",
                                         sum(s["quarantined"] for s in summaries.values()))
        for split, summary in summaries.items():
            beam_ingest.check_summary(split, summary, float(exec_properties[MAX_BAD_FRACTION]),
                                      ingest_paths(examples.uri, split)["quarantine"])


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
