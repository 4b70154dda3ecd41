#!/usr/bin/env bash
# Creates or reuses .venv (Python 3.10) and installs the project pinned by constraints.txt.
# Skips the install when nothing it depends on (constraints, setup.py, the interpreter) changed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PIP_VERSION=26.3
python=$(scripts/find_python.sh)

fingerprint=$( { cat constraints.txt setup.py; "$python" -c 'import sys; print(sys.version)';
                 echo "pip $PIP_VERSION"; } | sha256sum | cut -d' ' -f1)
stamp="$VENV/.ffem-install-fingerprint"

if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ]; then
  exit 0
fi

if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))'; then
  echo "bootstrap: $VENV is not Python 3.10; recreating it" >&2
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV with $python" >&2
  "$python" -m venv "$VENV"
fi
echo "bootstrap: installing the pinned stack into $VENV (a few minutes the first time)" >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "pip==$PIP_VERSION"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  -c constraints.txt -e '.[dev,kfp,viewer]'
"$VENV/bin/python" -m pip check >&2 || echo "bootstrap: warning: pip check reports conflicts (above)" >&2
echo "$fingerprint" > "$stamp"
echo "bootstrap: done" >&2
