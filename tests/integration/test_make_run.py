"""``make run``: its own environment with the runtime dependencies only, and a proxy that serves.

The run environment is made by the Makefile itself (``RUN_VENV=...``), cached outside the
repository in ``~/.cache/session-sidecar/`` (one per checkout, since the install is editable),
so the first run installs from the package index (about 30 s) and later runs only start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.integration.backends import REPO_ROOT, free_port, start_backend
from tests.progress import announce

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


@pytest.fixture
def first_run_announced(request: pytest.FixtureRequest) -> None:
    if not (RUN_VENV / "bin" / ".installed").exists():
        announce(request, f"make run: its environment in {RUN_VENV}, from PyPI (usually 30 s)")


@contextlib.contextmanager
def make_run(
    config: Path, admin_port: int, log_path: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """``make run`` with ``config``, serving (its /healthz answers); killed if still running."""
    with log_path.open("wb") as log:
        make = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"RUN_VENV={RUN_VENV}", f"CONFIG={config}"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_healthz(make, admin_port, log_path)
        yield make
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()


@pytest.mark.usefixtures("first_run_announced")
def test_make_run_serves_from_an_environment_with_only_the_runtime_dependencies(
    tmp_path: Path,
) -> None:
    port, admin_port = free_port(), free_port()
    log_path = tmp_path / "make-run.log"
    with start_backend("python") as backend:
        config = tmp_path / "proxy.yaml"
        config.write_text(
            f"listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin_port}\n"
            "secrets: ['${SESSION_SECRET}']\ncookie: {secure: false}\n"
            f"upstreams: [{{url: '{backend.url}', name: app}}]\n"
        )
        env = {**_environment_outside_make(), "SESSION_SECRET": SECRET}
        with make_run(config, admin_port, log_path, env) as make:
            status, set_cookie = _set_a_session(port)
            assert status == 200
            assert set_cookie.startswith("session.0=")
            # The recipe execs the proxy: make's child is session-sidecar itself.
            cmdline = Path(f"/proc/{_only_child(make.pid)}/cmdline").read_bytes().split(b"\0")
            assert str(RUN_VENV / "bin" / "session-sidecar").encode() in cmdline[:2]
            os.kill(_only_child(make.pid), signal.SIGTERM)
            assert make.wait(40) == 0, log_path.read_text()
    assert SECRET not in log_path.read_text()
    assert "development secret" not in log_path.read_text()
    installed = _installed_distributions()
    assert set(installed) - VENV_BOOTSTRAP == _runtime_closure(installed)
    assert not TEST_TOOLS & set(installed)
    assert _tree_bytes(RUN_VENV) < MAX_RUN_VENV_BYTES


@pytest.mark.system  # the README's examples use curl, which `make deps` installs
@pytest.mark.usefixtures("first_run_announced")
def test_the_readmes_encode_and_decode_work_as_written_after_a_plain_make_run(
    tmp_path: Path,
) -> None:
    """The README's block as a newcomer pastes it, in a shell where SESSION_SECRET was never
    set, against ``make run`` on config/proxy.yaml. Only the ports (free ones, not 8080,
    9901 and 8001) and the place of .venv-run (this checkout's test copy) are changed."""
    block = _readme_block_running(".venv-run/bin/session-sidecar encode")
    port, admin_port = free_port(), free_port()
    log_path = tmp_path / "make-run.log"
    with start_backend("python") as backend:
        config = tmp_path / "proxy.yaml"
        config.write_text(
            _replace_each(
                (REPO_ROOT / "config" / "proxy.yaml").read_text(),
                {
                    "127.0.0.1:8080": f"127.0.0.1:{port}",
                    "127.0.0.1:9901": f"127.0.0.1:{admin_port}",
                    "http://127.0.0.1:8001": backend.url,
                },
            )
        )
        script = _replace_each(
            block,
            {
                "config/proxy.yaml": str(config),
                "localhost:8080": f"localhost:{port}",
                ".venv-run/": f"{RUN_VENV}/",
            },
        )
        env = _environment_outside_make()
        with make_run(config, admin_port, log_path, env):
            pasted = subprocess.run(
                ["bash", "-e", "-c", script],
                cwd=tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
    assert pasted.returncode == 0, pasted.stdout + pasted.stderr
    lines = pasted.stdout.splitlines()
    assert lines[0].startswith("Set-Cookie: session.0=S1.1.")
    assert '"session": {"user": "carol"}' in lines[1]
    assert lines[2] == "state: valid"
    assert lines[-1] == '{"user":"dave"}'
    warnings = [line for line in log_path.read_text().splitlines() if "!!! WARNING" in line]
    assert len(warnings) == 1, log_path.read_text()
    assert "secrets[0] (env SESSION_SECRET) is the development secret" in warnings[0]


def _readme_block_running(command: str) -> str:
    """The README's one ```sh block that runs ``command``, without its comment lines."""
    blocks = re.findall(r"```sh\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.DOTALL)
    (block,) = [b for b in blocks if command in b]
    return "\n".join(line for line in block.splitlines() if not line.startswith("#"))


def _replace_each(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"{old!r} is not there to replace"
        text = text.replace(old, new)
    return text


def _environment_outside_make() -> dict[str, str]:
    """This environment, minus what an enclosing ``make test`` exports to its children (its
    flags: a jobserver's descriptors, command-line variables) and minus SESSION_SECRET."""
    drop = _MAKE_VARIABLES | {"SESSION_SECRET"}
    return {k: v for k, v in os.environ.items() if k not in drop}


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
