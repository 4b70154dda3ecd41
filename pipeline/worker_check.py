"""Checks, in a minute, that Beam workers started elsewhere run the project's Beam code as this
process does: the check to make before a long run on a custom image or a new environment.

FaceExampleGen's ingest transform (`beam_ingest.IngestFaceRecords`) runs on a few generated
records (good ones and a few that must be quarantined) twice: in this process (FnApiRunner) and
with the Beam args naming the workers (e.g. the portable runner and an EXTERNAL worker pool
started from the image: `docker run --network=host -v DIR:DIR IMAGE --worker_pool`, or from a
virtual environment with the wheel installed). The Examples, quarantine lines and summary must be
equal. A probe step in the same pipeline records, in each worker, its process, interpreter,
`sys.path` and where it imported the project's modules from (the evaluator's embedding module
too, which needs TensorFlow and tfx-bsl there), so the report shows that the workers really are
the other environment, not this process; a module a worker cannot import fails the check.

Workers without the project's package fail the run on their first step with the error Beam
reports from the worker (e.g. ModuleNotFoundError: No module named 'core'), which the check
returns as its failure.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from components.face_example_gen import beam_ingest

# The project's modules the Beam steps import on the workers (the probe reports their files).
WORKER_MODULES = ("components.face_example_gen.beam_ingest", "core.records", "core.json_stream",
                  "components.recall_evaluator.beam_embed")
IN_PROCESS = ["--runner=FnApiRunner"]
BOX = {"x1": 4, "y1": 6, "x2": 40, "y2": 42}
# Records that must be quarantined, and why: a missing image and a box outside the image.
BAD_RECORDS = {"south/p9/missing.png": ({"label": 9, **BOX}, "missing_file"),
               "south/p9/0.png": ({"label": 9, "x1": 4, "y1": 6, "x2": 400, "y2": 42},
                                  "box_outside_image")}


@dataclasses.dataclass(frozen=True)
class Sample:
    list_path: str
    image_root: str
    good: Dict[str, Dict[str, Any]]          # key -> record of the records that must be Examples
    bad: Dict[str, str]                       # key -> the reason it must be quarantined


@dataclasses.dataclass
class WorkerProbe:
    """What one worker process saw: its pid and parent's, interpreter, sys.path, the file each
    of WORKER_MODULES was imported from, and the error of each that could not be imported."""
    pid: int
    ppid: int
    executable: str
    sys_path: List[str]
    modules: Dict[str, str]
    import_errors: Dict[str, str]


@dataclasses.dataclass
class IngestRun:
    """One run's outputs, in an order that does not depend on the runner."""
    examples: List[bytes]
    quarantine: List[Dict[str, Any]]
    summary: Dict[str, Any]
    probes: List[WorkerProbe]


@dataclasses.dataclass
class CheckReport:
    differences: List[str]            # empty: the workers' outputs equal this process's
    workers: List[WorkerProbe]
    error: Optional[str] = None       # the run on the workers failed: Beam's error text

    @property
    def ok(self) -> bool:
        return self.error is None and not self.differences


def write_sample(directory: str, identities: int = 4, images_per_identity: int = 3) -> Sample:
    """PNG faces (colour gradients, seeded) in two groups and a face list with BAD_RECORDS."""
    from PIL import Image

    image_root = os.path.join(directory, "images")
    good: Dict[str, Dict[str, Any]] = {}
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:56]
    for label in range(identities):
        for index in range(images_per_identity):
            key = f"{('north', 'south')[label % 2]}/p{label}/{index}.png"
            base, gx, gy = rng.uniform(0, 255, 3), rng.uniform(-2, 2, 3), rng.uniform(-2, 2, 3)
            pixels = np.clip(base + xx[..., None] * gx + yy[..., None] * gy, 0, 255)
            os.makedirs(os.path.dirname(os.path.join(image_root, key)), exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(image_root, key))
            good[key] = {"label": label, **BOX}
    small = os.path.join(image_root, "south", "p9", "0.png")      # the box lies outside it
    os.makedirs(os.path.dirname(small), exist_ok=True)
    Image.fromarray(np.zeros((48, 56, 3), np.uint8)).save(small)
    listed = {**good, **{key: value for key, (value, _) in BAD_RECORDS.items()}}
    list_path = os.path.join(directory, "faces.json")
    with open(list_path, "w") as f:
        json.dump(listed, f, indent=1, sort_keys=True)
    return Sample(list_path, image_root, good,
                  {key: reason for key, (_, reason) in BAD_RECORDS.items()})


class _Probe(beam.DoFn):
    """Runs on a worker: where it is and where it imports the project's modules from."""

    def process(self, _):
        modules, errors = {}, {}
        for name in WORKER_MODULES:
            try:
                modules[name] = importlib.import_module(name).__file__
            except ImportError as e:     # e.g. the image lacks TensorFlow for the embedding
                errors[name] = f"{type(e).__name__}: {e}"
        yield json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "executable": sys.executable,
                          "sys_path": list(sys.path), "modules": modules,
                          "import_errors": errors})


def run_ingest(sample: Sample, out_dir: str, beam_args: Sequence[str]) -> IngestRun:
    """IngestFaceRecords on `sample` with `beam_args`, written under `out_dir` (which the
    workers must be able to write and this process to read), read back."""
    import tensorflow as tf

    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, name) for name in
             ("examples.tfrecord", "quarantine.jsonl", "summary.json", "probes.jsonl")}
    with beam.Pipeline(options=PipelineOptions(list(beam_args))) as pipeline:
        outputs = pipeline | "Ingest" >> beam_ingest.IngestFaceRecords(sample.list_path,
                                                                       sample.image_root)
        _ = outputs["examples"] | "WriteExamples" >> beam.io.WriteToTFRecord(
            paths["examples.tfrecord"], num_shards=1, shard_name_template="")
        beam_ingest.write_quarantine_and_summary(outputs, paths["quarantine.jsonl"],
                                                 paths["summary.json"])
        _ = (pipeline
             | "ProbeSeeds" >> beam.Create(list(range(4)))
             | "Spread" >> beam.Reshuffle()
             | "Probe" >> beam.ParDo(_Probe())
             | "WriteProbes" >> beam.io.WriteToText(paths["probes.jsonl"], num_shards=1,
                                                    shard_name_template=""))
    examples = sorted(record.numpy() for record in
                      tf.data.TFRecordDataset(paths["examples.tfrecord"]))
    with open(paths["quarantine.jsonl"]) as f:
        quarantine = sorted((json.loads(line) for line in f),
                            key=lambda line: json.dumps(line, sort_keys=True))
    with open(paths["probes.jsonl"]) as f:
        probes = [WorkerProbe(**json.loads(line)) for line in f]
    # One probe per distinct worker process.
    unique = {probe.pid: probe for probe in probes}
    return IngestRun(examples, quarantine, beam_ingest.read_summary(paths["summary.json"]),
                     [unique[pid] for pid in sorted(unique)])


def differences(expected: IngestRun, got: IngestRun) -> List[str]:
    """What differs between two runs' outputs (the probes aside)."""
    found = []
    if got.examples != expected.examples:
        found.append(f"Examples differ: {len(got.examples)} on the workers, "
                     f"{len(expected.examples)} in process, "
                     f"{len(set(got.examples) ^ set(expected.examples))} not in both")
    if got.quarantine != expected.quarantine:
        found.append(f"quarantine differs: {got.quarantine} on the workers, "
                     f"{expected.quarantine} in process")
    if got.summary != expected.summary:
        found.append(f"summary differs: {got.summary} on the workers, {expected.summary} in "
                     f"process")
    return found


def check_workers(beam_args: Sequence[str], work_dir: str) -> CheckReport:
    """Runs the sample ingest in this process and with `beam_args`; see the module docstring.
    `work_dir` must be readable and writable by the workers at the same path."""
    sample = write_sample(os.path.join(work_dir, "sample"))
    local = run_ingest(sample, os.path.join(work_dir, "in-process"), IN_PROCESS)
    try:
        remote = run_ingest(sample, os.path.join(work_dir, "workers"), beam_args)
    except Exception as e:   # Beam re-raises the worker's failure with its traceback as text
        return CheckReport([], [], error=f"{type(e).__name__}: {e}")
    found = differences(local, remote)
    if all(probe.pid == os.getpid() for probe in remote.probes):
        found.append("the steps ran in this process, not on other workers: the Beam args name "
                     "no workers, and the check proves nothing")
    found += [f"worker pid {probe.pid} cannot import {name}: {error}"
              for probe in remote.probes for name, error in sorted(probe.import_errors.items())]
    return CheckReport(found, remote.probes)


def format_report(report: CheckReport) -> str:
    lines = []
    for probe in report.workers:
        lines.append(f"worker pid {probe.pid} (parent {probe.ppid}), {probe.executable}")
        lines += [f"  {name}: {where}" for name, where in sorted(
            {**probe.modules, **probe.import_errors}.items())]
    if report.error is not None:
        cause = [line for line in report.error.splitlines() if "Error" in line]
        lines.append("FAILED: the run on the workers failed: " + (cause[-1] if cause else
                                                                   report.error[-2000:]))
    lines += [f"FAILED: {difference}" for difference in report.differences]
    if report.ok:
        lines.append("OK: the workers' Examples, quarantine and summary equal this process's")
    return "\n".join(lines)

