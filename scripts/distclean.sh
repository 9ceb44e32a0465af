#!/usr/bin/env bash
# `make distclean`: removes what `make test` leaves outside the repository (`make clean` removes
# what it leaves inside). It never removes an installed package: `make deps` printed the apt
# command that does, and apt's /var/log/apt/history.log lists what it installed.
#
#   the project's Docker engine   stopped (scripts/docker-engine.sh stop), then its data root
#                                 (images, build cache) and exec root removed
#   the base-image cache          debootstrap root filesystems and .debs
#                                 (these two: about 2.6 GB after a first `make test` as root)
#   ~/.cache/session-sidecar      the tests' copy of make run's .venv-run
#   $TMPDIR/session-sidecar-adapters-go   the adapter tests' Go caches
#
# The same variables as the scripts that made them: SIDECAR_DOCKER_DATA_ROOT,
# SIDECAR_DOCKER_EXEC_ROOT, SIDECAR_DOCKER_SOCKET, SIDECAR_CACHE_DIR, XDG_CACHE_HOME, TMPDIR.
# A directory whose path does not say "session-sidecar" is named, not removed.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_ROOT="${SIDECAR_DOCKER_DATA_ROOT:-/var/lib/session-sidecar-docker}"
EXEC_ROOT="${SIDECAR_DOCKER_EXEC_ROOT:-/run/session-sidecar-docker}"
SOCKET="${SIDECAR_DOCKER_SOCKET:-/run/session-sidecar-docker.sock}"
CACHE_DIR="${SIDECAR_CACHE_DIR:-/var/cache/session-sidecar}"
USER_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/session-sidecar"
GO_CACHE="${TMPDIR:-/tmp}/session-sidecar-adapters-go"

failed=0

# remove PATH WHAT: rm -rf, with its size, unless it is missing, mounted on, or not ours.
remove() {
  local path="$1" what="$2" size
  if [ ! -e "$path" ] && [ ! -L "$path" ]; then
    echo "absent:  $path ($what)"
    return
  fi
  case "$path" in
    /*session-sidecar*) ;;
    *)
      echo "!!! not removing $path ($what): its path does not say session-sidecar" >&2
      failed=1
      return
      ;;
  esac
  if awk -v p="$path" '$2 == p || index($2, p "/") == 1 { found = 1 } END { exit !found }' \
    /proc/self/mounts 2>/dev/null; then
    echo "!!! not removing $path ($what): something is still mounted under it" >&2
    failed=1
    return
  fi
  size="$(du -sh "$path" 2>/dev/null | cut -f1)"
  if rm -rf -- "$path" 2>/dev/null; then
    echo "removed: $path ($what, ${size:-?})"
  else
    echo "!!! could not remove $path ($what): run as root (it was made by 'make test' as root)" >&2
    failed=1
  fi
}

if [ -e "$EXEC_ROOT/dockerd.pid" ]; then
  bash scripts/docker-engine.sh stop
fi
remove "$DATA_ROOT" "the project's Docker engine: images and build cache"
remove "$EXEC_ROOT" "the project's Docker engine: run state"
remove "$SOCKET" "the project's Docker engine: its socket"
remove "$CACHE_DIR" "base-image cache: debootstrap root filesystems and .debs"
remove "$USER_CACHE" "the tests' copy of make run's environment"
remove "$GO_CACHE" "the adapter tests' Go caches"
echo "installed packages are left as they are; 'make deps' printed the command that removes them"
exit "$failed"
