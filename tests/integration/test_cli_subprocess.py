"""The installed ``session-sidecar`` command as an operator runs it: pipes, exit codes of serve.

``serve``'s exit 0 after SIGTERM is tested in test_proxy_processes.py
(test_sigterm_finishes_requests_in_flight_refuses_new_ones_and_exits_0); here are the codes
``serve --help`` gives for a configuration that is bad (2) and a start that fails (1).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO, Final

import pytest

from proxy.config_secrets import DEVELOPMENT_SECRET
from tests.integration.backends import free_port
from tests.integration.log_watch import WATCH

pytestmark = pytest.mark.integration

#: The console script pip installed beside this interpreter, not ``python -m proxy``.
COMMAND: Final = str(Path(sys.executable).with_name("session-sidecar"))
SECRET: Final = "cli-subprocess-secret-0123456789-abcdefghij"
TIMEOUT: Final = 30.0


def write_config(path: Path, listen_port: int, extra: str = "") -> Path:
    path.write_text(
        f"listen: 127.0.0.1:{listen_port}\nsecrets: ['${{SESSION_SECRET}}']\n"
        "cookie: {secure: false}\nupstreams: [{url: 'http://127.0.0.1:9'}]\n" + extra
    )
    return path


def run(
    *args: str, env: dict[str, str] | None = None, stdin: IO[bytes] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMMAND, *args],
        env={**os.environ, "SESSION_SECRET": SECRET, **(env or {})},
        stdin=subprocess.DEVNULL if stdin is None else stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_encode_piped_into_decode_verifies_the_session(tmp_path: Path) -> None:
    config = str(write_config(tmp_path / "proxy.yaml", free_port()))
    env = {**os.environ, "SESSION_SECRET": SECRET}
    encode = subprocess.Popen(
        [COMMAND, "encode", "-c", config, '{"user": "alice"}'], env=env, stdout=subprocess.PIPE
    )
    decode = run("decode", "-c", config, stdin=encode.stdout)
    assert encode.wait(TIMEOUT) == 0
    assert decode.returncode == 0, decode.stderr
    lines = decode.stdout.splitlines()
    assert (lines[0], lines[-1]) == ("state: valid", '{"user":"alice"}')
    assert lines[1].startswith("key id: ")
    assert SECRET not in decode.stdout + decode.stderr


def test_serve_with_an_invalid_configuration_exits_2_and_listens_on_nothing(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = write_config(tmp_path / "proxy.yaml", port, "colour: red\n")
    done = run("serve", "-c", str(config))
    assert done.returncode == 2
    assert done.stderr.startswith(f"{config}: 1 configuration error(s):\n  colour: unknown key")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_serve_with_no_configuration_file_where_the_variable_points_exits_2(
    tmp_path: Path,
) -> None:
    absent = tmp_path / "absent.yaml"
    done = run("serve", env={"SESSION_SIDECAR_CONFIG": str(absent)})
    assert done.returncode == 2
    assert done.stderr == (
        f"{absent}: no configuration file there (from SESSION_SIDECAR_CONFIG). Give the file "
        "with -c FILE or SESSION_SIDECAR_CONFIG=FILE.\n"
    )


def test_serve_that_cannot_listen_exits_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        config = write_config(tmp_path / "proxy.yaml", taken.getsockname()[1])
        done = run("serve", "-c", str(config))
    assert done.returncode == 1
    assert "cannot listen on 127.0.0.1:" in done.stderr


def test_serve_says_once_at_start_that_the_development_secret_signs() -> None:
    """Two workers and a supervisor: one line, from the supervisor, before it serves."""
    WATCH.sensitive(DEVELOPMENT_SECRET.decode())
    config = {
        "workers": 2,
        "secrets": ["${SESSION_SECRET}"],
        "cookie": {"secure": False},
        "upstreams": [{"url": "http://127.0.0.1:9"}],
    }
    with WATCH.start_proxy(config, {"SESSION_SECRET": DEVELOPMENT_SECRET.decode()}) as proxy:
        pass
    lines = [line for line in proxy.output().splitlines() if "development secret" in line]
    assert len(lines) == 1, proxy.output()
    expected = " WARNING session_sidecar.server: !!! WARNING: secrets[0] (env SESSION_SECRET)"
    assert expected in lines[0]


def test_check_config_refuses_a_host_prefixed_cookie_that_browsers_would_drop(
    tmp_path: Path,
) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text(
        "secrets: ['${SESSION_SECRET}']\nupstreams: [{url: 'http://127.0.0.1:9'}]\n"
        "cookie: {name: __Host-session, secure: false, domain: example.com}\n"
    )
    done = run("check-config", "-c", str(config))
    assert done.returncode == 2
    why = "for the __Host- cookie name '__Host-session': browsers drop it otherwise"
    assert done.stderr.splitlines() == [
        f"{config}: 2 configuration error(s):",
        f"  cookie.secure: must be true {why} (RFC 6265bis 4.1.3)",
        f"  cookie.domain: must be unset {why} (RFC 6265bis 4.1.3)",
    ]
    assert done.stdout == ""
