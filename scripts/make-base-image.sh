#!/usr/bin/env bash
# Makes a local stand-in for the Dockerfile's base image, python:3.11-slim-bookworm, without a
# registry: debootstrap a Debian bookworm rootfs with Debian's python3.11 + pip + venv, then
# `buildah from scratch`, add the rootfs, commit under the base's name (vfs storage, no daemon).
#
# The stand-in is not the upstream image: Python is Debian's 3.11.2 in /usr/bin (symlinked from
# /usr/local/bin like upstream's layout), and its pip refuses system installs (PEP 668). The
# Dockerfile installs into a venv, which works on both.
#
# The rootfs tarball is cached outside the repo, so only the first run pays for debootstrap.
#   SIDECAR_CACHE_DIR      cache directory (default /var/cache/session-sidecar)
#   SIDECAR_DEBIAN_MIRROR  Debian mirror (default: the one apt's sources already use)
#   --force                rebuild the image (and, with --refresh, the cached rootfs too)
set -euo pipefail

BASE_NAME="docker.io/library/python:3.11-slim-bookworm"
SUITE="bookworm"
PACKAGES="python3,python3-venv,python3-pip,ca-certificates"
CACHE_DIR="${SIDECAR_CACHE_DIR:-/var/cache/session-sidecar}"
TARBALL="$CACHE_DIR/$SUITE-python3-rootfs.tar.gz"
BUILDAH=(buildah --storage-driver vfs)

force=0
refresh=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --refresh) force=1; refresh=1 ;;
    *) echo "usage: $0 [--force] [--refresh]" >&2; exit 2 ;;
  esac
done

for tool in buildah debootstrap; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "!!! $tool not found: run 'make deps' (Debian packages: buildah debootstrap)." >&2
    exit 1
  fi
done

if [ "$force" = 0 ] && "${BUILDAH[@]}" inspect --type image "$BASE_NAME" >/dev/null 2>&1; then
  echo "base image $BASE_NAME already present"
  exit 0
fi

# The first Debian archive URI that apt is configured with (deb822 .sources or one-line format).
debian_mirror() {
  local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
  cat "${files[@]}" 2>/dev/null \
    | grep -v '^[[:space:]]*#' \
    | grep -Eo 'https?://[^ ]+/debian/?( |$)' \
    | head -n 1 \
    | tr -d ' ' || true
}

mkdir -p "$CACHE_DIR"
if [ "$refresh" = 1 ] || [ ! -s "$TARBALL" ]; then
  mirror="${SIDECAR_DEBIAN_MIRROR:-$(debian_mirror)}"
  mirror="${mirror:-http://deb.debian.org/debian}"
  rootfs="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs"' EXIT
  echo "debootstrap $SUITE from $mirror (a few minutes; cached afterwards in $TARBALL)"
  start=$SECONDS
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$mirror" \
    >"$CACHE_DIR/debootstrap.log" 2>&1 \
    || { tail -n 30 "$CACHE_DIR/debootstrap.log" >&2; exit 1; }
  echo "debootstrap took $((SECONDS - start)) s"

  # Upstream's layout: python, python3 and pip on PATH from /usr/local/bin.
  ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python3"
  ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python"
  ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip3"
  ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip"
  # Slim like upstream: no package cache, no apt lists, no docs.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*

  tar -C "$rootfs" --numeric-owner -czf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  rm -rf "$rootfs"
  trap - EXIT
fi

ctr="$("${BUILDAH[@]}" from scratch)"
trap '"${BUILDAH[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
"${BUILDAH[@]}" add --quiet "$ctr" "$TARBALL" /
"${BUILDAH[@]}" config \
  --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 \
  --cmd python3 \
  --label org.opencontainers.image.description="local stand-in for python:3.11-slim-bookworm (debootstrap, Debian python3.11)" \
  "$ctr"
old_id="$("${BUILDAH[@]}" images --noheading --quiet "$BASE_NAME" 2>/dev/null || true)"
"${BUILDAH[@]}" commit --quiet --rm "$ctr" "$BASE_NAME" >/dev/null
trap - EXIT
if [ -n "$old_id" ]; then
  "${BUILDAH[@]}" rmi "$old_id" >/dev/null 2>&1 || true
fi
echo "committed $BASE_NAME"
