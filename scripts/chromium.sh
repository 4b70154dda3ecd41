#!/usr/bin/env bash
# Installs Debian's `chromium` (once) for tests/test_shipped_model.py, which opens the
# evaluation report in headless Chromium as a reviewer would. Quick when it is present. Installs
# with apt-get as root (a fresh Debian 12 machine or container), or through `sudo -n` when allowed;
# never fails the build: without a browser the test skips and says why (under .ci/run it
# fails instead: FFEM_REQUIRE_CHROMIUM).
set -u
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium: no apt-get here; install Chromium to run tests/test_shipped_model.py" >&2
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  run=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  run=(sudo -n)
else
  echo "chromium: not root and no passwordless sudo; tests/test_shipped_model.py will skip" >&2
  exit 0
fi
echo "chromium: installing Debian's chromium package" >&2
if "${run[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${run[@]}" apt-get install -y -qq \
     --no-install-recommends chromium >/dev/null; then
  echo "chromium: installed $(command -v chromium)" >&2
else
  echo "chromium: the install failed; tests/test_shipped_model.py will skip" >&2
fi
exit 0
