#!/usr/bin/env bash
# Creates (once) a throwaway Python environment holding Idiap's bob.measure, which
# tests/test_bob_measure.py calls in a subprocess to check the 1:1 figures against an independent
# implementation. It lives outside .venv (bob.measure's own pins need not sit beside the TFX
# stack): $FFEM_BOB_ENV, default .cache/bob-env. Never fails the build: without it the test skips
# and says why.
set -u
cd "$(dirname "$0")/.."
env_dir="${FFEM_BOB_ENV:-.cache/bob-env}"
if [ -x "$env_dir/bin/python" ] && "$env_dir/bin/python" -c "import bob.measure" >/dev/null 2>&1; then
  exit 0
fi
# Either stack's Python does (bob.measure 6.1.1 installs on 3.10 and 3.11): 3.10 first, so that the
# environment made on a host with both also runs in scripts/debian13_root.sh, which mounts both.
python="$(FIND_PYTHON_QUIET=1 scripts/find_python.sh 3.10 || FIND_PYTHON_QUIET=1 scripts/find_python.sh 3.11)" ||
  { echo "bob-env: no Python 3.10 or 3.11; tests/test_bob_measure.py will skip" >&2; exit 0; }
rm -rf "$env_dir"
if "$python" -m venv "$env_dir" && "$env_dir/bin/pip" install -q "bob.measure==6.1.1" "numpy<2"; then
  echo "bob-env: bob.measure installed in $env_dir"
else
  echo "bob-env: could not install bob.measure; tests/test_bob_measure.py will skip" >&2
  rm -rf "$env_dir"
fi
exit 0
