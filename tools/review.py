"""Review what pipeline runs produced, from the metadata store.

    python -m tools.review list                    # every run: when, model, Recall@1, blessed, pushed
    python -m tools.review show RUN                # one run in detail (RUN: id, unique prefix, or -1):
                                                   # Recall@1 and 1:1 FNMR/FMR with 95 % intervals,
                                                   # what is not gated (advisories), every verdict
    python -m tools.review compare RUN_A RUN_B     # per-group Recall@1 side by side, with intervals
    python -m tools.review report RUN              # path of the run's HTML report

Options: --metadata PATH (SQLite, default runs/metadata.sqlite) or --pipeline-root DIR (uses
DIR/../metadata.sqlite, the local runner's layout).
"""
import argparse
import os
import sys

from pipeline import configs
from pipeline.runs import find_run, format_compare, format_list, format_show, list_runs, open_store


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metadata", default=None, help="SQLite metadata store")
    parser.add_argument("--pipeline-root", default=None,
                        help="pipeline root of a local run (metadata next to it)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    show = sub.add_parser("show")
    show.add_argument("run")
    compare = sub.add_parser("compare")
    compare.add_argument("run_a")
    compare.add_argument("run_b")
    report = sub.add_parser("report")
    report.add_argument("run")
    args = parser.parse_args(argv)
    metadata = args.metadata or (
        os.path.join(os.path.dirname(os.path.abspath(args.pipeline_root)), "metadata.sqlite")
        if args.pipeline_root else configs.PipelineConfig().metadata_path)
    try:
        runs = list_runs(open_store(metadata))
        if args.command == "list":
            print(format_list(runs) if runs else "no runs yet")
        elif args.command == "show":
            print(format_show(find_run(runs, args.run)))
        elif args.command == "compare":
            print(format_compare(find_run(runs, args.run_a), find_run(runs, args.run_b)))
        else:
            run = find_run(runs, args.run)
            if not run["report"]:
                print(f"run {run['run_id']} has no evaluation report", file=sys.stderr)
                return 1
            print(run["report"])
    except (FileNotFoundError, KeyError, IndexError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
