"""Beam options shared by the pipeline and the converter CLI."""
from __future__ import annotations

from typing import List


def with_default_runner(beam_args: List[str]) -> List[str]:
    """Beam args with --runner=FnApiRunner added unless they name a runner.

    Beam's DirectRunner first tries to download and start the Prism runner and falls back to
    FnApiRunner only when that fails (e.g. offline): the same pipeline would run on a different
    runner depending on network access. FnApiRunner honours --direct_running_mode and
    --direct_num_workers."""
    if any(arg == "--runner" or arg.startswith("--runner=") for arg in beam_args):
        return list(beam_args)
    return ["--runner=FnApiRunner", *beam_args]
