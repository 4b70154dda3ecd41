"""Fetches the pinned pretrained face-api package into the cache folder: `make pretrained`.

    python -m tools.fetch_face_api [--cache DIR] [--js-runtime]

`npm pack @vladmandic/face-api@1.7.15` from the npm registry, sha256 checked against the pin, unpacked
into DIR (default `.cache/face-api/`, or $FFEM_FACE_API_CACHE). `--js-runtime` also installs the
pinned TensorFlow.js the package's own JavaScript needs (the parity tests and the benchmark).
Reuses a verified cache without the network. Exits 2 with the reason when Node/npm are missing, npm
fails or the checksum differs. What, where and why: models/pretrained/fetch.py.
"""
from __future__ import annotations

import argparse
import sys

from models.pretrained import fetch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default=None, help=f"cache folder (default ${fetch.CACHE_ENV} or "
                                                      ".cache/face-api)")
    parser.add_argument("--js-runtime", action="store_true",
                        help=f"also install {', '.join(f'{n}@{v}' for n, v in fetch.JS_RUNTIME.items())}")
    args = parser.parse_args(argv)
    try:
        package = fetch.fetch(args.cache, js_runtime=args.js_runtime)
    except fetch.PretrainedUnavailable as e:
        print(f"fetch_face_api: {e}", file=sys.stderr)
        return 2
    print(f"{fetch.PACKAGE}@{fetch.VERSION} (sha256 {fetch.TARBALL_SHA256[:12]}...) in {package}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
