"""The servers ``make bench`` runs: one nginx backend and the proxies in front of it.

- the backend: nginx answering ``return 200`` (one worker), plus two helper locations: one
  whose response asks Apache's mod_session to set a session (so Apache issues its own cookie),
  and one that echoes the session headers a proxy handed on (so the harness can check that
  every proxy really decoded the session before it measures anything);
- ``nginx``: ``proxy_pass`` with a keep-alive upstream pool;
- ``sidecar``: this checkout's proxy (``python -m proxy`` with this repository first on
  ``PYTHONPATH``), ``log_format: json``, its access log written to /dev/null;
- ``bare``: scripts/bare_proxy.py, the floor of the sidecar's stack;
- ``apache``: Apache 2.4, event MPM, one process, mod_session + mod_session_cookie +
  mod_session_crypto, the decrypted session handed to the backend in ``X-Session``.

Every server runs in a session of its own, so that stopping it stops all of its processes, and
:func:`process_tree` finds them all for the CPU and memory figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
APACHE_MODULES = Path("/usr/lib/apache2/modules")
SECRET = "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz"  # noqa: S105 (throwaway)
#: Sidecar chunks: a 40 KB session takes about 9 of 4,000 bytes; the default allows 12.
MAX_CHUNKS = 16

_NGINX_COMMON = """
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    large_client_header_buffers 8 128k;
    client_header_buffer_size 64k;
    client_body_temp_path {tmp}/{name}-body;
    proxy_temp_path {tmp}/{name}-proxy;
    fastcgi_temp_path {tmp}/{name}-fastcgi;
    uwsgi_temp_path {tmp}/{name}-uwsgi;
    scgi_temp_path {tmp}/{name}-scgi;
    {http}
}}
"""

_BACKEND_HTTP = """
    server {{
        listen 127.0.0.1:{port};
        location = /bench/issue-apache-session {{
            add_header X-Replace-Session "{apache_pairs}";
            return 200 "ok\\n";
        }}
        location = /bench/echo-session {{
            return 200 "$http_x_session_status|$http_x_session";
        }}
        location / {{ return 200 "ok\\n"; }}
    }}
"""

_PROXY_HTTP = """
    proxy_buffer_size 64k;
    proxy_buffers 8 64k;
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
"""

#: One process (ServerLimit 1) of the event MPM; its threads serve the connections. The session
#: is decrypted on every request that carries one (mod_session_crypto has no cache) and handed to
#: the backend: SessionEnv puts it in HTTP_SESSION, RequestHeader copies it into X-Session.
_APACHE_CONF = """
ServerRoot {root}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {root}/httpd.pid
DefaultRuntimeDir {root}
ErrorLog {root}/error.log
LogLevel warn
{user}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule headers_module {modules}/mod_headers.so
LoadModule proxy_module {modules}/mod_proxy.so
LoadModule proxy_http_module {modules}/mod_proxy_http.so
LoadModule session_module {modules}/mod_session.so
LoadModule session_cookie_module {modules}/mod_session_cookie.so
LoadModule session_crypto_module {modules}/mod_session_crypto.so
ServerLimit 1
StartServers 1
ThreadLimit 64
ThreadsPerChild 64
MaxRequestWorkers 64
MinSpareThreads 1
MaxSpareThreads 64
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
LimitRequestFieldSize 65536
Session On
SessionCookieName session path=/;httponly
SessionCookieRemove On
SessionCryptoPassphrase {secret}
SessionEnv On
SessionHeader X-Replace-Session
RequestHeader set X-Session "%{{HTTP_SESSION}}e" env=HTTP_SESSION
ProxyPass "/" "http://127.0.0.1:{backend}/"
"""


@dataclass
class Server:
    """One running server: its name in the tables, its worker count, its port and process."""

    name: str
    workers: int
    port: int
    process: subprocess.Popen[bytes]
    #: The sidecar's configuration file (its codec is built from it), else None.
    config: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)


class Rig:
    """Starts servers in ``tmp`` and stops them all, process groups and all, on exit."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.servers: list[Server] = []
        self._log = (tmp / "servers.log").open("ab")

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *_: object) -> None:
        for server in reversed(self.servers):
            _signal_group(server.process, signal.SIGTERM)
        for server in self.servers:
            try:
                server.process.wait(10)
            except subprocess.TimeoutExpired:
                _signal_group(server.process, signal.SIGKILL)
                server.process.wait()
        self._log.close()

    def start(
        self,
        name: str,
        workers: int,
        port: int,
        command: list[str],
        *,
        cpu: str | None = None,
        **popen: object,
    ) -> Server:
        """Run ``command`` (pinned to ``cpu``, a ``taskset -c`` list) until it listens."""
        if cpu is not None:
            command = ["taskset", "-c", cpu, *command]
        popen.setdefault("stdout", self._log)
        process = subprocess.Popen(  # type: ignore[call-overload]
            command, stderr=self._log, start_new_session=True, **popen
        )
        server = Server(name, workers, port, process)
        self.servers.append(server)
        wait_port(port, process)
        return server

    def _nginx(self, name: str, workers: int, http: str, port: int, cpu: str | None) -> Server:
        conf = self.tmp / f"{name}.conf"
        common = _NGINX_COMMON.format(tmp=self.tmp, name=name, http=http)
        conf.write_text(f"worker_processes {workers};\n{common}")
        command = ["nginx", "-c", str(conf), "-g", "daemon off;"]
        return self.start("nginx", workers, port, command, cpu=cpu)

    def backend(self, apache_pairs: str, cpu: str | None) -> Server:
        port = free_port()
        http = _BACKEND_HTTP.format(port=port, apache_pairs=apache_pairs)
        return self._nginx("backend", 1, http, port, cpu)

    def nginx(self, backend: Server, workers: int, cpu: str | None) -> Server:
        port = free_port()
        http = _PROXY_HTTP.format(port=port, backend=backend.port)
        return self._nginx(f"nginx-{workers}w", workers, http, port, cpu)

    def sidecar(
        self,
        backend: Server,
        workers: int,
        cpu: str | None,
        source: Path = REPO,
        name: str = "sidecar",
    ) -> Server:
        port = free_port()
        config = self.tmp / f"{name.replace('/', '_')}-{workers}w.yaml"
        config.write_text(
            json.dumps(
                {
                    "listen": f"127.0.0.1:{port}",
                    "workers": workers,
                    "log_format": "json",
                    "secrets": [SECRET],
                    "cookie": {"secure": False, "max_chunks": MAX_CHUNKS},
                    "upstreams": [{"url": backend.url, "name": "app"}],
                }
            )
        )
        command = [sys.executable, "-m", "proxy", "serve", "-c", str(config)]
        env = {**os.environ, "PYTHONPATH": str(source)}
        # The access log is written, as deployed, and not kept.
        server = self.start(
            name,
            workers,
            port,
            command,
            cpu=cpu,
            cwd=source,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        server.config = config
        return server

    def bare(self, backend: Server, workers: int, cpu: str | None) -> Server:
        port = free_port()
        script = Path(__file__).with_name("bare_proxy.py")
        command = [sys.executable, str(script), str(port), str(backend.port), str(workers)]
        return self.start("bare", workers, port, command, cpu=cpu)

    def apache(self, backend: Server, cpu: str | None) -> Server:
        port = free_port()
        root = self.tmp / "apache"
        root.mkdir()
        # As root, Apache must switch to another user for its child (Debian's www-data).
        user = "User www-data\nGroup www-data" if os.geteuid() == 0 else ""
        if user:
            shutil.chown(root, "www-data", "www-data")
        conf = root / "httpd.conf"
        conf.write_text(
            _APACHE_CONF.format(
                root=root,
                port=port,
                backend=backend.port,
                user=user,
                modules=APACHE_MODULES,
                secret=SECRET,
            )
        )
        command = ["apache2", "-f", str(conf), "-DFOREGROUND"]
        return self.start("apache", 1, port, command, cpu=cpu)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout:.0f}s: {process.args}")


# --- what the servers cost: /proc (proc(5)) -------------------------------------------------


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (nginx's workers, the sidecar's, Apache's child)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_times(pids: list[int]) -> dict[int, float]:
    """utime + stime of each process in seconds (proc(5) stat fields 14 and 15)."""
    ticks = os.sysconf("SC_CLK_TCK")
    times = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        times[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return times


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two samples; a process born in between counts from zero."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot, steal included (proc(5) /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pids: list[int]) -> bool:
    """Restart each process's VmHWM from its present RSS (proc(5) clear_refs, value 5)."""
    try:
        for pid in pids:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False  # not ours to reset: the peak is then the process's lifetime peak
    return True


def peak_rss_mib(pids: list[int]) -> float:
    """The sum of the processes' VmHWM, in MiB."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total / 1024
