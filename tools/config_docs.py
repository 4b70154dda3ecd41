"""Writes docs/configuration.md from the settings classes (pipeline/config_docs.py).

    python -m tools.config_docs            # rewrite the page
    python -m tools.config_docs --check    # exit 1 when the page is stale
"""
import argparse
import sys

from pipeline.config_docs import DOC_PATH, markdown


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args(argv)
    text = markdown()
    if args.check:
        with open(DOC_PATH) as f:
            stale = f.read() != text
        if stale:
            print(f"{DOC_PATH} is stale: run python -m tools.config_docs", file=sys.stderr)
        return int(stale)
    with open(DOC_PATH, "w") as f:
        f.write(text)
    print(DOC_PATH)
    return 0


if __name__ == "__main__":
    sys.exit(main())
