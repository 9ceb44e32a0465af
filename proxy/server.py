"""The server: sockets, workers, signals, reload and graceful shutdown.

``workers: 1`` runs everything in this process. ``workers: N`` (0 = one per CPU) makes this
process a supervisor: it binds the port once, starts N worker processes that inherit that one
listening socket and accept from it, serves the admin endpoints itself, forwards SIGHUP and
SIGTERM, and restarts a worker that dies.

The port is never bound with SO_REUSEPORT, so a second instance on a busy port fails with
"address already in use" instead of silently taking part of the traffic with another
configuration and other secrets.

Signals: SIGTERM/SIGINT stop accepting, let in-flight requests finish for up to
``shutdown_timeout`` seconds, then exit 0. SIGHUP reloads the configuration and secrets; a bad
new configuration is refused with a log line and the old one keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from proxy import log_output, metrics
from proxy.access_log import AccessLog, configure_logging
from proxy.admin import start_admin
from proxy.config import (
    Config,
    ConfigError,
    Limits,
    iter_summary,
    load_config,
    session_limit_problems,
)
from proxy.config_secrets import development_secret_warning
from proxy.metrics import RequestMetrics
from proxy.proxy_connection import ProxyServer
from proxy.proxy_state import ProxyState, codec_from_config
from proxy.request_record import RequestRecord
from proxy.session_codec import SessionCodec
from proxy.upstream_connection import UpstreamPool

log = logging.getLogger("session_sidecar.server")

WORKER_ENV = "SESSION_SIDECAR_WORKER"
#: The supervisor's pid, so a worker can tell whether it is still there.
SUPERVISOR_PID_ENV = "SESSION_SIDECAR_SUPERVISOR_PID"
#: <linux/prctl.h>: deliver a signal to this process when its parent dies.
_PR_SET_PDEATHSIG = 1
#: The supervisor's listening socket, as a file descriptor number its workers inherit.
LISTEN_FD_ENV = "SESSION_SIDECAR_LISTEN_FD"
ALLOW_PY_PARSER_ENV = "SESSION_SIDECAR_ALLOW_PY_PARSER"
#: Signals a worker handles. It starts with them blocked (see ``_spawn_worker``) and unblocks
#: them once its handlers are in place, so one that arrives while it boots is not fatal.
_WORKER_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
#: File descriptors a worker keeps beside its client connections: the listening and admin
#: sockets, the event loop's own, log and metrics files, and what libraries open.
RESERVED_FDS = 64


def serve(config: Config, config_file: str) -> int:
    """Run the proxy until a stop signal; return the exit code."""
    configure_logging(config.log_format)
    if not _c_parser_available() and os.environ.get(ALLOW_PY_PARSER_ENV) != "1":
        log.error(
            "aiohttp's C HTTP parser is not available (pure-Python install or "
            "AIOHTTP_NO_EXTENSIONS set); refusing to start. Set %s=1 to run slowly anyway.",
            ALLOW_PY_PARSER_ENV,
        )
        return 1
    _install_uvloop()
    fd_limit = raise_fd_limit()  # workers inherit it
    if os.environ.get(WORKER_ENV) != "1":  # once, not once per worker
        for warning in config.warnings:
            log.warning("configuration: %s", warning)
        loud = development_secret_warning(config.secrets)
        if loud:
            log.warning("%s", loud)
        wanted = config.limits.max_connections
        if wanted and 2 * wanted + RESERVED_FDS > fd_limit:
            log.warning(
                "limits.max_connections %d can need %d file descriptors, more than the %d "
                "RLIMIT_NOFILE allows; past about %d connections a worker, new clients may be "
                "refused by the kernel",
                wanted,
                2 * wanted + RESERVED_FDS,
                fd_limit,
                default_max_connections(fd_limit),
            )
    workers = config.workers or os.cpu_count() or 1
    if os.environ.get(WORKER_ENV) == "1":
        _stop_with_supervisor()
    try:
        if os.environ.get(WORKER_ENV) == "1" or workers == 1:
            admin = os.environ.get(WORKER_ENV) != "1"
            return asyncio.run(_run_worker(config, config_file, with_admin=admin))
        return asyncio.run(_run_supervisor(config, config_file, workers))
    finally:
        log_output.close_all()  # what a stalled reader left queued: one last, bounded try


def _stop_with_supervisor() -> None:
    """Have the kernel send this worker SIGTERM when its supervisor dies (Linux prctl).

    SIGTERM is still blocked here (see ``_spawn_worker``), so it waits for the handler and
    becomes a graceful stop. A supervisor already gone is noticed by the parent pid.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if os.environ.get(SUPERVISOR_PID_ENV) not in (None, str(os.getppid())):
        os.kill(os.getpid(), signal.SIGTERM)


def _c_parser_available() -> bool:
    from aiohttp import http_parser

    return http_parser.HttpRequestParser.__module__ != "aiohttp.http_parser"


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one, as nginx's ``worker_rlimit_nofile`` and
    Go's runtime do, and return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # a hard limit of "unlimited" that the kernel caps
            log.warning("cannot raise RLIMIT_NOFILE from %d to %d: %s", soft, hard, exc)
    return soft


def default_max_connections(fd_limit: int) -> int:
    """The default limits.max_connections: each client connection may hold an upstream
    connection too, so half of what RESERVED_FDS leaves of the fd limit."""
    return max(1, (fd_limit - RESERVED_FDS) // 2)


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        log.info("uvloop not installed; using the default asyncio event loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# --- the worker -----------------------------------------------------------------------------


def _listen_socket(config: Config) -> socket.socket:
    """The supervisor's socket if this is one of its workers, else a newly bound one."""
    inherited = os.environ.get(LISTEN_FD_ENV)
    if inherited is not None:
        sock = socket.socket(fileno=int(inherited))
    else:
        host, port = config.listen.host, config.listen.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        # SO_REUSEADDR only lets a restart bind past connections in TIME_WAIT; on Linux it
        # never lets two live listeners share a port. SO_REUSEPORT would, so it is not set.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
    sock.setblocking(False)
    return sock


class Worker:
    """One serving process: the listening socket, the handler and the reload logic."""

    def __init__(self, config: Config, config_file: str) -> None:
        self.config = config
        self.config_file = config_file
        #: The limits the parsers were built with: a reload does not change them.
        self.limits = config.limits
        limit = config.limits.max_header_bytes
        max_connections = config.limits.max_connections or default_max_connections(
            resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        )
        self.access_log = AccessLog(config.log_format)
        self.metrics = RequestMetrics()
        self.pool = UpstreamPool(max_line_size=limit, max_field_size=limit, max_head_size=limit)
        codec = codec_from_config(config)
        metrics.set_key_ids(_key_ids(codec))
        self.proxy = ProxyServer(
            ProxyState.build(config, codec),
            self.pool,
            self._observe,
            max_line_size=config.limits.max_line_bytes,
            max_field_size=limit,
            idle_timeout=config.limits.idle_timeout,
            body_timeout=config.limits.body_timeout,
            max_head_size=config.limits.max_request_head_bytes,
            max_connections=max_connections,
        )
        self.metrics.watch(self.proxy.load)

    def _observe(self, record: RequestRecord) -> None:
        self.access_log(record)
        self.metrics(record)

    def reload(self) -> None:
        try:
            config = load_within(self.config_file, (self.limits,))
        except ConfigError as exc:
            log.error(
                "reload refused, keeping the running configuration: %s",
                "; ".join(exc.errors),
            )
            metrics.count_reload("refused")
            return
        if config.listen != self.config.listen or config.limits != self.limits:
            log.warning("listen and limits changes take effect only after a restart")
        codec = codec_from_config(config)
        self.proxy.state = ProxyState.build(config, codec)
        metrics.count_reload("ok", _key_ids(codec))
        self.access_log = AccessLog(config.log_format)
        self.config = config
        log.info("configuration reloaded from %s", self.config_file)

    async def shutdown(self) -> None:
        await self.proxy.shutdown(self.config.shutdown_timeout)
        self.pool.close()
        self.access_log.flush()


async def _run_worker(config: Config, config_file: str, with_admin: bool) -> int:
    loop = asyncio.get_running_loop()
    worker = Worker(config, config_file)
    # The handlers exist before the port listens: once a client (or an orchestrator) can see
    # the port, a SIGTERM is a graceful stop, never the default kill.
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, worker.reload)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _WORKER_SIGNALS)
    try:
        sock = _listen_socket(config)
    except OSError as exc:
        log.error("cannot listen on %s: %s", config.listen, exc.strerror or exc)
        return 1
    listener = await loop.create_server(worker.proxy, sock=sock, backlog=2048)
    admin = await start_admin(lambda: worker.config) if with_admin else None
    log.info(
        "listening on %s (pid %d); up to %d client connections",
        config.listen,
        os.getpid(),
        worker.proxy.max_connections,
    )
    for line in iter_summary(config):  # shapes and counts only, never a secret
        log.debug("configuration: %s", line)
    await stop.wait()
    log.info("stopping: finishing in-flight requests (up to %gs)", config.shutdown_timeout)
    listener.close()
    await worker.shutdown()
    with contextlib.suppress(Exception):
        await listener.wait_closed()
    if admin is not None:
        await admin.cleanup()
    log.info("stopped")
    return 0


# --- the supervisor -------------------------------------------------------------------------


async def _run_supervisor(config: Config, config_file: str, workers: int) -> int:
    state = {"config": config}
    children: list[subprocess.Popen[Any]] = []
    # Signals are handled before the port listens (see _run_worker); a stop that comes while
    # the admin port binds means no worker is started at all.
    # The limits of every configuration a worker was started with: a reload must fit them all.
    spawned_limits = {config.limits}
    stopping = _handle_supervisor_signals(children, config_file, state, spawned_limits)
    metrics.set_key_ids(_key_ids(codec_from_config(config)))
    try:
        sock = _listen_socket(config)
    except OSError as exc:
        log.error("cannot listen on %s: %s", config.listen, exc.strerror or exc)
        return 1
    env = dict(os.environ)
    env[WORKER_ENV] = "1"
    env[LISTEN_FD_ENV] = str(sock.fileno())
    env[SUPERVISOR_PID_ENV] = str(os.getpid())
    metrics_dir = env.get("PROMETHEUS_MULTIPROC_DIR")
    owned_dir = None
    if not metrics_dir:
        owned_dir = tempfile.TemporaryDirectory(prefix="session-sidecar-metrics-")
        metrics_dir = env["PROMETHEUS_MULTIPROC_DIR"] = owned_dir.name
    else:
        # prometheus-client's multiprocess files from an earlier run would be counted again.
        for stale in Path(metrics_dir).glob("*.db"):
            stale.unlink(missing_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # Then the admin port: if it cannot be bound the process exits with no worker started.
    admin = await start_admin(lambda: state["config"])
    command = [sys.executable, "-m", "proxy", "serve", "-c", config_file]
    waiting: set[int] = set()
    try:
        if not stopping.is_set():
            # Synchronous: a signal's handler runs only after every worker is in the list.
            children.extend(_spawn_worker(command, env, sock) for _ in range(workers))
        waiting = await _supervise(
            children, command, env, sock, stopping, state, config_file, spawned_limits
        )
    finally:
        # Whatever ended the supervision, no worker outlives its supervisor.
        for child in children:
            if child.poll() is None:
                child.kill()
        codes = [c.wait() for c in children]
        for child in children:
            metrics.worker_exited(child.pid)
    if admin is not None:
        await admin.cleanup()
    sock.close()
    if owned_dir is not None:
        owned_dir.cleanup()
    # A slot left empty while the file was invalid holds a worker that died before the stop;
    # it was reported then, and does not make this graceful stop a failure.
    return 0 if all(code == 0 for i, code in enumerate(codes) if i not in waiting) else 1


def _handle_supervisor_signals(
    children: list[subprocess.Popen[Any]],
    config_file: str,
    state: dict[str, Config],
    spawned_limits: set[Limits],
) -> asyncio.Event:
    """Forward stop and reload signals to ``children``; the event is set on a stop."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def reload() -> None:
        try:
            config = load_within(config_file, spawned_limits)
        except ConfigError as exc:
            log.error(
                "reload refused, keeping the running configuration: %s", "; ".join(exc.errors)
            )
            metrics.count_reload("refused")
            return
        _reload_workers(children, state, config)

    def stop() -> None:
        stopping.set()
        _forward(children, signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    loop.add_signal_handler(signal.SIGHUP, reload)
    return stopping


def _forward(children: list[subprocess.Popen[Any]], sig: signal.Signals) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(sig)


def _reload_workers(
    children: list[subprocess.Popen[Any]], state: dict[str, Config], config: Config
) -> None:
    """Make ``config`` the running one and have every live worker reload the file."""
    state["config"] = config
    # Counted here, where /metrics is served: a worker refusing what this process took
    # (the file changed again in between) is only logged, by that worker.
    metrics.count_reload("ok", _key_ids(codec_from_config(config)))
    _forward(children, signal.SIGHUP)


async def _supervise(
    children: list[subprocess.Popen[Any]],
    command: list[str],
    env: dict[str, str],
    sock: socket.socket,
    stopping: asyncio.Event,
    state: dict[str, Config],
    config_file: str,
    spawned_limits: set[Limits],
) -> set[int]:
    """Restart workers that die and, on a stop, wait for them to finish; return the slots
    left empty because the file was invalid.

    A worker reads the configuration file when it starts. If the file no longer validates (a
    reload was refused, and the file left as it was), a new worker would only fail at once,
    and again every half second: the slot stays empty instead, with one log line, and gets
    its worker as soon as the file validates again. A file whose sessions the running
    workers' limits cannot carry is refused the same way: a new worker would serve sessions
    the others refuse.
    """
    loop = asyncio.get_running_loop()
    config = state["config"]
    log.info("supervising %d workers on %s (pid %d)", len(children), config.listen, os.getpid())
    waiting: set[int] = set()  # slots whose worker exited while the file was invalid
    while not stopping.is_set():
        for i, child in enumerate(children):
            code = child.poll()
            if code is None or stopping.is_set():
                continue
            if i not in waiting:
                log.error("worker %d exited with %s; restarting it", child.pid, code)
                metrics.worker_exited(child.pid)  # its memory, CPU and fd series go with it
            try:
                config = load_within(config_file, spawned_limits)
            except ConfigError as exc:
                if i not in waiting:
                    waiting.add(i)
                    log.error(
                        "not restarting it while %s is invalid (%s); it restarts once the "
                        "file validates",
                        config_file,
                        "; ".join(exc.errors),
                    )
                continue
            waiting.discard(i)
            if config != state["config"]:
                # The new worker reads the file as it is now. Workers on two configurations
                # would disagree on secrets, so the live ones reload it too (as on SIGHUP).
                log.warning("%s changed since it was loaded: reloading every worker", config_file)
                _reload_workers(children, state, config)
            spawned_limits.add(config.limits)
            children[i] = _spawn_worker(command, env, sock)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), 0.5)
    deadline = loop.time() + state["config"].shutdown_timeout + 5
    while any(c.poll() is None for c in children) and loop.time() < deadline:
        await asyncio.sleep(0.1)
    return waiting


def load_within(config_file: str, running: Iterable[Limits]) -> Config:
    """Load ``config_file`` for a reload: valid by itself, and with sessions that the limits
    the running parsers were built with can carry (only a restart changes those; applying the
    new cookie settings to the old parsers would refuse the sessions they allow).
    Raises :class:`ConfigError`."""
    config = load_config(config_file)
    problems = [
        problem
        for limits in running
        for problem in session_limit_problems(limits, config.cookie, config.session)
    ]
    if problems:
        raise ConfigError(
            [
                f"{problem} (these are the running limits: change them and restart)"
                for problem in dict.fromkeys(problems)
            ]
        )
    return config


def _key_ids(codec: SessionCodec) -> list[str]:
    """The key ids the codec derived from the secrets, newest first (never the secrets)."""
    return [key.kid for key in codec.keys.keys]


def _spawn_worker(
    command: list[str], env: dict[str, str], sock: socket.socket
) -> subprocess.Popen[Any]:
    # The child inherits the signal mask: it boots with these blocked, so a SIGTERM or SIGHUP
    # forwarded before its handlers exist waits for them instead of killing it.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _WORKER_SIGNALS)
    try:
        # Every worker accepts from the one inherited socket (the kernel queues connections
        # once and wakes one waiting worker per connection).
        return subprocess.Popen(command, env=env, pass_fds=(sock.fileno(),))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
