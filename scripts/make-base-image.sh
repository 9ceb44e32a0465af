#!/usr/bin/env bash
# Local base images for this repo's Dockerfiles, made without a registry: a debootstrap of
# Debian bookworm with Debian's own packages, then `docker import` into the engine DOCKER_HOST
# names (scripts/docker-engine.sh starts one).
#
#   session-sidecar-base/python:3.11-bookworm   python3 (3.11.2), python3-venv, python3-pip
#   session-sidecar-base/node:18-bookworm       nodejs (Debian ships 18, not upstream's 20)
#   session-sidecar-base/golang:1.19-bookworm   golang-go (Debian ships 1.19, go.mod asks 1.19)
#   session-sidecar-base/debian:bookworm        minbase only (bash, coreutils)
#
# They are named for what they are, not after the upstream images the Dockerfiles name by
# default (python:3.11-slim-bookworm, node:20-slim, golang:1.22-bookworm, debian:bookworm-slim):
# scripts/build-image.sh --local-bases passes them as the Dockerfiles' *_IMAGE build arguments.
# Python is Debian's, in /usr/bin (linked from /usr/local/bin as upstream lays it out), and
# refuses system-wide pip installs (PEP 668); the Dockerfiles install into venvs, which works on
# both.
#
# Root filesystems are cached as tarballs outside the repo, with debootstrap's .deb cache beside
# them, so only the first run downloads and unpacks; a later run imports what is missing.
#   SIDECAR_CACHE_DIR      cache directory (default /var/cache/session-sidecar)
#   SIDECAR_DEBIAN_MIRROR  Debian mirror (default: the one apt's sources already use)
#   --force                import again (with --refresh, debootstrap again too)
set -euo pipefail

SUITE="bookworm"
CACHE_DIR="${SIDECAR_CACHE_DIR:-/var/cache/session-sidecar}"
DOCKER_CLI="${SIDECAR_DOCKER_CLI:-/usr/bin/docker}"
BASE_PATH="PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"

# name  image  debootstrap --include list  dpkg package whose version the tag promises
BASES=(
  "python3 session-sidecar-base/python:3.11-bookworm python3,python3-venv,python3-pip,ca-certificates python3.11=3.11."
  "nodejs session-sidecar-base/node:18-bookworm nodejs,ca-certificates nodejs=18."
  "golang session-sidecar-base/golang:1.19-bookworm golang-go,ca-certificates golang-1.19-go=1.19."
  "minbase session-sidecar-base/debian:bookworm - base-files=12"
)

force=0
refresh=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --refresh) force=1; refresh=1 ;;
    *) echo "usage: $0 [--force] [--refresh]" >&2; exit 2 ;;
  esac
done

for tool in debootstrap "$DOCKER_CLI"; do
  command -v "$tool" >/dev/null 2>&1 \
    || { echo "!!! $tool not found: run 'make deps' (Debian packages: debootstrap docker.io)" >&2; exit 1; }
done
"$DOCKER_CLI" version --format '{{.Server.Version}}' >/dev/null \
  || { echo "!!! no Docker engine at ${DOCKER_HOST:-the default socket}: scripts/docker-engine.sh start" >&2; exit 1; }

# The first Debian archive URI that apt is configured with (deb822 .sources or one-line format).
debian_mirror() {
  local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
  cat "${files[@]}" 2>/dev/null \
    | grep -v '^[[:space:]]*#' \
    | grep -Eo 'https?://[^ ]+/debian/?( |$)' \
    | head -n 1 \
    | tr -d ' ' || true
}

# make_rootfs NAME INCLUDE PROMISE: the cached tarball of a debootstrap, made if missing.
# PROMISE is "package=version-prefix": the tag names that version, so anything else fails.
make_rootfs() {
  local name="$1" include="$2" promise="$3" tarball="$CACHE_DIR/$SUITE-$1-rootfs.tar"
  if [ "$refresh" = 0 ] && [ -s "$tarball" ]; then
    return 0
  fi
  local mirror rootfs start version
  mirror="${SIDECAR_DEBIAN_MIRROR:-$(debian_mirror)}"
  mirror="${mirror:-http://deb.debian.org/debian}"
  rootfs="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs"' EXIT
  mkdir -p "$CACHE_DIR/debs"
  echo "debootstrap $SUITE ($name) from $mirror, cached afterwards in $tarball"
  start=$SECONDS
  local includes=()
  [ "$include" = - ] || includes=(--include="$include")
  debootstrap --variant=minbase --cache-dir="$CACHE_DIR/debs" "${includes[@]}" \
    "$SUITE" "$rootfs" "$mirror" >"$CACHE_DIR/debootstrap-$name.log" 2>&1 \
    || { tail -n 30 "$CACHE_DIR/debootstrap-$name.log" >&2; exit 1; }
  echo "debootstrap ($name) took $((SECONDS - start)) s"

  version="$(chroot "$rootfs" dpkg-query -W -f '${Version}' "${promise%%=*}")"
  case "$version" in
    "${promise#*=}"*) ;;
    *) echo "!!! $name: ${promise%%=*} is $version, not the ${promise#*=}* its tag names" >&2; exit 1 ;;
  esac
  if [ "$name" = python3 ]; then
    # Upstream's layout: python, python3 and pip on PATH from /usr/local/bin.
    ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python3"
    ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python"
    ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip3"
    ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip"
  fi
  # Slim like upstream: no package cache, no apt lists, no docs.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
  tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$rootfs"
  trap - EXIT
}

mkdir -p "$CACHE_DIR"
for entry in "${BASES[@]}"; do
  read -r name image include promise <<<"$entry"
  if [ "$force" = 0 ] && "$DOCKER_CLI" image inspect "$image" >/dev/null 2>&1; then
    echo "present: $image"
    continue
  fi
  make_rootfs "$name" "$include" "$promise"
  start=$SECONDS
  "$DOCKER_CLI" import \
    --change "ENV $BASE_PATH" \
    --change "ENV LANG=C.UTF-8" \
    --change 'CMD ["bash"]' \
    --message "debootstrap --variant=minbase $SUITE ($name), scripts/make-base-image.sh" \
    "$CACHE_DIR/$SUITE-$name-rootfs.tar" "$image" >/dev/null
  echo "imported $image in $((SECONDS - start)) s"
done
