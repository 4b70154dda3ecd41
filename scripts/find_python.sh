#!/usr/bin/env bash
# Prints the path of a Python 3.10 interpreter, the version the pinned TFX 1.16 stack supports.
# Order: $PYTHON if set, python3.10 on PATH (only if it really runs: a pyenv shim may not),
# then $(pyenv root)/versions/3.10.*/bin/python3.10. Exits 1 with a clear message otherwise.
set -u

is_py310() {
  "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)' >/dev/null 2>&1
}

if [ -n "${PYTHON:-}" ]; then
  if is_py310 "$PYTHON"; then
    command -v "$PYTHON"
    exit 0
  fi
  echo "error: PYTHON=$PYTHON is not a working Python 3.10 interpreter (TFX 1.16 needs 3.10)." >&2
  exit 1
fi

if command -v python3.10 >/dev/null 2>&1 && is_py310 python3.10; then
  command -v python3.10
  exit 0
fi

roots=()
if command -v pyenv >/dev/null 2>&1; then
  roots+=("$(pyenv root 2>/dev/null)")
fi
roots+=("${PYENV_ROOT:-$HOME/.pyenv}")
for root in "${roots[@]}"; do
  [ -n "$root" ] || continue
  for candidate in $(ls -d "$root"/versions/3.10.*/bin/python3.10 2>/dev/null | sort -V -r); do
    if is_py310 "$candidate"; then
      echo "$candidate"
      exit 0
    fi
  done
done

cat >&2 <<'MSG'
error: no Python 3.10 found. The pinned stack (TFX 1.16 / TensorFlow 2.16) needs Python 3.10.
  Looked for: $PYTHON, python3.10 on PATH, $(pyenv root)/versions/3.10.*/bin/python3.10.
  Fix: install one (e.g. `pyenv install 3.10.13`) or pass it: make demo PYTHON=/path/to/python3.10
MSG
exit 1
