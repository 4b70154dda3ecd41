"""Checks that Beam workers started from an image (or any environment) run the project's Beam code
as this checkout does, in about a minute: the check to make before a long Dataflow run on a new or
custom image.

    docker run --rm --network=host -v /tmp/ffem-check:/tmp/ffem-check \\
        gcr.io/<project>/ffem-tfx:<tag> --worker_pool          # Beam's boot: a pool on port 50000
    python -m tools.check_beam_workers --worker-pool localhost:50000 --work-dir /tmp/ffem-check

FaceExampleGen's ingest runs on a few generated records in this process and on the workers
(the portable runner with an EXTERNAL environment: the pool's workers), and the outputs must be
equal (pipeline/worker_check.py). The workers read and write --work-dir at the same path, hence
the volume. Prints each worker's process, interpreter and where it imported the project's modules
from; exits 1 when the workers fail (e.g. ModuleNotFoundError: the image lacks the package) or
differ. --beam-args instead names any other workers (e.g. a Flink cluster's).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import List, Optional

from pipeline import worker_check


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    workers = parser.add_mutually_exclusive_group(required=True)
    workers.add_argument("--worker-pool", metavar="HOST:PORT",
                         help="a Beam worker pool (e.g. the image started with --worker_pool)")
    workers.add_argument("--beam-args", nargs=argparse.REMAINDER,
                         help="Beam args naming the workers; must come last")
    parser.add_argument("--work-dir", default=None,
                        help="a directory the workers read and write at the same path "
                             "(default: a new temporary directory)")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    beam_args = args.beam_args or [
        "--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
        f"--environment_config={args.worker_pool}"]
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="ffem-worker-check-")
    os.makedirs(work_dir, exist_ok=True)
    report = worker_check.check_workers(beam_args, work_dir)
    print(worker_check.format_report(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
