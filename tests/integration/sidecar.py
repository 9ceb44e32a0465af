"""Start the proxy itself (``python -m proxy serve``) as a real process for integration tests.

``start_proxy(upstreams=[...])`` writes a configuration file, runs the proxy on a free port
and returns once it accepts connections. Its output goes to a log file that tests can read
(for example to check that no secret or cookie value was logged).
"""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import yaml

from tests.integration.backends import REPO_ROOT, free_port
from tests.integration.processes import ManagedProcess, scratch_dir

SECRET_1: Final = "test-secret-one-0123456789abcdefghijklmnop"
SECRET_2: Final = "test-secret-two-0123456789abcdefghijklmnop"
STARTUP_TIMEOUT: Final = 20.0


def base_config(upstream_url: str, **overrides: Any) -> dict[str, Any]:
    """A minimal valid configuration with one upstream; ``overrides`` replace top-level keys."""
    config: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "workers": 1,
        "secrets": [SECRET_1],
        "cookie": {"secure": False},
        "upstreams": [{"url": upstream_url, "name": "app", "timeout": 5}],
    }
    config.update(copy.deepcopy(overrides))
    return config


class RunningProxy(ManagedProcess):
    stop_timeout = 40.0  # a graceful shutdown may wait for in-flight requests

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        port: int,
        admin_port: int | None,
        config_path: Path,
        log_path: Path,
    ) -> None:
        super().__init__(process, log_path)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.admin_url = f"http://127.0.0.1:{admin_port}" if admin_port else None
        self.config_path = config_path

    def rewrite_config(self, config: dict[str, Any]) -> None:
        """Replace the configuration file (keeping the listening port) for a SIGHUP reload."""
        config = copy.deepcopy(config)
        config["listen"] = f"127.0.0.1:{self.port}"
        self.config_path.write_text(yaml.safe_dump(config))

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)


def start_proxy(config: dict[str, Any], env: dict[str, str] | None = None) -> RunningProxy:
    """Write ``config`` (listen port replaced by a free one) and start the proxy on it."""
    config = copy.deepcopy(config)
    port = free_port()
    config["listen"] = f"127.0.0.1:{port}"
    admin_port = None
    if config.get("admin_listen"):
        admin_port = free_port()
        config["admin_listen"] = f"127.0.0.1:{admin_port}"
    workdir = scratch_dir("sidecar-test-")
    config_path = workdir / "proxy.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = workdir / "proxy.log"
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(REPO_ROOT)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "-c", str(config_path)],
            cwd=REPO_ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    proxy = RunningProxy(process, port, admin_port, config_path, log_path)
    _wait_until_listening(proxy)
    return proxy


def _wait_until_listening(proxy: RunningProxy) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proxy.process.poll() is not None:
            raise RuntimeError(
                f"proxy exited with {proxy.process.returncode} at start:\n{proxy.output()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    proxy.stop()
    raise RuntimeError(f"proxy did not listen within {STARTUP_TIMEOUT}s:\n{proxy.output()}")
