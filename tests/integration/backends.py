"""Start the example backends (examples/backends/) as real processes for integration tests.

``start_backend("node")`` runs the Node backend on a free port and returns once its
``/healthz`` answers; ``stop()`` (or leaving a ``with`` block) sends SIGTERM. A missing
``node`` or ``go`` is an error, never a skip: ``make deps`` installs them.
"""

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Final, Literal

from tests.integration.processes import ManagedProcess

#: The repository checkout these tests belong to.
REPO_ROOT: Final = Path(__file__).resolve().parents[2]
BACKENDS_DIR: Final = REPO_ROOT / "examples" / "backends"

#: "hostile-node" is tests/adversarial/hostile_backend.js: status-echo and early-answer routes.
BackendKind = Literal["python", "node", "go", "hostile-node"]
BACKEND_KINDS: Final[tuple[BackendKind, ...]] = ("python", "node", "go")

STARTUP_TIMEOUT: Final = 20.0
#: Node's own default is 16 KB of headers in all; the tests send 48 KB of X-Session.
NODE_MAX_HEADER_SIZE: Final = 131072

_go_binary: Path | None = None
_go_build_lock = threading.Lock()
_work_dir: Path | None = None


class BackendError(RuntimeError):
    """A backend could not be built or started."""


class MissingToolError(BackendError):
    """The toolchain a backend needs (``node`` or ``go``) is not installed."""


class BackendStartError(BackendError):
    """The backend process exited or did not answer ``/healthz`` in time."""


class RunningBackend(ManagedProcess):
    """A started backend process. Its stdout and stderr go to ``log_path``."""

    def __init__(
        self,
        kind: BackendKind,
        host: str,
        port: int,
        process: "subprocess.Popen[bytes]",
        log_path: Path,
    ) -> None:
        self.kind: Final = kind
        self.host: Final = host
        self.port: Final = port
        #: Base URL without a trailing slash, e.g. ``http://127.0.0.1:8001``.
        self.url: Final = f"http://{host}:{port}"
        super().__init__(process, log_path)

    def __repr__(self) -> str:
        return f"<RunningBackend {self.kind} {self.url} pid={self.process.pid}>"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_backend(
    kind: BackendKind, port: int | None = None, env: dict[str, str] | None = None
) -> RunningBackend:
    """Start the ``kind`` example backend and wait until its ``/healthz`` answers.

    ``env`` is added to this process's environment; ``HOST`` defaults to 127.0.0.1 and
    ``PORT`` to ``port`` or a free one. Raises MissingToolError if ``node`` or ``go`` is
    not installed and BackendStartError if the process dies or stays silent for 20 s.
    """
    port = port if port is not None else free_port()
    child_env = {**os.environ, "HOST": "127.0.0.1", **(env or {}), "PORT": str(port)}
    host = child_env["HOST"]
    log_fd, log_name = tempfile.mkstemp(prefix=f"backend-{kind}-", suffix=".log", dir=_workdir())
    with os.fdopen(log_fd, "wb") as log:
        process = subprocess.Popen(
            _command(kind),
            cwd=REPO_ROOT,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    backend = RunningBackend(kind, host, port, process, Path(log_name))
    try:
        _wait_until_healthy(backend)
    except BaseException:
        backend.stop()
        raise
    return backend


def build_go_backend() -> Path:
    """Build the Go backend once per test session and return the binary's path."""
    global _go_binary
    with _go_build_lock:
        if _go_binary is None:
            go = _require_tool("go", "go")
            binary = _workdir() / "backend-go"
            build = subprocess.run(
                [go, "build", "-o", str(binary), "."],
                cwd=BACKENDS_DIR / "go",
                env=_go_build_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
            )
            if build.returncode != 0:
                raise BackendError(f"go build of the Go backend failed:\n{build.stderr}")
            _go_binary = binary
        return _go_binary


def _command(kind: BackendKind) -> list[str]:
    if kind == "python":
        return [sys.executable, str(BACKENDS_DIR / "python" / "app.py")]
    if kind in ("node", "hostile-node"):
        node = _require_tool("node", kind)
        script = BACKENDS_DIR / "node" / "server.js"
        if kind == "hostile-node":
            script = REPO_ROOT / "tests" / "adversarial" / "hostile_backend.js"
        return [node, f"--max-http-header-size={NODE_MAX_HEADER_SIZE}", str(script)]
    return [str(build_go_backend())]


def _require_tool(tool: str, kind: BackendKind) -> str:
    path = shutil.which(tool)
    if path is None:
        raise MissingToolError(
            f"`{tool}` is not on PATH, and the {kind} example backend needs it; "
            "`make deps` installs it"
        )
    return path


def _go_build_env() -> dict[str, str]:
    """Build offline: the module has no requirements, so nothing is ever downloaded."""
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOTOOLCHAIN": "local"}
    if not any(name in env for name in ("GOCACHE", "XDG_CACHE_HOME", "HOME")):
        env["GOCACHE"] = str(_workdir() / "go-cache")
    return env


def _wait_until_healthy(backend: RunningBackend) -> None:
    health_url = f"{backend.url}/healthz"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if backend.process.poll() is not None:
            raise BackendStartError(
                f"the {backend.kind} backend exited with code {backend.process.returncode} "
                f"before answering {health_url}; its output:\n{backend.output()}"
            )
        try:
            with urllib.request.urlopen(health_url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise BackendStartError(
        f"the {backend.kind} backend did not answer {health_url} within {STARTUP_TIMEOUT:.0f} s; "
        f"its output:\n{backend.output()}"
    )


def _workdir() -> Path:
    """One temporary folder per test session for logs and the Go binary, removed at exit."""
    global _work_dir
    if _work_dir is None:
        _work_dir = Path(tempfile.mkdtemp(prefix="sidecar-backends-"))
        atexit.register(shutil.rmtree, _work_dir, ignore_errors=True)
    return _work_dir
