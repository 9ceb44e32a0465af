#!/usr/bin/env bash
# Builds this repo's four images with `docker build` (BuildKit) under the names
# docker-compose.yml gives them, on the engine DOCKER_HOST names (scripts/docker-engine.sh).
#
#   scripts/build-image.sh [--local-bases] [proxy] [backend-python] [backend-node] [backend-go]
#
#   (no target)     all four
#   --local-bases   no registry: make the Debian stand-ins first (scripts/make-base-image.sh)
#                   and build on them through the Dockerfiles' *_IMAGE build arguments
#
# Prints "built IMAGE in N s" for each. Then `docker-compose up --no-build` runs them.
#
# Builds use the host's network (`--network host`): the engine this project starts has no
# bridge for a build container to sit on. pip in the proxy and Python backend builds reaches
# PyPI; the host's CA bundle goes in as the pip-ca build secret, mounted for those RUN steps only
# (never in a layer), for egress that inspects TLS. SIDECAR_PIP_CA names another bundle.
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER_CLI="${SIDECAR_DOCKER_CLI:-/usr/bin/docker}"
PIP_CA="${SIDECAR_PIP_CA:-/etc/ssl/certs/ca-certificates.crt}"

local_bases=0
targets=()
for arg in "$@"; do
  case "$arg" in
    --local-bases) local_bases=1 ;;
    proxy | backend-python | backend-node | backend-go) targets+=("$arg") ;;
    *) echo "usage: $0 [--local-bases] [proxy] [backend-python] [backend-node] [backend-go]" >&2; exit 2 ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(proxy backend-python backend-node backend-go)

[ -x "$DOCKER_CLI" ] || { echo "!!! $DOCKER_CLI not found: run 'make deps' (Debian package docker.io)" >&2; exit 1; }

if [ "$local_bases" = 1 ]; then
  bash scripts/make-base-image.sh
fi

common=(--network host)
if [ -s "$PIP_CA" ]; then
  common+=(--secret "id=pip-ca,src=$PIP_CA")
fi
# Docker's predefined proxy arguments: used by RUN steps, kept out of the image's history.
for var in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
  if [ -n "${!var:-}" ]; then common+=(--build-arg "$var"); fi
done

for target in "${targets[@]}"; do
  args=()
  case "$target" in
    proxy)
      image=session-sidecar:dev context=.
      args=(--build-arg PYTHON_IMAGE=session-sidecar-base/python:3.11-bookworm) ;;
    backend-python)
      image=session-sidecar-backend-python:dev context=examples/backends/python
      args=(--build-arg PYTHON_IMAGE=session-sidecar-base/python:3.11-bookworm) ;;
    backend-node)
      image=session-sidecar-backend-node:dev context=examples/backends/node
      args=(--build-arg NODE_IMAGE=session-sidecar-base/node:18-bookworm) ;;
    backend-go)
      image=session-sidecar-backend-go:dev context=examples/backends/go
      args=(--build-arg GO_IMAGE=session-sidecar-base/golang:1.19-bookworm
        --build-arg RUNTIME_IMAGE=session-sidecar-base/debian:bookworm) ;;
  esac
  [ "$local_bases" = 1 ] || args=()
  start=$SECONDS
  DOCKER_BUILDKIT=1 "$DOCKER_CLI" build --progress plain "${common[@]}" "${args[@]}" \
    -t "$image" "$context"
  echo "built $image in $((SECONDS - start)) s"
done
