#!/usr/bin/env bash
# Installs the Debian tools that the integration tests and benchmarks drive: Node.js (backend),
# Go (backend), nginx + apache2 + wrk + hey (the bench's peers and load generators), Chromium
# (browser test), docker-compose v1 (compose validation), debootstrap (base images from a Debian
# rootfs), iproute2 (network namespaces), docker.io (a real engine), haproxy + caddy (front
# proxies), php-fpm + puma (backend servers).
# Idempotent; does nothing when all are present.
set -euo pipefail

need=()
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v go >/dev/null 2>&1 || need+=(golang-go)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v hey >/dev/null 2>&1 || need+=(hey)
# Apache 2.4 with mod_session, mod_session_cookie and mod_session_crypto: the bench's peer.
command -v apache2 >/dev/null 2>&1 || need+=(apache2)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# A real Docker engine (dockerd 20.10, run by scripts/docker-engine.sh with no bridge network).
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
# Front proxies and backend servers the deployment tests put around the proxy.
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v caddy >/dev/null 2>&1 || need+=(caddy)
command -v php-fpm8.2 >/dev/null 2>&1 || need+=(php-fpm php-cli)
command -v puma >/dev/null 2>&1 || need+=(puma ruby ruby-webrick)
for extra in ${SIDECAR_EXTRA_DEBS:-}; do need+=("$extra"); done

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "!!! WARNING: missing system tools: ${need[*]} (not root or no apt-get)." >&2
  echo "!!! The tests that need them will FAIL, not skip. Install them and re-run." >&2
  exit 0
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q "${need[@]}" >/dev/null
