"""Real front proxies (nginx, HAProxy, Caddy) started in front of the sidecar for integration tests.

Each ``start_*`` writes a configuration into a fresh temporary directory (its own pid file, logs
and temporary paths; no system service is touched), listens with TLS on a free port of
127.0.0.1, offers HTTP/2 and HTTP/1.1 through ALPN, proxies to the sidecar over HTTP/1.1, and
returns once the port accepts connections. Extra directives are passed in as text, so a test
says exactly which setting it tries. :class:`CurlClient` is the client: curl over TLS with
HTTP/2, verifying the test's own self-signed certificate, with the cookie jar of
:class:`~tests.integration.proxy_client.CookieClient`.

A missing ``nginx``, ``haproxy``, ``caddy`` or ``curl`` is an error, never a skip:
``scripts/install-system-deps.sh`` installs them.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from multidict import CIMultiDict, CIMultiDictProxy

from tests.integration.backends import free_port
from tests.integration.certificates import make_certificate
from tests.integration.processes import ManagedProcess
from tests.integration.proxy_client import CookieClient, Reply, compact

FrontKind = Literal["nginx", "haproxy", "caddy"]
#: What curl offers: "2" (HTTP/2 through ALPN, HTTP/1.1 if refused) or "1.1" only.
HTTPVersion = Literal["2", "1.1"]

STARTUP_TIMEOUT: Final = 15.0
#: nginx logs the start of a refused header line, cookie value included: runs of token
#: characters this long are cut from any log a test shows.
_REDACT: Final = re.compile(r"[A-Za-z0-9_\-.~+/=]{24,}")
#: curl's own limit for one exchange; every test request is small and local.
REQUEST_TIMEOUT: Final = 20.0


class FrontStartError(RuntimeError):
    """A front proxy refused its configuration or did not listen in time."""


class CurlError(RuntimeError):
    """curl ended without a complete response (exit code and its own message)."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(f"curl exited {exit_code}: {message}")
        self.exit_code = exit_code
        self.message = message


def require_tool(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise FrontStartError(
            f"`{tool}` is not on PATH; scripts/install-system-deps.sh installs it"
        )
    return path


# --- TLS ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """A self-signed certificate for 127.0.0.1 and ``localhost``, and its key (PEM files)."""

    cert: Path
    key: Path

    @property
    def combined(self) -> Path:
        """Certificate then key in one file, as HAProxy's ``crt`` takes them."""
        return self.cert.with_name("combined.pem")


def make_tls_files(directory: Path) -> TLSFiles:
    """A self-signed certificate and key in ``directory``; clients trust it with ``--cacert``."""
    cert, key = make_certificate(directory)
    files = TLSFiles(cert, key)
    files.combined.write_bytes(cert.read_bytes() + key.read_bytes())
    return files


# --- the running front ----------------------------------------------------------------------


class RunningFront(ManagedProcess):
    """A started front proxy; ``output()`` is its error log (and anything it printed)."""

    stop_timeout = 5.0

    def __init__(
        self,
        kind: FrontKind,
        process: subprocess.Popen[bytes],
        port: int,
        workdir: Path,
        tls: TLSFiles,
        log_path: Path,
    ) -> None:
        super().__init__(process, log_path)
        self.kind: Final = kind
        self.port: Final = port
        self.url: Final = f"https://127.0.0.1:{port}"
        self.workdir: Final = workdir
        self.tls: Final = tls
        self._last_output: str | None = None

    def __repr__(self) -> str:
        return f"<RunningFront {self.kind} {self.url} pid={self.process.pid}>"

    def output(self) -> str:
        return self._last_output if self._last_output is not None else super().output()

    def log(self) -> str:
        """The error log with anything that may be a cookie value cut out, to show on failure."""
        return _REDACT.sub("<redacted>", self.output())

    def stop(self, timeout: float | None = None) -> int:
        code = super().stop(timeout)
        if self._last_output is None:
            self._last_output = super().output()  # the log outlives the removed temp dir
            shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def client(self, http: HTTPVersion = "2", source: str | None = None) -> CurlClient:
        return CurlClient(self.url, self.tls.cert, http, source)


def _workdir(kind: FrontKind) -> tuple[Path, TLSFiles]:
    workdir = Path(tempfile.mkdtemp(prefix=f"front-{kind}-"))
    return workdir, make_tls_files(workdir)


def _launch(
    kind: FrontKind, command: list[str], workdir: Path, tls: TLSFiles, port: int
) -> RunningFront:
    log_path = workdir / "front.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env={**os.environ, "HOME": str(workdir), "XDG_DATA_HOME": str(workdir / "data")},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    front = RunningFront(kind, process, port, workdir, tls, log_path)
    try:
        _wait_until_listening(front)
    except BaseException:
        front.stop()
        raise
    return front


def _wait_until_listening(front: RunningFront) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if front.process.poll() is not None:
            raise FrontStartError(
                f"{front.kind} exited with {front.process.returncode} at start:\n{front.output()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", front.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise FrontStartError(
        f"{front.kind} did not listen within {STARTUP_TIMEOUT:.0f} s:\n{front.output()}"
    )


# --- nginx ----------------------------------------------------------------------------------

#: What every nginx in these tests sets: HTTP/1.1 and keep-alive to the sidecar (nginx's
#: proxy_pass speaks HTTP/1.0 by default), and the forwarding headers the sidecar reads.
NGINX_LOCATION: Final = """\
            proxy_pass http://sidecar;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
"""


def nginx_config(
    workdir: Path, tls: TLSFiles, port: int, upstream_port: int, http_directives: str
) -> str:
    # As root, nginx's workers would switch to `nobody`, who cannot enter the 0700 temp dir.
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""\
# Written by tests/integration/front_proxies.py for one test run.
{user}
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/front.log info;
events {{ worker_connections 64; }}
http {{
    access_log {workdir}/access.log;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy_temp;
    fastcgi_temp_path {workdir}/fastcgi_temp;
    uwsgi_temp_path {workdir}/uwsgi_temp;
    scgi_temp_path {workdir}/scgi_temp;
{http_directives}
    upstream sidecar {{
        server 127.0.0.1:{upstream_port};
        keepalive 4;
    }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {tls.cert};
        ssl_certificate_key {tls.key};
        location / {{
{NGINX_LOCATION}        }}
    }}
}}
"""


def _nginx_files(upstream_port: int, http_directives: str) -> tuple[Path, TLSFiles, int, Path]:
    workdir, tls = _workdir("nginx")
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_config(workdir, tls, port, upstream_port, http_directives))
    return workdir, tls, port, conf


def _nginx_command(workdir: Path, conf: Path, *extra: str) -> list[str]:
    # -e: the error log before the configuration is read (the built-in one is stderr).
    return [
        require_tool("nginx"),
        "-p",
        str(workdir),
        "-c",
        str(conf),
        "-e",
        str(workdir / "front.log"),
        *extra,
    ]


def start_nginx(upstream_port: int, http_directives: str = "") -> RunningFront:
    """nginx on a free port, TLS and HTTP/2, in front of ``127.0.0.1:upstream_port``.

    ``http_directives`` go into the ``http`` block as written (empty: nginx's defaults).
    """
    workdir, tls, port, conf = _nginx_files(upstream_port, http_directives)
    command = _nginx_command(workdir, conf, "-g", "daemon off; master_process on;")
    return _launch("nginx", command, workdir, tls, port)


def check_nginx_config(http_directives: str) -> tuple[bool, str]:
    """``nginx -t`` on the configuration ``start_nginx`` would write: (accepted, its output)."""
    workdir, _, _, conf = _nginx_files(free_port(), http_directives)
    try:
        result = subprocess.run(
            _nginx_command(workdir, conf, "-t", "-q"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=STARTUP_TIMEOUT,
            check=False,
        )
        log = (workdir / "front.log").read_text(errors="replace")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result.returncode == 0, result.stderr + log


# --- the client -----------------------------------------------------------------------------


class CurlClient(CookieClient):
    """curl (over TLS, HTTP/2 offered with ALPN) with :class:`CookieClient`'s cookie jar.

    The Cookie header is sent as one header from that jar, not from curl's own jar, which
    sends at most 8190 bytes of cookies. Headers travel in a file (``-H @file``) so that no
    cookie value is on a command line. ``http_versions`` records what each exchange
    negotiated (``"2"``, ``"1.1"``).
    """

    def __init__(
        self,
        base_url: str,
        cacert: Path | None = None,
        http: HTTPVersion = "2",
        source: str | None = None,
    ) -> None:
        super().__init__(base_url)
        self.cacert = cacert
        self.http: Final = http
        #: The local address to connect from (another 127.0.0.0/8 address, say).
        self.source: Final = source
        #: Per exchange: the HTTP version negotiated and the size of the response head.
        self.http_versions: list[str] = []
        self.head_sizes: list[int] = []

    async def _request(
        self,
        method: str,
        path: str,
        json_body: object,
        data: bytes | None,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None,
    ) -> Reply:
        all_headers: CIMultiDict[str] = CIMultiDict(headers or {})
        if "Cookie" not in all_headers and (jar := self.cookie_header()) is not None:
            all_headers["Cookie"] = jar
        body = data
        if json_body is not None:
            body = compact(json_body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        # Headers (cookies included) and the answer live only as long as the exchange.
        with tempfile.TemporaryDirectory(prefix="curl-exchange-") as exchange_dir:
            reply = await self._curl(method, path, all_headers, body, Path(exchange_dir))
        self.take(reply.set_cookies)
        return reply

    async def _curl(
        self, method: str, path: str, headers: CIMultiDict[str], body: bytes | None, files: Path
    ) -> Reply:
        """One exchange by one curl process; its request and response files go in ``files``."""
        header_file, response_head, response_body = (
            files / name for name in ("request-headers", "response-head", "response-body")
        )
        header_file.write_text("".join(f"{name}: {value}\n" for name, value in headers.items()))
        command = [
            require_tool("curl"),
            "--silent",
            "--show-error",
            "--http2" if self.http == "2" else "--http1.1",
            *(["--cacert", str(self.cacert)] if self.cacert else []),
            *(["--interface", self.source] if self.source else []),
            *("--max-time", str(REQUEST_TIMEOUT), "--request", method),
            *("--header", f"@{header_file}", "--dump-header", str(response_head)),
            *("--output", str(response_body), "--write-out", "%{http_version} %{size_header}"),
            *(["--data-binary", "@-"] if body is not None else []),
            self.base_url + path,
        ]
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=subprocess.PIPE if body is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await process.communicate(body)
        if process.returncode != 0:
            raise CurlError(process.returncode or 0, err.decode(errors="replace").strip())
        version, head_size = out.decode().split()
        self.http_versions.append(version)
        self.head_sizes.append(int(head_size))
        status, response_headers = parse_response_head(response_head.read_text("latin-1"))
        return Reply(status, response_headers, response_body.read_bytes())


def parse_response_head(text: str) -> tuple[int, CIMultiDictProxy[str]]:
    """The status and headers of the last response head curl wrote (interim ones skipped)."""
    blocks = [block for block in text.replace("\r\n", "\n").split("\n\n") if block.strip()]
    status_line, *lines = blocks[-1].split("\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, _, value = line.partition(":")
        headers.add(name.strip(), value.strip())
    return int(status_line.split()[1]), CIMultiDictProxy(headers)


# --- HAProxy --------------------------------------------------------------------------------


def haproxy_config(tls: TLSFiles, port: int, upstream_port: int, global_directives: str) -> str:
    return f"""\
# Written by tests/integration/front_proxies.py for one test run.
global
    log stderr format raw local0 info
{global_directives}
defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend tls
    bind 127.0.0.1:{port} ssl crt {tls.combined} alpn h2,http/1.1
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    default_backend sidecar
backend sidecar
    server sidecar 127.0.0.1:{upstream_port}
"""


def start_haproxy(upstream_port: int, global_directives: str = "") -> RunningFront:
    """HAProxy on a free port, TLS with ALPN h2 and http/1.1, in front of the sidecar.

    ``global_directives`` go into the ``global`` section as written (empty: the defaults).
    """
    workdir, tls = _workdir("haproxy")
    port = free_port()
    conf = workdir / "haproxy.cfg"
    conf.write_text(haproxy_config(tls, port, upstream_port, global_directives))
    # -db: stay in the foreground, so SIGTERM reaches the process the test holds.
    command = [require_tool("haproxy"), "-db", "-f", str(conf)]
    return _launch("haproxy", command, workdir, tls, port)


# --- Caddy ----------------------------------------------------------------------------------


def caddy_config(
    workdir: Path,
    tls: TLSFiles,
    port: int,
    upstream_port: int,
    server_options: str,
    transport_options: str,
) -> str:
    # admin off and auto_https off: no admin port, no certificate manager, nothing outside
    # the temp dir. ``server_options`` go into the global ``servers`` block,
    # ``transport_options`` into reverse_proxy's ``transport http`` block.
    return f"""\
# Written by tests/integration/front_proxies.py for one test run.
{{
    admin off
    auto_https off
    storage file_system {workdir}/data
    servers {{
        protocols h1 h2
{server_options}
    }}
}}
https://127.0.0.1:{port} {{
    bind 127.0.0.1
    tls {tls.cert} {tls.key}
    reverse_proxy 127.0.0.1:{upstream_port} {{
        transport http {{
{transport_options}
        }}
    }}
}}
"""


def start_caddy(
    upstream_port: int, server_options: str = "", transport_options: str = ""
) -> RunningFront:
    """Caddy on a free port, TLS with ALPN h2 and http/1.1, in front of the sidecar.

    ``server_options`` go into the global ``servers`` block and ``transport_options`` into
    ``reverse_proxy``'s ``transport http`` block, as written (empty: the defaults).
    """
    workdir, tls = _workdir("caddy")
    port = free_port()
    conf = workdir / "Caddyfile"
    config = caddy_config(workdir, tls, port, upstream_port, server_options, transport_options)
    conf.write_text(config)
    command = [require_tool("caddy"), "run", "--adapter", "caddyfile", "--config", str(conf)]
    return _launch("caddy", command, workdir, tls, port)
