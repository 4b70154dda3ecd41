#!/usr/bin/env bash
# Creates or reuses the venv of one pinned stack and installs the project into it:
#   1.16: TFX 1.16 on Python 3.10, constraints.txt,      .venv
#   1.21: TFX 1.21 on Python 3.11, constraints-1.21.txt, .venv-1.21
# The stack comes from scripts/stack.sh ($STACK, $PYTHON or what this machine has); $VENV overrides
# the venv's path. Skips the install when nothing it depends on (the constraints, setup.py, the
# interpreter) changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PIP_VERSION=26.3
STACK=$(scripts/stack.sh)
case "$STACK" in
  1.16) want=3.10; constraints=constraints.txt;      default_venv=.venv ;;
  1.21) want=3.11; constraints=constraints-1.21.txt; default_venv=.venv-1.21 ;;
esac
VENV=${VENV:-$default_venv}
python=$(scripts/find_python.sh "$want")

fingerprint=$( { cat "$constraints" setup.py; "$python" -c 'import sys; print(sys.version)';
                 echo "pip $PIP_VERSION"; } | sha256sum | cut -d' ' -f1)
stamp="$VENV/.ffem-install-fingerprint"

if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ]; then
  exit 0
fi

if [ -x "$VENV/bin/python" ] && \
   ! "$VENV/bin/python" -c "import sys; sys.exit(sys.version_info[:2] != (3, ${want#3.}))"; then
  echo "bootstrap: $VENV is not Python $want; recreating it" >&2
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV (TFX $STACK stack) with $python" >&2
  "$python" -m venv "$VENV"
fi
echo "bootstrap: installing the TFX $STACK stack into $VENV (a few minutes the first time)" >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "pip==$PIP_VERSION"
extras=dev,kfp,viewer
known='^$'           # pip check lines that are expected
if [ "$STACK" = 1.21 ]; then
  # The viewer's TensorBoard plugin (Fairness Indicators 0.52) declares numpy < 2 on Python < 3.13
  # (numpy >= 2.1 on 3.13), and this stack has numpy 2: pip cannot resolve the two together, so the
  # plugin is installed at its pin without its dependencies, all of which are pinned and installed
  # with the project. It runs with numpy 2 (tests/test_fairness_indicators.py).
  extras=dev,kfp
  known='^tensorboard-plugin-fairness-indicators .* numpy'
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  -c "$constraints" -e ".[$extras]"
if [ "$STACK" = 1.21 ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c "$constraints" --no-deps tensorboard-plugin-fairness-indicators
fi
conflicts=$("$VENV/bin/python" -m pip check 2>&1 | grep -v -e '^No broken requirements found' -e "$known" || true)
if [ -n "$conflicts" ]; then
  echo "$conflicts" >&2
  echo "bootstrap: warning: pip check reports conflicts (above)" >&2
fi
echo "$fingerprint" > "$stamp"
echo "bootstrap: done" >&2
