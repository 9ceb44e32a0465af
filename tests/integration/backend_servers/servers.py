"""Start real backend servers on 127.0.0.1, at their default limits or with the documented setting.

``with start_server("gunicorn", documented=True) as server:`` runs gunicorn with the setting
docs/backends.md gives, from the moment ``/healthz`` answers to the end of the block. nginx +
PHP-FPM is one server made of two processes, each with its own configuration in a temporary
folder. A missing tool is an error,
never a skip: scripts/install-system-deps.sh installs them all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final, Literal

from tests.integration.backends import REPO_ROOT, build_go_backend, free_port
from tests.integration.processes import ManagedProcess

ServerKind = Literal[
    "gunicorn",
    "gunicorn-uvicorn",
    "uvicorn-h11",
    "uvicorn-httptools",
    "hypercorn",
    "django-runserver",
    "node",
    "go",
    "nginx-php-fpm",
    "php-cli-server",
    "puma",
    "webrick",
]

APPS: Final = Path(__file__).resolve().parent
STARTUP_TIMEOUT: Final = 20.0
#: What docs/backends.md tells each server to accept: the 128 KiB session and room to spare.
HEADER_ROOM: Final = 300_000
_PY_APPS: Final = "tests.integration.backend_servers.python_apps"
_BIN: Final = Path(sys.executable).parent

#: The lines docs/backends.md gives for nginx in front of PHP-FPM, both directions.
NGINX_DOCUMENTED: Final = """
        large_client_header_buffers 4 300k;
        fastcgi_buffer_size         300k;
        fastcgi_buffers             8 300k;
        fastcgi_busy_buffers_size   600k;
"""


class ServerStartError(RuntimeError):
    """A server exited, or did not answer ``/healthz`` within STARTUP_TIMEOUT seconds."""


class RunningServer:
    """One backend server (one or more processes) listening on ``url``."""

    def __init__(self, kind: ServerKind, port: int) -> None:
        self.kind: Final = kind
        self.port: Final = port
        self.url: Final = f"http://127.0.0.1:{port}"
        #: In start order (nginx after PHP-FPM); stopped in reverse.
        self.processes: Final[list[ManagedProcess]] = []

    def output(self) -> str:
        return "\n".join(p.output() for p in self.processes)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


@contextmanager
def start_server(
    kind: ServerKind, *, documented: bool = False, extra: Sequence[str] = ()
) -> Iterator[RunningServer]:
    """Run ``kind`` on a free port for a ``with`` block: defaults, or docs/backends.md's setting.

    ``extra`` is appended to the server's command line (e.g. another gunicorn limit).
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"sidecar-{kind}-"))
    port = free_port()
    server = RunningServer(kind, port)
    try:
        if kind == "nginx-php-fpm":
            fpm_port = free_port()
            server.processes.append(_spawn(_php_fpm(workdir, fpm_port), workdir, "php-fpm"))
            nginx = _nginx(workdir, port, fpm_port, documented)
            server.processes.append(_spawn(nginx, workdir, "nginx"))
        else:
            command = [*_command(kind, port, documented, workdir), *extra]
            server.processes.append(_spawn(command, workdir, kind, port))
        _wait_until_healthy(server)
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _command(kind: ServerKind, port: int, documented: bool, workdir: Path) -> list[str]:
    bind = f"127.0.0.1:{port}"
    if kind in ("gunicorn", "gunicorn-uvicorn"):
        worker = "sync" if kind == "gunicorn" else "uvicorn.workers.UvicornWorker"
        command = [
            str(_BIN / "gunicorn"),
            "-w",
            "1",
            "-k",
            worker,
            "-b",
            bind,
            "--no-control-socket",
        ]
        if documented:
            command += ["--limit-request-field_size", str(HEADER_ROOM)]
        return [*command, f"{_PY_APPS}:{'wsgi_app' if kind == 'gunicorn' else 'asgi_app'}"]
    if kind in ("uvicorn-h11", "uvicorn-httptools"):
        command = [str(_BIN / "uvicorn"), "--http", kind.removeprefix("uvicorn-")]
        command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        if documented and kind == "uvicorn-h11":
            command += ["--h11-max-incomplete-event-size", str(HEADER_ROOM)]
        return [*command, f"{_PY_APPS}:asgi_app"]
    if kind == "hypercorn":
        config = workdir / "hypercorn.toml"
        config.write_text(f"h11_max_incomplete_size = {HEADER_ROOM}\n" if documented else "")
        return [str(_BIN / "hypercorn"), "-c", str(config), "-b", bind, f"{_PY_APPS}:asgi_app"]
    if kind == "django-runserver":
        settings = "--settings=tests.integration.backend_servers.django_site"
        return [sys.executable, "-m", "django", "runserver", "--noreload", settings, bind]
    if kind == "node":
        flags = [f"--max-http-header-size={HEADER_ROOM}"] if documented else []
        return [_tool("node"), *flags, str(APPS / "node_app.js")]
    if kind == "go":
        return [str(build_go_backend())]  # examples/backends/go: MaxHeaderBytes is Go's 1 MB
    if kind == "php-cli-server":
        return [_tool("php"), "-S", bind, str(APPS / "app.php")]
    if kind == "puma":
        return [
            _tool("puma"),
            "-b",
            f"tcp://{bind}",
            "-w",
            "0",
            "-t",
            "1:4",
            str(APPS / "config.ru"),
        ]
    if kind == "webrick":
        return [_tool("ruby"), str(APPS / "webrick_server.rb")]
    raise ValueError(f"no command for {kind}")


def _php_fpm(workdir: Path, port: int) -> list[str]:
    # A root master needs -R and a pool user; any other user runs the pool as itself.
    as_root = os.geteuid() == 0
    (workdir / "php-fpm.conf").write_text(
        f"""[global]
error_log = /proc/self/fd/2
daemonize = no
[app]
listen = 127.0.0.1:{port}
{"user = root" if as_root else ""}
pm = static
pm.max_children = 2
catch_workers_output = yes
"""
    )
    command = [_tool("php-fpm8.2"), "-F", "-y", str(workdir / "php-fpm.conf")]
    return [*command, "-p", str(workdir), *(["-R"] if as_root else [])]


def _nginx(workdir: Path, port: int, fpm_port: int, documented: bool) -> list[str]:
    temp = "".join(
        f"    {name}_temp_path {workdir}/{name};\n"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (workdir / "nginx.conf").write_text(
        f"""daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log stderr info;
{"user root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 64; }}
http {{
    access_log off;
{temp}
    server {{
        listen 127.0.0.1:{port};
{NGINX_DOCUMENTED if documented else ""}
        location / {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME {APPS}/app.php;
            fastcgi_pass 127.0.0.1:{fpm_port};
        }}
    }}
}}
"""
    )
    (workdir / "logs").mkdir()
    return [_tool("nginx"), "-p", str(workdir), "-c", str(workdir / "nginx.conf")]


def _spawn(command: list[str], workdir: Path, name: str, port: int = 0) -> ManagedProcess:
    log = workdir / f"{name}.log"
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "PYTHONPATH": str(REPO_ROOT)}
    env["PYTHONUNBUFFERED"] = "1"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return ManagedProcess(process, log)


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise ServerStartError(f"`{name}` is not installed; scripts/install-system-deps.sh adds it")
    return path


def _wait_until_healthy(server: RunningServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        for process in server.processes:
            if process.process.poll() is not None:
                raise ServerStartError(f"{server.kind} exited at start:\n{server.output()}")
        try:
            with urllib.request.urlopen(f"{server.url}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise ServerStartError(f"{server.kind} did not answer /healthz:\n{server.output()}")
