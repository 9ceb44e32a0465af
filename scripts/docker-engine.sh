#!/usr/bin/env bash
# A private Docker engine for this project's tests and demo: Debian's dockerd (docker.io) with
# its own data root, exec root, socket and daemon config, so it never touches (or is touched by)
# a Docker the machine may already run, and with no bridge networking at all: no docker0, no
# iptables rules, no forwarding. Containers are meant to use the host's network bound to
# 127.0.0.1, or to share one another's namespace, as tests/integration/docker-compose.loopback.yml
# has them do; nothing here stops a user-defined network, so test_docker_engine.py asserts that
# `docker network ls` never lists more than Docker's own "host" and "none".
#
#   scripts/docker-engine.sh start    start it unless it already answers (idempotent)
#   scripts/docker-engine.sh stop     stop it (its containers stop with it); no-op if not running
#   scripts/docker-engine.sh status   exit 0 and print versions if it answers, 3 if not
#   scripts/docker-engine.sh env      print the DOCKER_HOST line for `eval`
#
# Then: export DOCKER_HOST=unix:///run/session-sidecar-docker.sock (or `eval "$(... env)"`).
#
#   SIDECAR_DOCKER_DATA_ROOT       images, containers, volumes (default /var/lib/session-sidecar-docker)
#   SIDECAR_DOCKER_EXEC_ROOT       pid file, containerd state (default /run/session-sidecar-docker)
#   SIDECAR_DOCKER_SOCKET          API socket (default /run/session-sidecar-docker.sock)
#   SIDECAR_DOCKER_STORAGE_DRIVER  overlay2 if an overlay mount works on the data root, else vfs
#   SIDECAR_DOCKER_START_TIMEOUT   seconds to wait for the API (default 60)
#
# Needs root (dockerd does).
set -euo pipefail

DATA_ROOT="${SIDECAR_DOCKER_DATA_ROOT:-/var/lib/session-sidecar-docker}"
EXEC_ROOT="${SIDECAR_DOCKER_EXEC_ROOT:-/run/session-sidecar-docker}"
SOCKET="${SIDECAR_DOCKER_SOCKET:-/run/session-sidecar-docker.sock}"
START_TIMEOUT="${SIDECAR_DOCKER_START_TIMEOUT:-60}"
PIDFILE="$EXEC_ROOT/dockerd.pid"
LOG="$DATA_ROOT/dockerd.log"
# Debian's own client: the same release (and API 1.41) as Debian's dockerd, and it runs BuildKit
# builds itself, where a newer client on PATH would need the buildx plugin for them.
DOCKER_CLI="${SIDECAR_DOCKER_CLI:-/usr/bin/docker}"

die() {
  echo "!!! docker-engine: $*" >&2
  exit 1
}

docker_cli() {
  DOCKER_HOST="unix://$SOCKET" "$DOCKER_CLI" "$@"
}

answers() {
  [ -S "$SOCKET" ] && docker_cli version --format '{{.Server.Version}}' >/dev/null 2>&1
}

running_pid() {
  local pid
  [ -s "$PIDFILE" ] || return 1
  pid="$(cat "$PIDFILE")"
  [ -d "/proc/$pid" ] && grep -q dockerd "/proc/$pid/comm" 2>/dev/null || return 1
  echo "$pid"
}

# overlay2 needs an overlay mount (with d_type) on the data root's filesystem; try one rather
# than guess from the filesystem's name.
storage_driver() {
  if [ -n "${SIDECAR_DOCKER_STORAGE_DRIVER:-}" ]; then
    echo "$SIDECAR_DOCKER_STORAGE_DRIVER"
    return
  fi
  local probe ok=1
  probe="$(mktemp -d "$DATA_ROOT/overlay-probe.XXXXXX")"
  mkdir -p "$probe/lower" "$probe/upper" "$probe/work" "$probe/merged"
  if mount -t overlay overlay \
    -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" "$probe/merged" \
    2>/dev/null; then
    umount "$probe/merged"
    ok=0
  fi
  rm -rf "$probe"
  if [ "$ok" = 0 ]; then echo overlay2; else echo vfs; fi
}

start() {
  if answers; then
    echo "docker engine already answers on unix://$SOCKET"
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "dockerd needs root (run as root, as .ci/run does)"
  command -v dockerd >/dev/null 2>&1 || die "dockerd not found: run 'make deps' (Debian package docker.io)"
  [ -x "$DOCKER_CLI" ] || die "$DOCKER_CLI not found: run 'make deps' (Debian package docker.io)"
  if pid="$(running_pid)"; then
    die "dockerd (pid $pid) runs but does not answer on $SOCKET: see $LOG, or '$0 stop'"
  fi
  mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
  rm -f "$PIDFILE" "$SOCKET"
  local driver
  driver="$(storage_driver)"
  [ "$driver" = overlay2 ] || echo "overlay mounts fail on $DATA_ROOT: storage driver $driver (slow, large)"
  # An empty config file of our own: /etc/docker/daemon.json, if the machine has one, is for
  # the machine's engine and must not change this one.
  echo '{}' >"$EXEC_ROOT/daemon.json"
  # setsid: dockerd outlives this script and is not in the caller's process group, so a test
  # runner's Ctrl-C does not take it down mid-build; `stop` ends it.
  setsid dockerd \
    --config-file "$EXEC_ROOT/daemon.json" \
    --data-root "$DATA_ROOT" \
    --exec-root "$EXEC_ROOT" \
    --pidfile "$PIDFILE" \
    --host "unix://$SOCKET" \
    --storage-driver "$driver" \
    --bridge=none --iptables=false --ip-masq=false --ip-forward=false --ip6tables=false \
    --userland-proxy=false \
    --log-driver json-file \
    >>"$LOG" 2>&1 </dev/null &
  local deadline=$((SECONDS + START_TIMEOUT))
  until answers; do
    if ! kill -0 $! 2>/dev/null; then
      tail -n 30 "$LOG" >&2
      die "dockerd exited while starting (log above, all of it in $LOG)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$LOG" >&2
      die "dockerd did not answer on $SOCKET within ${START_TIMEOUT}s (log in $LOG)"
    fi
    sleep 0.2
  done
  echo "docker engine started: pid $(cat "$PIDFILE"), unix://$SOCKET, storage $driver, data $DATA_ROOT"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    echo "docker engine not running"
    rm -f "$SOCKET"
    return 0
  fi
  kill -TERM "$pid"
  # dockerd stops its containers (10 s each by default, in parallel) and its containerd.
  for _ in $(seq 300); do
    [ -d "/proc/$pid" ] || { echo "docker engine stopped"; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  die "dockerd (pid $pid) did not stop within 30 s: killed"
}

status() {
  if answers; then
    docker_cli version --format 'client {{.Client.Version}} (API {{.Client.APIVersion}}), server {{.Server.Version}} (API {{.Server.APIVersion}})'
    docker_cli info --format 'storage {{.Driver}}, root {{.DockerRootDir}}'
    return 0
  fi
  echo "docker engine does not answer on unix://$SOCKET"
  return 3
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export DOCKER_HOST=unix://$SOCKET" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
