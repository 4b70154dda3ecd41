"""FaceExampleGen's executor: per input split, the records through
`beam_ingest.IngestFaceRecords` (the transform the `generate_tfrecord` CLI runs too) into TFX's
WriteSplit; then the quarantine and summary per split, the counts reconciled and the bad-record
limit enforced.

Output artifact layout (besides the usual `Split-<name>/` data):
    ingest/<input split>.quarantine.jsonl   every rejected record: {"key", "reason", "detail"}
    ingest/<input split>.summary.json       counts per reason, label range, groups
and custom properties `ingest_summary` (JSON of all splits), `num_valid`, `num_quarantined`.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import apache_beam as beam
from absl import logging
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.face_example_gen import beam_ingest
from components.face_example_gen.spec import (
    BOX_TOLERANCE,
    IMAGE_ROOT,
    LIST_FORMAT,
    MAX_BAD_FRACTION,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    OFFSET_LABELS,
)
from core.records import IngestOptions

_OUTPUT_URI = "_face_examples_uri"   # passed from Do() to the per-split PTransform


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
