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
# Debian's nodejs comes without npm (NodeSource's has it): the Express adapter test packs with it.
command -v npm >/dev/null 2>&1 || need+=(npm)
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
  echo "!!! The tests that need them will FAIL, not skip. Install them and re-run, or run" >&2
  echo "!!! 'make test-subset' for only the tests that need neither root nor these packages." >&2
  exit 0
fi

# apt's own output is long, so it goes to a log shown only on failure; one line says what runs
# and how long it usually takes (a fresh Debian 12 on 2 cores: all of the packages above and
# about 190 dependencies, 1.3 GB installed).
log="$(mktemp -t session-sidecar-apt.XXXXXX.log)"
apt_step() {
  local start=$SECONDS
  if ! "$@" >>"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "!!! '$*' failed (all of its output: $log)" >&2
    exit 1
  fi
  echo "    done in $((SECONDS - start)) s"
}
# Name=version per line, sorted bytewise, before and after apt: what it installed and upgraded.
packages() {
  dpkg-query -W -f '${db:Status-Abbrev}${binary:Package}=${Version}\n' | sed -n 's/^ii *//p' \
    | LC_ALL=C sort
}
names() { cut -d= -f1 | LC_ALL=C sort -u; }

export DEBIAN_FRONTEND=noninteractive
before="$(packages)"
echo "[make deps] apt-get update: the package lists (usually under 30 s)"
apt_step apt-get update -q
echo "[make deps] apt-get install ${need[*]}, and their dependencies (usually 40 to 80 s, 1.3 GB on a fresh machine)"
apt_step apt-get install -y -q "${need[@]}"
after="$(packages)"
changed="$(LC_ALL=C comm -13 <(echo "$before") <(echo "$after") | names)"
new_names="$(LC_ALL=C comm -23 <(echo "$changed") <(echo "$before" | names))"
upgraded=$(LC_ALL=C comm -12 <(echo "$changed") <(echo "$before" | names) | grep -c . || true)
# What was asked for and is new (a package asked for along with another may have been here):
# removing these, then what only they needed, undoes the install; upgrades stay.
asked="$(printf '%s\n' "${need[@]}" | LC_ALL=C sort -u)"
removable="$(LC_ALL=C comm -12 <(echo "$asked") <(echo "$new_names" | sed 's/:.*//' | LC_ALL=C sort -u) | xargs)"
echo "[make deps] apt installed $(echo "$new_names" | grep -c . || true) packages and upgraded $upgraded (each listed in /var/log/apt/history.log)"
echo "[make deps] to remove them: apt-get remove --purge ${removable:-<none>} && apt-get autoremove --purge"
rm -f "$log"
