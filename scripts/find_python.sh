#!/usr/bin/env bash
# scripts/find_python.sh [3.10|3.11]  prints the path of a Python of that version (default 3.10):
# 3.10 for the TFX 1.16 stack, 3.11 for the TFX 1.21 stack (see scripts/stack.sh).
# Order: $PYTHON if set, pythonX.Y on PATH (only if it really runs: a pyenv shim may not),
# then $(pyenv root)/versions/X.Y.*/bin/pythonX.Y. Exits 1 with a clear message otherwise.
set -u

want=${1:-3.10}
case "$want" in
  3.10) stack=1.16 ;;
  3.11) stack=1.21 ;;
  *) echo "error: find_python.sh: no stack runs on Python $want (3.10: TFX 1.16, 3.11: TFX 1.21)" >&2
     exit 2 ;;
esac
minor=${want#3.}

is_wanted() {
  "$1" -c "import sys; sys.exit(0 if sys.version_info[:2] == (3, $minor) else 1)" >/dev/null 2>&1
}

if [ -n "${PYTHON:-}" ]; then
  if is_wanted "$PYTHON"; then
    command -v "$PYTHON"
    exit 0
  fi
  echo "error: PYTHON=$PYTHON is not a working Python $want interpreter (TFX $stack needs $want)." >&2
  exit 1
fi

if command -v "python$want" >/dev/null 2>&1 && is_wanted "python$want"; then
  command -v "python$want"
  exit 0
fi

roots=()
if command -v pyenv >/dev/null 2>&1; then
  roots+=("$(pyenv root 2>/dev/null)")
fi
roots+=("${PYENV_ROOT:-$HOME/.pyenv}")
for root in "${roots[@]}"; do
  [ -n "$root" ] || continue
  for candidate in $(ls -d "$root"/versions/"$want".*/bin/python"$want" 2>/dev/null | sort -V -r); do
    if is_wanted "$candidate"; then
      echo "$candidate"
      exit 0
    fi
  done
done

if [ -z "${FIND_PYTHON_QUIET:-}" ]; then
  cat >&2 <<MSG
error: no Python $want found. The TFX $stack stack needs Python $want.
  Looked for: \$PYTHON, python$want on PATH, \$(pyenv root)/versions/$want.*/bin/python$want.
  Fix: install one (e.g. \`pyenv install $want\`) or pass it: make demo PYTHON=/path/to/python$want
MSG
fi
exit 1
