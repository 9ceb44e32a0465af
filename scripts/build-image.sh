#!/usr/bin/env bash
# Builds images from this repo's Dockerfiles without a Docker engine (buildah, vfs storage,
# chroot isolation) and smoke-tests each one. Makes the local base image first if it is missing
# (scripts/make-base-image.sh).
#
#   scripts/build-image.sh [proxy] [backend-python]      (default: proxy)
#
#   proxy           session-sidecar:dev from ./Dockerfile: the CLI runs (--help, keygen) and
#                   accepts config/compose.yaml; `serve` answers the image's own HEALTHCHECK
#                   (once proxy/server.py exists; SIDECAR_IMAGE_SERVE=0 skips, =1 requires it).
#   backend-python  session-sidecar-backend-python:dev from examples/backends/python: app.py
#                   answers /healthz as docker-compose.yml's healthcheck asks it.
#   Both: not root, no compiler, no build leftovers; the image size is printed.
#
# Serving runs in a private network and PID namespace (unshare): nothing binds this machine's
# ports, and nothing outlives the check. node:20-slim and golang images cannot be made here, so
# the node and go backends are not built (tests/integration/test_container.py checks them).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE="docker.io/library/python:3.11-slim-bookworm"
BUILDAH=(buildah --storage-driver vfs)
RUN=("${BUILDAH[@]}" run --isolation chroot)
DUMMY_SECRET="build-image-smoke-test-not-a-real-secret-0123456789"
CONFIG_MOUNT="$PWD/config/compose.yaml:/etc/session-sidecar/proxy.yaml:ro"

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(proxy)
for target in "${targets[@]}"; do
  case "$target" in
    proxy | backend-python) ;;
    *) echo "usage: $0 [proxy] [backend-python]" >&2; exit 2 ;;
  esac
done

for tool in buildah unshare ip python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "!!! $tool not found: run 'make deps' (Debian packages: buildah debootstrap)." >&2
    exit 1
  fi
done

step() { printf '\n=== %s (t=%ss)\n' "$*" "$SECONDS"; }

# This machine reaches PyPI through a TLS-inspecting egress whose CA is in the host's bundle.
# Bind-mounting the bundle applies to RUN steps only: it is never part of a layer.
BUILD_VOLUMES=()
if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
  BUILD_VOLUMES+=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi

# build IMAGE CONTEXT: bud, then drop the image this tag named before, so vfs does not fill up.
build() {
  local image="$1" context="$2" old_id new_id
  old_id="$("${BUILDAH[@]}" images --noheading --quiet "$image" 2>/dev/null || true)"
  # --format docker: the OCI image format has no HEALTHCHECK and would silently drop it.
  "${BUILDAH[@]}" bud --isolation chroot --pull-never --format docker "${BUILD_VOLUMES[@]}" \
    -t "$image" "$context"
  new_id="$("${BUILDAH[@]}" images --noheading --quiet "$image")"
  if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    "${BUILDAH[@]}" rmi "$old_id" >/dev/null 2>&1 || true
  fi
}

# check_contents CTR: not root, no compiler, no pip cache, no build leftovers.
check_contents() {
  local ctr="$1" uid
  uid="$("${RUN[@]}" "$ctr" -- id -u)"
  echo "runs as uid $uid"
  [ "$uid" != "0" ] || { echo "!!! the image runs as root" >&2; return 1; }
  # shellcheck disable=SC2016
  "${RUN[@]}" --user 0:0 "$ctr" -- sh -c '
    found=0
    for tool in gcc cc c++ g++ clang make; do
      if command -v "$tool" >/dev/null 2>&1; then echo "!!! $tool is in the image" >&2; found=1; fi
    done
    for path in /root/.cache/pip /wheels /src; do
      if [ -e "$path" ]; then echo "!!! $path is in the image" >&2; found=1; fi
    done
    exit "$found"'
  echo "no compiler, no pip cache, no build leftovers"
}

# serve_and_probe CTR SERVE PROBE [buildah run options for SERVE...]: runs the shell command
# SERVE in the container and PROBE beside it until PROBE passes (10 s at most). PROBE must
# fail before SERVE starts, or it would prove nothing.
serve_and_probe() {
  local ctr="$1" serve="$2" probe="$3"
  shift 3
  # shellcheck disable=SC2016
  unshare --net --pid --fork -- bash -c '
    set -u
    ctr=$1 serve=$2 probe=$3
    shift 3
    run() { buildah --storage-driver vfs run --isolation chroot "$@"; }
    ip link set lo up
    if run "$ctr" -- sh -c "$probe" >/dev/null 2>&1; then
      echo "!!! the probe passed with nothing serving: $probe" >&2
      exit 1
    fi
    run "$@" "$ctr" -- sh -c "$serve" &
    for _ in $(seq 50); do
      if run "$ctr" -- sh -c "$probe" 2>/dev/null; then
        echo "healthy: $probe"
        exit 0
      fi
      sleep 0.2
    done
    echo "!!! never healthy: $probe" >&2
    exit 1' bash "$ctr" "$serve" "$probe" "$@"
}

# The image's own HEALTHCHECK, as one shell command.
image_healthcheck() {
  "${BUILDAH[@]}" inspect --type image "$1" | python3 -c '
import json, shlex, sys
test = json.load(sys.stdin)["Docker"]["config"]["Healthcheck"]["Test"]
assert test[0] == "CMD", test
print(shlex.join(test[1:]))'
}

smoke_proxy() {
  local image="$1" ctr="$2" key probe
  step "smoke: CLI"
  "${RUN[@]}" "$ctr" -- session-sidecar --help >/dev/null
  key="$("${RUN[@]}" "$ctr" -- session-sidecar keygen)"
  [ "${#key}" -ge 32 ] || { echo "!!! keygen printed a short key: ${#key} chars" >&2; return 1; }
  echo "keygen: ${#key} chars"
  "${RUN[@]}" --env SESSION_SECRET="$DUMMY_SECRET" --volume "$CONFIG_MOUNT" \
    "$ctr" -- session-sidecar check-config -c /etc/session-sidecar/proxy.yaml

  step "smoke: serve + HEALTHCHECK"
  if [ "${SIDECAR_IMAGE_SERVE:-}" = "0" ]; then
    echo "!!! NOT RUN: SIDECAR_IMAGE_SERVE=0"
  elif ! "${RUN[@]}" "$ctr" -- python -c 'import proxy.server' >/dev/null 2>&1; then
    if [ "${SIDECAR_IMAGE_SERVE:-}" = "1" ]; then
      echo "!!! proxy.server is not in the image, and SIDECAR_IMAGE_SERVE=1 requires it" >&2
      return 1
    fi
    echo "!!! NOT RUN: proxy/server.py does not exist yet, so 'serve' cannot start"
  else
    probe="$(image_healthcheck "$image")"
    serve_and_probe "$ctr" "session-sidecar serve -c /etc/session-sidecar/proxy.yaml" "$probe" \
      --env SESSION_SECRET="$DUMMY_SECRET" --volume "$CONFIG_MOUNT"
  fi
}

smoke_backend_python() {
  local ctr="$1"
  step "smoke: app.py + /healthz"
  # The same command as docker-compose.yml's healthcheck for backend-python.
  serve_and_probe "$ctr" "python app.py" \
    "python -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:8001/healthz', timeout=2)\""
}

step "base image"
if ! "${BUILDAH[@]}" inspect --type image "$BASE" >/dev/null 2>&1; then
  bash scripts/make-base-image.sh
else
  echo "present: $BASE"
fi

for target in "${targets[@]}"; do
  case "$target" in
    proxy) image="${SIDECAR_IMAGE:-session-sidecar:dev}" context=. ;;
    backend-python) image="session-sidecar-backend-python:dev" context=examples/backends/python ;;
  esac
  step "build $image from $context"
  build "$image" "$context"
  ctr="$("${BUILDAH[@]}" from --pull-never "$image")"
  trap '"${BUILDAH[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
  case "$target" in
    proxy) smoke_proxy "$image" "$ctr" ;;
    backend-python) smoke_backend_python "$ctr" ;;
  esac
  step "smoke: user and contents"
  check_contents "$ctr"
  "${BUILDAH[@]}" rm "$ctr" >/dev/null
  trap - EXIT
  echo "image size: $("${BUILDAH[@]}" images --format '{{.Size}}' "$image")  ($image)"
done

step "done in ${SECONDS}s"
