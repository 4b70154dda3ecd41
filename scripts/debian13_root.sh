#!/usr/bin/env bash
# scripts/debian13_root.sh CMD...  runs CMD in this checkout inside a Debian 13 (trixie) root.
#
# Why: TFX 1.21 needs ml-metadata 1.21, whose wheels need glibc >= 2.38; Debian 12 has 2.36.
# Debian 13 has 2.41, so on an older host the 1.21 stack runs in a Debian 13 root, e.g.
#   scripts/debian13_root.sh make test STACK=1.21
#
# The root is built once (as root, with Debian's debootstrap, installed here when missing) in
# ${FFEM_DEBIAN13_ROOT:-$HOME/.cache/ffem-tfx/debian13}, outside the checkout, and rebuilt when
# missing, incomplete or built by an older recipe: a stamp file naming the recipe is written last, so an
# interrupted build is redone. It holds gcc, g++, make, git and python3-dev (pyfarmhash and rouge-score
# build from source), Node.js and npm (the face-api parity tests run the package's own JavaScript), the
# host's CA bundle, pip settings and machine-wide npm settings (else TLS checks or the host's package
# mirrors fail inside).
#
# Each run gets a private mount namespace (unshare), so its mounts (proc, dev, sys, the host's pyenv
# Pythons 3.11 and 3.10, /tmp and this checkout, at their own paths, the repository of a git
# worktree, and the local directories the pip settings point to) vanish with it, even when it is killed, and concurrent
# runs cannot unmount each other's. Concurrency: runs hold a lock on the root shared, for as long as
# CMD runs; a build or rebuild takes it exclusively (waiting for running commands), so runs wait for
# a build and never see a half-built root. Environment: the caller's, plus PYENV_ROOT so that
# scripts/find_python.sh finds the bind-mounted Python 3.11.
#
# Settings: FFEM_DEBIAN13_ROOT (where), FFEM_DEBIAN_MIRROR (default: the host's apt mirror for
# Debian, else deb.debian.org).
# (Sourcing the file only defines the functions: tests use that.)
set -euo pipefail

checkout=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
root_dir=${FFEM_DEBIAN13_ROOT:-$HOME/.cache/ffem-tfx/debian13}
stamp_name=.ffem-debian13-complete
# Bump when the build recipe below changes: an older root is rebuilt.
ROOT_RECIPE=2
PACKAGES="ca-certificates gcc g++ make git python3-dev nodejs npm"

pyenv_root() {
  if command -v pyenv >/dev/null 2>&1; then pyenv root; else echo "${PYENV_ROOT:-$HOME/.pyenv}"; fi
}

# The local directories that the pip settings name (find-links directories; for a file:// index,
# the folder above it, where such indexes keep their files): bind-mounted in at the same paths.
# Reads one-line values of pip.conf files and PIP_FIND_LINKS / PIP_INDEX_URL / PIP_EXTRA_INDEX_URL.
pip_local_dirs() {
  local key val p v
  {
    for f in /etc/pip.conf "$HOME/.config/pip/pip.conf" "$HOME/.pip/pip.conf"; do
      if [ -f "$f" ]; then
        sed -n 's/^[[:space:]]*\([a-z-]*\)[[:space:]]*=[[:space:]]*\(.*\)/\1 \2/p' "$f"
      fi
    done
    for v in PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL; do
      if [ -n "${!v:-}" ]; then echo "$v ${!v}"; fi
    done
  } | while read -r key val; do
    case "$key" in find-links|index-url|extra-index-url|PIP_*) ;; *) continue ;; esac
    for p in $val; do
      p=${p#file://}
      case "$p" in /*) ;; *) continue ;; esac
      case "$key" in *index*|*INDEX*) p=$(dirname "$p") ;; esac
      if [ -d "$p" ]; then echo "$p"; fi
    done
  done | sort -u
}

debian_mirror() {
  if [ -n "${FFEM_DEBIAN_MIRROR:-}" ]; then echo "$FFEM_DEBIAN_MIRROR"; return; fi
  local m
  m=$( { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*//p' | tr ' ' '\n';
         cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
           sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p'; } |
       grep -E '/debian/?$' | head -1)
  echo "${m:-http://deb.debian.org/debian}"
}

copy_in() {   # copy_in ROOT FILE: FILE to the same path in ROOT, replaced whole (runs may read it)
  local dest="$1$2"
  mkdir -p "$(dirname "$dest")"
  cp "$2" "$dest.tmp.$$" && chmod 644 "$dest.tmp.$$" && mv -f "$dest.tmp.$$" "$dest"
}

copy_host_settings() {
  local r=$1 f
  # npm: the machine-wide settings only (a user's ~/.npmrc may hold registry tokens). /etc/hosts:
  # the machine's own name, which Beam's runner advertises its control service under (the worker
  # pool's workers in tests/test_worker_package.py connect to it).
  for f in /etc/ssl/certs/ca-certificates.crt /etc/resolv.conf /etc/hosts /etc/npmrc /usr/etc/npmrc \
           /etc/pip.conf "$HOME/.config/pip/pip.conf" "$HOME/.pip/pip.conf"; do
    if [ -f "$f" ]; then copy_in "$r" "$f"; fi
  done
}

build_root() {
  local r=$1 mirror
  mirror=$(debian_mirror)
  echo "debian13_root: building a Debian 13 root in $r from $mirror (a few minutes, once)" >&2
  if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
  fi
  # Never delete through a mount (a bind-mounted checkout): refuse while anything is mounted below.
  if awk -v r="$r/" 'index($5, r) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
    echo "error: something is mounted under $r (see /proc/self/mountinfo); unmount it first." >&2
    exit 1
  fi
  rm -rf "$r"
  mkdir -p "$r"
  debootstrap --variant=minbase trixie "$r" "$mirror" >&2
  copy_host_settings "$r"
  unshare --mount --propagation private bash -c '
    set -e
    r=$1; shift
    mount -t proc proc "$r/proc"
    mount --rbind /dev "$r/dev"
    mount --rbind /sys "$r/sys"
    chroot "$r" /usr/bin/env DEBIAN_FRONTEND=noninteractive bash -c "
      apt-get update -qq && apt-get install -y -qq --no-install-recommends $*"
  ' _ "$r" "$PACKAGES" >&2
  echo "recipe $ROOT_RECIPE" > "$r/$stamp_name"
}

root_complete() {
  [ -f "$root_dir/$stamp_name" ] && [ "$(cat "$root_dir/$stamp_name")" = "recipe $ROOT_RECIPE" ]
}

main() {
  if [ $# -eq 0 ]; then
    echo "usage: scripts/debian13_root.sh CMD...   (e.g. make test STACK=1.21)" >&2
    exit 2
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: scripts/debian13_root.sh needs root (debootstrap, mount, chroot)." >&2
    exit 1
  fi
  mkdir -p "$(dirname "$root_dir")"
  exec 9>"$root_dir.lock"
  flock -s 9
  if ! root_complete; then
    flock -u 9
    flock 9
    root_complete || build_root "$root_dir"
    flock -s 9
  fi
  # Refresh settings that may have changed on the host since the build.
  copy_host_settings "$root_dir"

  local py_root py311 py310 git_dir d binds
  py_root=$(pyenv_root)
  py311=$(ls -d "$py_root"/versions/3.11.* 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$py311" ]; then
    echo "debian13_root: warning: no $py_root/versions/3.11.*; the 1.21 stack needs a Python 3.11" \
         "(pyenv install 3.11)" >&2
  fi

  # The host's /tmp as the root's: test runs leave their temporary directories where the host's
  # own cleanup (and pytest's, which keeps the last three) reaches them, not in the cached root.
  binds=("$checkout" /tmp)
  # A git worktree's repository lives outside the checkout: mount it too, for git commands in tests.
  git_dir=$(git -C "$checkout" rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)
  case "$git_dir" in "" | "$checkout"/*) ;; *) binds+=("$git_dir") ;; esac
  if [ -n "$py311" ]; then binds+=("$py311"); fi
  # The host's Python 3.10 too, when it has one: tools made on the host with it (the bob.measure
  # environment of `make bob-env`, .cache/bob-env) then run inside as well.
  py310=$(ls -d "$py_root"/versions/3.10.* 2>/dev/null | sort -V | tail -1 || true)
  if [ -n "$py310" ]; then binds+=("$py310"); fi
  while read -r d; do if [ -n "$d" ]; then binds+=("$d"); fi; done < <(pip_local_dirs)

  export PYENV_ROOT_IN=$py_root
  exec unshare --mount --propagation private bash -c '
    set -euo pipefail
    r=$1 checkout=$2 nbinds=$3; shift 3
    binds=("${@:1:$nbinds}"); shift "$nbinds"
    mount -t proc proc "$r/proc"
    mount --rbind /dev "$r/dev"
    mount --rbind /sys "$r/sys"
    for b in "${binds[@]}"; do
      mkdir -p "$r$b"
      mount --bind "$b" "$r$b"
    done
    # A private mount namespace: everything above is unmounted when its last process exits.
    exec chroot "$r" /usr/bin/env PYENV_ROOT="$PYENV_ROOT_IN" bash -c "cd \"\$0\" && exec \"\$@\"" \
      "$checkout" "$@"
  ' _ "$root_dir" "$checkout" "${#binds[@]}" "${binds[@]}" "$@"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
