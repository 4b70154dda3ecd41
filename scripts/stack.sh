#!/usr/bin/env bash
# Prints the pinned stack to use here: 1.21 (TFX 1.21 / TF 2.21 / Python 3.11, constraints-1.21.txt)
# or 1.16 (TFX 1.16 / TF 2.16 / Python 3.10, constraints.txt). Exits 1 with a message saying what
# to install otherwise.
#
#   STACK=1.21 or STACK=1.16   that stack, if this machine can run it;
#   PYTHON=/path/to/python     the stack of that interpreter (3.10: 1.16, 3.11: 1.21);
#   neither                    1.21 where glibc >= 2.38 and a Python 3.11 is found, else 1.16 where a
#                              Python 3.10 is found.
#
# Limits: ml-metadata 1.21's wheels (TFX 1.21) need glibc >= 2.38 (Debian 12 has 2.36: there, run
# the 1.21 stack in scripts/debian13_root.sh); TFX 1.16 declares Python < 3.11; TFX 1.21's kfp extra
# is for Python < 3.12, and the suite is verified on 3.11 only, so 3.12 and 3.13 are refused.
set -u
cd "$(dirname "$0")/.."

GLIBC_MIN_121=2.38

glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
glibc_ok() {
  [ -n "$glibc" ] && [ "$(printf '%s\n%s\n' "$GLIBC_MIN_121" "$glibc" | sort -V | head -1)" = "$GLIBC_MIN_121" ]
}
glibc_note() {
  echo "  TFX 1.21 needs glibc >= $GLIBC_MIN_121 (ml-metadata 1.21's wheels); this machine has glibc ${glibc:-unknown}:"
  echo "  run it in a Debian 13 root instead: scripts/debian13_root.sh make test STACK=1.21 (as root)."
}

python_minor() {   # "3.N" of an interpreter, empty if it does not run
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
}

stack=${STACK:-}
if [ -z "$stack" ] && [ -n "${PYTHON:-}" ]; then
  case "$(python_minor "$PYTHON")" in
    3.10) stack=1.16 ;;
    3.11) stack=1.21 ;;
    3.12|3.13)
      echo "error: PYTHON=$PYTHON is Python $(python_minor "$PYTHON"): not supported. TFX 1.21's kfp extra" \
           "is not offered there and the suite is verified on Python 3.11 only." >&2
      echo "  Use a Python 3.11 (TFX 1.21 stack) or 3.10 (TFX 1.16 stack)." >&2
      exit 1 ;;
    "") echo "error: PYTHON=$PYTHON is not a working Python interpreter." >&2; exit 1 ;;
    *) echo "error: PYTHON=$PYTHON is Python $(python_minor "$PYTHON"); the stacks need 3.11 (TFX 1.21)" \
            "or 3.10 (TFX 1.16)." >&2; exit 1 ;;
  esac
fi

case "$stack" in
  1.21)
    if ! glibc_ok; then
      echo "error: STACK=1.21 cannot run on this machine." >&2
      glibc_note >&2
      echo "  Or use the TFX 1.16 stack here: STACK=1.16 (Python 3.10)." >&2
      exit 1
    fi
    scripts/find_python.sh 3.11 >/dev/null || exit 1
    echo 1.21 ;;
  1.16)
    scripts/find_python.sh 3.10 >/dev/null || exit 1
    echo 1.16 ;;
  "")
    if glibc_ok && FIND_PYTHON_QUIET=1 scripts/find_python.sh 3.11 >/dev/null; then
      echo 1.21
    elif FIND_PYTHON_QUIET=1 scripts/find_python.sh 3.10 >/dev/null; then
      echo 1.16
    else
      {
        echo "error: no Python for either pinned stack was found."
        for newer in python3.13 python3.12 python3; do
          case "$(command -v "$newer" >/dev/null 2>&1 && python_minor "$newer")" in
            3.12|3.13)
              echo "  ($newer is Python $(python_minor "$newer"): not supported; TFX 1.21's kfp extra is not"
              echo "  offered there and the suite is verified on Python 3.11 only.)"
              break ;;
          esac
        done
        if glibc_ok; then
          echo "  Install Python 3.11 for the TFX 1.21 stack (e.g. \`pyenv install 3.11\`, or your distribution's python3.11),"
        else
          echo "  This machine has glibc ${glibc:-unknown}; the TFX 1.21 stack needs glibc >= $GLIBC_MIN_121 (or"
          echo "  scripts/debian13_root.sh, as root, with a pyenv Python 3.11: \`pyenv install 3.11\`),"
        fi
        echo "  or Python 3.10 for the TFX 1.16 stack (e.g. \`pyenv install 3.10\`)."
        echo "  Looked for: \$PYTHON, python3.11 / python3.10 on PATH, \$(pyenv root)/versions/3.1{1,0}.*."
        echo "  Or name one: make demo PYTHON=/path/to/python3.11 (or python3.10), or choose STACK=1.21 / STACK=1.16."
      } >&2
      exit 1
    fi ;;
  *)
    echo "error: STACK=$stack is not a pinned stack: use STACK=1.21 (TFX 1.21, Python 3.11) or STACK=1.16" \
         "(TFX 1.16, Python 3.10)." >&2
    exit 1 ;;
esac
