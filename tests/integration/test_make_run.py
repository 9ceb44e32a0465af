"""``make run``: its own environment with the runtime dependencies only, and a proxy that serves.

The run environment is made by the Makefile itself (``RUN_VENV=...``), cached outside the
repository in ``~/.cache/session-sidecar/`` (one per checkout, since the install is editable),
so the first run installs from the package index (about 30 s) and later runs only start.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Final

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.integration.backends import REPO_ROOT, free_port, start_backend

pytestmark = pytest.mark.integration

RUN_VENV: Final = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "session-sidecar"
    / f"venv-run-{hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:12]}"
)
#: The first run creates the environment: pip from the package index.
STARTUP_TIMEOUT: Final = 240.0
SECRET: Final = "make-run-test-secret-0123456789-abcdefghijkl"
#: What the venv itself brings (setuptools: Python 3.11's ensurepip), not the project.
VENV_BOOTSTRAP: Final = {"pip", "setuptools"}
TEST_TOOLS: Final = {"pytest", "hypothesis", "mypy", "ruff", "gunicorn", "uvicorn", "flask"}
#: 73 MB measured (docs: the Makefile's comment); the test extras' .venv is 482 MB.
MAX_RUN_VENV_BYTES: Final = 150 << 20

#: Run in the run environment's Python: every installed distribution and what it requires.
_LIST_DISTRIBUTIONS: Final = """
import importlib.metadata as md, json
print(json.dumps({d.metadata["Name"]: d.requires or [] for d in md.distributions()}))
"""


def test_make_run_serves_from_an_environment_with_only_the_runtime_dependencies(
    tmp_path: Path,
) -> None:
    port, admin_port = free_port(), free_port()
    with start_backend("python") as backend:
        config = tmp_path / "proxy.yaml"
        config.write_text(
            f"listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin_port}\n"
            "secrets: ['${SESSION_SECRET}']\ncookie: {secure: false}\n"
            f"upstreams: [{{url: '{backend.url}', name: app}}]\n"
        )
        log_path = tmp_path / "make-run.log"
        with log_path.open("wb") as log:
            make = subprocess.Popen(
                ["make", "--no-print-directory", "run", f"RUN_VENV={RUN_VENV}", f"CONFIG={config}"],
                cwd=REPO_ROOT,
                env=_environment_outside_make(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_for_healthz(make, admin_port, log_path)
            status, set_cookie = _set_a_session(port)
            assert status == 200
            assert set_cookie.startswith("session.0=")
            # The recipe execs the proxy: make's child is session-sidecar itself.
            cmdline = Path(f"/proc/{_only_child(make.pid)}/cmdline").read_bytes().split(b"\0")
            assert str(RUN_VENV / "bin" / "session-sidecar").encode() in cmdline[:2]
            os.kill(_only_child(make.pid), signal.SIGTERM)
            assert make.wait(40) == 0, log_path.read_text()
        finally:
            if make.poll() is None:
                os.killpg(make.pid, signal.SIGKILL)
                make.wait()
    assert SECRET not in log_path.read_text()
    installed = _installed_distributions()
    assert set(installed) - VENV_BOOTSTRAP == _runtime_closure(installed)
    assert not TEST_TOOLS & set(installed)
    assert _tree_bytes(RUN_VENV) < MAX_RUN_VENV_BYTES


def _environment_outside_make() -> dict[str, str]:
    """This environment, minus what an enclosing ``make test`` exports to its children: its
    flags (a jobserver's descriptors, command-line variables) are not this make's."""
    env = {k: v for k, v in os.environ.items() if k not in _MAKE_VARIABLES}
    return {**env, "SESSION_SECRET": SECRET}


_MAKE_VARIABLES: Final = frozenset({"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"})


def _wait_for_healthz(make: subprocess.Popen[bytes], admin_port: int, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if make.poll() is not None:
            raise AssertionError(f"make run exited with {make.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no /healthz within {STARTUP_TIMEOUT}s:\n{log_path.read_text()}")


def _set_a_session(port: int) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/session", data=b'{"user": "alice"}', method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers.get("Set-Cookie", "")


def _only_child(pid: int) -> int:
    children = [
        int(stat.parent.name)
        for stat in Path("/proc").glob("[0-9]*/stat")
        if _parent_pid(stat) == pid
    ]
    assert len(children) == 1, children
    return children[0]


def _parent_pid(stat: Path) -> int | None:
    try:
        # The command name in parentheses may hold spaces: fields are counted after it.
        return int(stat.read_text().rpartition(")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return None  # gone meanwhile


def _installed_distributions() -> dict[str, list[str]]:
    done = subprocess.run(
        [str(RUN_VENV / "bin" / "python"), "-c", _LIST_DISTRIBUTIONS],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    listed: dict[str, list[str]] = json.loads(done.stdout)
    return {canonicalize_name(name): requires for name, requires in listed.items()}


def _runtime_closure(installed: dict[str, list[str]]) -> set[str]:
    """session-sidecar and what it needs, transitively, with no extra (the test one) chosen."""
    needed: set[str] = set()
    todo = ["session-sidecar"]
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        for text in installed.get(name, []):
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return needed


def _tree_bytes(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*") if not p.is_symlink() and p.is_file())
