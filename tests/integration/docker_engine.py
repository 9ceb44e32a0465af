"""The project's own Docker engine (scripts/docker-engine.sh), driven from the tests.

:func:`start_engine` starts it (or finds it running) and returns a :class:`DockerEngine`, which
runs Debian's ``docker`` client and ``docker-compose`` against its socket. :func:`compose_up`
brings up docker-compose.yml on it with tests/integration/docker-compose.loopback.yml for
networking, and :meth:`ComposeStack.fetch` sends requests from inside the stack's network
namespace. Any failure is a test failure with the command's output, never a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NoReturn

import pytest
import yaml

from tests.integration.backends import REPO_ROOT

ENGINE_SCRIPT: Final = REPO_ROOT / "scripts" / "docker-engine.sh"
BUILD_SCRIPT: Final = REPO_ROOT / "scripts" / "build-image.sh"
COMPOSE_FILE: Final = REPO_ROOT / "docker-compose.yml"
LOOPBACK_OVERRIDE: Final = Path(__file__).with_name("docker-compose.loopback.yml")
CLIENT: Final = Path(__file__).with_name("netns_client.py")
#: Debian's client, the same release as Debian's dockerd (scripts/docker-engine.sh says why).
DOCKER_CLI: Final = "/usr/bin/docker"
SOCKET: Final = os.environ.get("SIDECAR_DOCKER_SOCKET", "/run/session-sidecar-docker.sock")
#: The keys of docker-compose.yml that the loopback override replaces. Compose 1.29 cannot
#: override them away ("'network_mode' and 'networks' cannot be combined"), so they are dropped
#: from the rendered demo first; every other key runs as written.
NETWORKING_KEYS: Final = ("networks", "ports")
#: scripts/make-base-image.sh's cache of debootstrap root filesystems, one per base image.
CACHE_DIR: Final = Path(os.environ.get("SIDECAR_CACHE_DIR", "/var/cache/session-sidecar"))
BASE_IMAGES: Final = 4
PROJECT: Final = "sidecar-test"
COMMAND_TIMEOUT: Final = 120.0


def fail(message: str) -> NoReturn:
    pytest.fail(message, pytrace=False)


def require_tool(path_or_name: str, debian_package: str) -> str:
    found = shutil.which(path_or_name)
    if found is None:
        fail(
            f"`{path_or_name}` is not installed: run `make deps` (Debian package {debian_package})"
        )
    return found


def run(
    argv: list[str], env: dict[str, str], timeout: float = COMMAND_TIMEOUT, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``argv`` in a session of its own, so a timeout ends the whole tree (a build script's
    debootstrap or docker client too), not just the script."""
    with subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            fail(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s")
    result = subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr)[-6000:]
        fail(f"`{' '.join(argv)}` exited {result.returncode}:\n{output}")
    return result


@dataclass(frozen=True, slots=True)
class DockerEngine:
    """The engine on :data:`SOCKET`. ``started_here``: this process started it."""

    env: dict[str, str]
    started_here: bool

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([DOCKER_CLI, *args], self.env, check=check)

    def inspect(self, name: str) -> dict[str, Any]:
        (found,) = json.loads(self.docker("inspect", name).stdout)
        assert isinstance(found, dict)
        return found

    def network_names(self) -> set[str]:
        return set(self.docker("network", "ls", "--format", "{{.Name}}").stdout.split())

    def stop(self) -> None:
        run(["bash", str(ENGINE_SCRIPT), "stop"], self.env)


def start_engine() -> DockerEngine:
    """``scripts/docker-engine.sh start``; fails the test with the engine's log if it cannot."""
    require_tool("dockerd", "docker.io")
    require_tool(DOCKER_CLI, "docker.io")
    env = {**os.environ, "DOCKER_HOST": f"unix://{SOCKET}"}
    status = run(["bash", str(ENGINE_SCRIPT), "status"], env, check=False)
    run(["bash", str(ENGINE_SCRIPT), "start"], env)
    return DockerEngine(env, started_here=status.returncode != 0)


@dataclass(frozen=True, slots=True)
class BuildReport:
    seconds: float
    #: image name -> seconds its `docker build` took, as scripts/build-image.sh printed them.
    images: dict[str, int]


def build_forecast() -> str:
    """How long :func:`build_images` usually takes, from what the base-image cache holds."""
    cached = list(CACHE_DIR.glob("bookworm-*-rootfs.tar"))
    if len(cached) >= BASE_IMAGES:
        return f"the bases are cached in {CACHE_DIR}: usually under 1 min"
    return (
        "first run: debootstrap downloads about 144 MB of Debian packages and makes the four "
        f"bases (cached in {CACHE_DIR} for the next run), then four builds: usually about 5 min"
    )


def build_images(engine: DockerEngine, timeout: float) -> BuildReport:
    """``scripts/build-image.sh --local-bases``: the Debian stand-in bases, then all four."""
    require_tool("debootstrap", "debootstrap")
    start = time.monotonic()
    result = run(["bash", str(BUILD_SCRIPT), "--local-bases"], engine.env, timeout=timeout)
    images = {}
    for line in result.stdout.splitlines():
        words = line.split()
        if len(words) == 5 and words[0] == "built" and words[2] == "in":
            images[words[1]] = int(words[3])
    return BuildReport(time.monotonic() - start, images)


def render_without_networking(engine: DockerEngine, path: Path) -> dict[str, Any]:
    """docker-compose.yml as compose reads it (paths absolute, ``${...}`` kept), minus the
    :data:`NETWORKING_KEYS`, written to ``path``; returns what was written."""
    rendered = run(
        [
            require_tool("docker-compose", "docker-compose"),
            "--project-directory",
            str(REPO_ROOT),
            "-f",
            str(COMPOSE_FILE),
            "config",
            "--no-interpolate",
        ],
        engine.env,
    )
    config = yaml.safe_load(rendered.stdout)
    assert isinstance(config, dict)
    for key in NETWORKING_KEYS:
        config.pop(key, None)
        for service in config["services"].values():
            service.pop(key, None)
    path.write_text(yaml.safe_dump(config))
    return config


@dataclass(slots=True)
class ComposeStack:
    """docker-compose.yml, up on the engine with the loopback override."""

    engine: DockerEngine
    files: list[Path]
    env: dict[str, str]
    services: list[str] = field(default_factory=list)

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        files = [arg for path in self.files for arg in ("-f", str(path))]
        argv = ["docker-compose", "-p", PROJECT, "--project-directory", str(REPO_ROOT), *files]
        return run([*argv, *args], self.env, check=check)

    def container(self, service: str) -> str:
        return f"{PROJECT}_{service}_1"

    def namespace_pid(self) -> int:
        pid = self.engine.inspect(self.container("netns"))["State"]["Pid"]
        assert isinstance(pid, int) and pid > 0, "the netns container does not run"
        return pid

    def in_namespace(self, argv: list[str]) -> list[str]:
        """``argv`` run from this machine's filesystem inside the stack's network namespace."""
        nsenter = require_tool("nsenter", "util-linux")
        return [nsenter, f"--net=/proc/{self.namespace_pid()}/ns/net", *argv]

    def client(self) -> list[str]:
        return self.in_namespace([sys.executable, str(CLIENT)])

    def fetch(self, *requests: dict[str, Any]) -> list[dict[str, Any]]:
        """netns_client.py's replies, sent in order with one cookie jar."""
        result = subprocess.run(
            self.client(),
            input=json.dumps(list(requests)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"netns_client.py failed:\n{result.stderr[-3000:]}"
        replies = json.loads(result.stdout)
        assert isinstance(replies, list)
        return replies

    def health(self, service: str) -> str:
        state = self.engine.inspect(self.container(service))["State"]
        health = state.get("Health")
        return str(health["Status"]) if health else "none"

    def wait_healthy(self, deadline_seconds: float) -> dict[str, str]:
        """Poll every health-checked service until all are healthy; fail at the deadline."""
        checked = [s for s in self.services if s != "netns"]
        deadline = time.monotonic() + deadline_seconds
        while True:
            statuses = {service: self.health(service) for service in checked}
            if all(status == "healthy" for status in statuses.values()):
                return statuses
            if time.monotonic() > deadline or "unhealthy" in statuses.values():
                logs = {
                    s: self.engine.docker("logs", "--tail", "20", self.container(s), check=False)
                    for s in checked
                }
                text = "\n".join(f"--- {s}:\n{r.stdout}{r.stderr}" for s, r in logs.items())
                fail(f"not healthy within {deadline_seconds:.0f} s: {statuses}\n{text}")
            time.sleep(0.5)

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", check=False)


def compose_up(engine: DockerEngine, work_dir: Path, secret: str) -> ComposeStack:
    """Render the demo without its networking, add the loopback override, ``up -d``."""
    demo = render_without_networking(engine, work_dir / "docker-compose.demo.yml")
    override = yaml.safe_load(LOOPBACK_OVERRIDE.read_text())
    env = {**engine.env, "SESSION_SECRET": secret}
    stack = ComposeStack(engine, [work_dir / "docker-compose.demo.yml", LOOPBACK_OVERRIDE], env)
    stack.services = sorted({*demo["services"], *override["services"]})
    stack.down()  # a stack a killed run left behind
    stack.compose("up", "-d", "--no-build")
    return stack
