"""The original's converter, on the pipeline's own Beam ingest: face list + images -> one TFRecord.

    python generate_tfrecord/main.py --root_path R --json_file J --output O.tfrecord

Writes O.tfrecord (uncompressed tf.Examples, the FaceExampleGen schema), O.tfrecord.quarantine.jsonl
(every rejected record: {"key", "reason", "detail"}) and O.tfrecord.summary.json, prints the counts
and the label range, and exits with status 2 when more than --max_bad_fraction of the records were
rejected (1 on other errors). Extra arguments go to Beam, e.g. --direct_num_workers=2
--direct_running_mode=multi_processing, or --runner=DataflowRunner ....

--num_shards=0 writes O.tfrecord-SSSSS-of-NNNNN, one file per worker bundle, instead of one file:
every worker writes its own Examples, so no single process has to receive them all (the faster
choice with several workers; TFRecord readers take the glob O.tfrecord-*). The Examples are
written in a staging directory beside O.tfrecord and moved into place at the end, so Beam never
lists the directory O.tfrecord is in (it may hold the images).

Without --runner, the pipeline runs on Beam's FnApiRunner, as the TFX pipeline does
(pipeline/beam_options.py with_default_runner). Workers that are not local processes (Dataflow,
portable runners' Docker workers) get the project's code as the pipeline's do
(pipeline/beam_options.py worker_code_args): this checkout's setup.py as --setup_file, unless
the Beam args name an --sdk_container_image, --setup_file or --extra_package.
"""
from __future__ import annotations

import argparse
import os
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from components.face_example_gen import beam_ingest, example_sink
from core.records import IngestOptions
from pipeline import beam_options, configs

EXIT_TOO_MANY_BAD = 2


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root_path", required=True, help="image root the keys are relative to")
    parser.add_argument("--json_file", required=True, nargs="+",
                        help="face list(s) (.json object or .jsonl; globs allowed)")
    parser.add_argument("--offset_labels", action="store_true",
                        help="merge several lists that each label from 0: shift every list's "
                             "labels past the previous lists' (sorted by path)")
    parser.add_argument("--output", required=True, help="output TFRecord path")
    parser.add_argument("--num_shards", type=int, default=1,
                        help="1 (default): one file at --output; 0: one file per worker bundle "
                             "(--output-SSSSS-of-NNNNN); N: exactly N files")
    parser.add_argument("--max_bad_fraction", type=float, default=0.01,
                        help="fail (exit 2) when more than this fraction is quarantined")
    parser.add_argument("--max_image_pixels", type=int, default=IngestOptions.max_image_pixels)
    parser.add_argument("--max_image_bytes", type=int, default=IngestOptions.max_image_bytes)
    parser.add_argument("--box_tolerance", type=float, default=IngestOptions.box_tolerance)
    parser.add_argument("--list_format", choices=("json", "jsonl"), default=None,
                        help="default: by extension (.jsonl/.ndjson are JSON Lines)")
    return parser.parse_known_args(argv)


def run(argv=None) -> int:
    args, beam_args = parse_args(argv)
    if args.num_shards < 0:
        print("error: --num_shards must be 0 (one per bundle) or more", file=sys.stderr)
        return 1
    try:
        beam_args = beam_options.with_worker_code(beam_options.with_default_runner(beam_args),
                                                  setup_file=configs.SETUP_FILE)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    options = IngestOptions(args.max_image_pixels, args.max_image_bytes, args.box_tolerance)
    quarantine_path = args.output + ".quarantine.jsonl"
    summary_path = args.output + ".summary.json"
    try:
        with beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
            outputs = pipeline | "Ingest" >> beam_ingest.IngestFaceRecords(
                args.json_file, args.root_path, options, args.list_format, args.offset_labels,
                example_batches=True)
            staging = example_sink.write_examples(outputs["examples"], args.output,
                                                 args.num_shards)
            beam_ingest.write_quarantine_and_summary(outputs, quarantine_path, summary_path)
        example_sink.publish_examples(staging, args.output, args.num_shards)
        summary = beam_ingest.read_summary(summary_path)
    except beam_ingest.IngestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    name = ", ".join(os.path.basename(p) for p in args.json_file)
    print(beam_ingest.format_summary(name, summary))
    for source, (first, last) in (summary["label_ranges"] or {}).items():
        print(f"labels {first}..{last} <- {source}")
    examples = args.output if args.num_shards == 1 else args.output + "-*"
    print(f"examples: {examples}\nquarantine: {quarantine_path}")
    try:
        beam_ingest.check_summary(name, summary,
                                  args.max_bad_fraction, quarantine_path)
    except beam_ingest.IngestError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_TOO_MANY_BAD
    return 0


if __name__ == "__main__":
    sys.exit(run())
