"""The images and the compose demo on a real Docker engine, the project's own.

scripts/docker-engine.sh starts Debian's dockerd with its own roots and no bridge networking
(once per session); scripts/build-image.sh --local-bases imports Debian stand-ins for the base
images (scripts/make-base-image.sh, cached in SIDECAR_CACHE_DIR) and runs ``docker build`` of
the proxy and the three example backends. Then docker-compose.yml comes up with
tests/integration/docker-compose.loopback.yml for networking: every container shares one
network namespace that has only a loopback interface, and this module's client enters it.

Through the running stack: one session across the three backends, the hardening as the kernel
sees it, healthy health checks, JSON access logs, a SIGHUP reload, and a ``docker stop`` that
lets a request in flight finish. A missing tool or an engine that will not start fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from tests.integration.backends import BACKEND_KINDS, BackendKind
from tests.integration.docker_engine import (
    BuildReport,
    ComposeStack,
    DockerEngine,
    build_forecast,
    build_images,
    compose_up,
    fail,
    run,
    start_engine,
)
from tests.progress import announce

#: Cold (debootstrap of four bases, then four builds) took 5 min here; cached, under 1 s.
BUILD_TIMEOUT: Final = 900.0
#: The first test pays for the builds in its setup; none of the others takes a minute.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.system,
    pytest.mark.timeout(BUILD_TIMEOUT + 120),
]
HEALTHY_DEADLINE: Final = 90.0
IMAGES: Final = {
    "proxy": "session-sidecar:dev",
    **{f"backend-{kind}": f"session-sidecar-backend-{kind}:dev" for kind in BACKEND_KINDS},
}
PROXY_URL: Final = "http://127.0.0.1:8080"
ADMIN_URL: Final = "http://127.0.0.1:9901"
SESSION_MARKER: Final = "docker-engine-session-marker-5e12"
#: Docker's own networks; a bridge here would put containers on addresses outside loopback.
BUILTIN_NETWORKS: Final = {"host", "none"}


def get(url: str) -> dict[str, Any]:
    return {"method": "GET", "url": url}


def post_json(url: str, body: object) -> dict[str, Any]:
    return {"method": "POST", "url": url, "json": body}


def via_proxy(kind: BackendKind, path: str) -> str:
    return f"{PROXY_URL}/{'py' if kind == 'python' else kind}{path}"


def set_cookies(reply: dict[str, Any]) -> list[str]:
    return [value for name, value in reply["headers"] if name.lower() == "set-cookie"]


@pytest.fixture(scope="session")
def engine() -> Iterator[DockerEngine]:
    """The engine, started for this session. Stopped at the end if this session started it:
    `make test` leaves no daemon behind, and its images stay cached in its data root (outside
    the repo) for the next run. An engine someone started by hand is left running."""
    started = start_engine()
    yield started
    if started.started_here:
        started.stop()


@pytest.fixture(scope="module")
def built(engine: DockerEngine, request: pytest.FixtureRequest) -> BuildReport:
    announce(request, f"docker: the four images on Debian stand-in bases ({build_forecast()})")
    return build_images(engine, BUILD_TIMEOUT)


@pytest.fixture(scope="module")
def secret() -> str:
    """What the demo asks for in .env: `session-sidecar keygen`."""
    return run([sys.executable, "-m", "proxy", "keygen"], dict(os.environ)).stdout.strip()


@pytest.fixture(scope="module")
def stack(
    engine: DockerEngine, built: BuildReport, secret: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ComposeStack]:
    """Up, and healthy; torn down (containers and volumes, not the cached images) at the end."""
    started = compose_up(engine, tmp_path_factory.mktemp("compose"), secret)
    try:
        started.wait_healthy(HEALTHY_DEADLINE)
        yield started
    finally:
        started.down()


def test_engine_has_no_bridge_network_and_speaks_the_clients_api(engine: DockerEngine) -> None:
    assert engine.network_names() == BUILTIN_NETWORKS
    versions = json.loads(engine.docker("version", "--format", "{{json .}}").stdout)
    assert versions["Client"]["ApiVersion"] == versions["Server"]["ApiVersion"]


def test_all_four_images_build(engine: DockerEngine, built: BuildReport) -> None:
    assert set(built.images) == set(IMAGES.values()), built
    for image in IMAGES.values():
        config = engine.inspect(image)["Config"]
        assert config["User"] and not config["User"].startswith("0"), f"{image} runs as root"


def test_proxy_image_holds_no_compiler_pip_cache_or_build_leftovers(
    engine: DockerEngine, built: BuildReport
) -> None:
    probe = (
        "for tool in gcc cc c++ g++ clang make; do command -v $tool; done; "
        "for path in /root/.cache/pip /wheels /src; do [ ! -e $path ] || echo $path; done"
    )
    result = engine.docker(
        "run", "--rm", "--network", "none", "--entrypoint", "sh", IMAGES["proxy"], "-c", probe
    )
    assert result.stdout.split() == []


@pytest.mark.parametrize("service", list(IMAGES))
def test_health_check_fails_with_nothing_listening(
    engine: DockerEngine, built: BuildReport, stack: ComposeStack, service: str
) -> None:
    """The compose check, in a fresh container of the image with no network: it must fail,
    or "healthy" below would prove nothing."""
    test = stack_healthcheck(stack, service)
    program, *args = test
    result = engine.docker(
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        program,
        IMAGES[service],
        *args,
        check=False,
    )
    assert result.returncode != 0, f"{service}: the health check passed with nothing listening"


def stack_healthcheck(stack: ComposeStack, service: str) -> list[str]:
    config = stack.engine.inspect(stack.container(service))["Config"]
    form, *argv = config["Healthcheck"]["Test"]
    assert form == "CMD", config["Healthcheck"]
    return list(argv)


def test_every_health_check_turns_healthy(stack: ComposeStack) -> None:
    assert {s: stack.health(s) for s in IMAGES} == dict.fromkeys(IMAGES, "healthy")


def test_compose_creates_no_network_and_every_container_shares_the_loopback_namespace(
    engine: DockerEngine, stack: ComposeStack
) -> None:
    assert engine.network_names() == BUILTIN_NETWORKS
    netns = engine.inspect(stack.container("netns"))
    assert netns["HostConfig"]["NetworkMode"] == "none"
    for service in IMAGES:
        mode = engine.inspect(stack.container(service))["HostConfig"]["NetworkMode"]
        assert mode == f"container:{netns['Id']}", service
    interfaces = subprocess.run(
        stack.in_namespace(["ip", "-o", "link"]), capture_output=True, text=True, timeout=30
    )
    assert [line.split()[1] for line in interfaces.stdout.splitlines()] == ["lo:"]


@pytest.mark.parametrize("writer", BACKEND_KINDS)
def test_session_set_through_one_backend_is_read_through_the_other_two(
    stack: ComposeStack, writer: BackendKind
) -> None:
    session = {"user": f"set-through-{writer}", "marker": SESSION_MARKER, "cart": [1, 2, 3]}
    readers = [kind for kind in BACKEND_KINDS if kind != writer]
    written, *reads = stack.fetch(
        post_json(via_proxy(writer, "/session"), session),
        *(get(via_proxy(reader, "/whoami")) for reader in readers),
    )
    assert written["status"] == 200, written["body"]
    assert set_cookies(written), "setting the session sent no cookie"
    for reader, reply in zip(readers, reads, strict=True):
        seen = json.loads(reply["body"])
        assert seen["backend"] == reader
        assert (seen["status"], seen["session"]) == ("valid", session), reader


def test_readyz_sees_every_backend(stack: ComposeStack) -> None:
    (reply,) = stack.fetch(get(f"{ADMIN_URL}/readyz"))
    assert reply["status"] == 200, reply["body"]


@pytest.mark.parametrize("service", list(IMAGES))
def test_container_is_non_root_read_only_without_capabilities(
    engine: DockerEngine, stack: ComposeStack, service: str
) -> None:
    container = stack.container(service)
    host_config = engine.inspect(container)["HostConfig"]
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host_config["SecurityOpt"]
    assert host_config["Init"] is True
    # Every process of the container, as the kernel sees it: tini (pid 1) and the server.
    probe = (
        "id -u; for f in /proc/[0-9]*/status; do grep -E '^(CapEff|NoNewPrivs)' $f; done; "
        "touch /written-by-test 2>&1 && echo WROTE"
    )
    result = engine.docker("exec", container, "sh", "-c", probe, check=False)
    uid, *lines = result.stdout.splitlines()
    assert uid != "0", f"{service} runs as root"
    caps = [line.split()[1] for line in lines if line.startswith("CapEff")]
    no_new = [line.split()[1] for line in lines if line.startswith("NoNewPrivs")]
    assert len(caps) >= 2 and set(caps) == {"0000000000000000"}, lines
    assert set(no_new) == {"1"}, lines
    assert "Read-only file system" in result.stdout and "WROTE" not in result.stdout


def proxy_logs(stack: ComposeStack) -> list[str]:
    result = stack.engine.docker("logs", stack.container("proxy"))
    return (result.stdout + result.stderr).splitlines()


def test_docker_logs_show_json_access_lines_and_no_secret(stack: ComposeStack, secret: str) -> None:
    stack.fetch(*(get(via_proxy(kind, "/whoami")) for kind in BACKEND_KINDS))
    lines = proxy_logs(stack)
    records = [json.loads(line) for line in lines]  # every line is JSON: log_format json
    access = [r for r in records if "status" in r and "path" in r]
    for kind in BACKEND_KINDS:
        assert any(
            r["path"] == via_proxy(kind, "/whoami").removeprefix(PROXY_URL)
            and r["status"] == 200
            and r["upstream"] == kind
            for r in access
        ), kind
    text = "\n".join(lines)
    assert secret not in text and SESSION_MARKER not in text


def test_sighup_reloads_and_traffic_keeps_working(stack: ComposeStack) -> None:
    before = sum("configuration reloaded" in line for line in proxy_logs(stack))
    stack.engine.docker("kill", "--signal", "HUP", stack.container("proxy"))
    deadline = time.monotonic() + 20
    while sum("configuration reloaded" in line for line in proxy_logs(stack)) == before:
        if time.monotonic() > deadline:
            fail("docker kill -s HUP: the proxy never logged a reload")
        time.sleep(0.2)
    replies = stack.fetch(*(get(via_proxy(kind, "/whoami")) for kind in BACKEND_KINDS))
    assert [r["status"] for r in replies] == [200, 200, 200]
    assert stack.health("proxy") == "healthy"


def established_to_proxy(stack: ComposeStack) -> bool:
    ss = subprocess.run(
        stack.in_namespace(["ss", "-Htn", "state", "established", "( dport = :8080 )"]),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return bool(ss.stdout.strip())


def test_docker_stop_lets_an_in_flight_request_finish_and_the_proxy_exits_0(
    stack: ComposeStack, tmp_path: Path
) -> None:
    """Last in the module: it stops the proxy."""
    assert not established_to_proxy(stack), "a client connection is still open"
    requests = tmp_path / "slow-request.json"
    requests.write_text(json.dumps([get(via_proxy("python", "/slow?seconds=3"))]))
    with requests.open() as stdin:
        client = subprocess.Popen(
            stack.client(), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    deadline = time.monotonic() + 10
    while not established_to_proxy(stack):
        if time.monotonic() > deadline:
            client.kill()
            fail("the slow request never reached the proxy")
        time.sleep(0.05)
    time.sleep(0.3)  # the request head follows the connection
    stack.engine.docker("stop", stack.container("proxy"))
    stdout, stderr = client.communicate(timeout=30)
    assert client.returncode == 0, stderr
    (reply,) = json.loads(stdout)
    assert reply["status"] == 200 and json.loads(reply["body"]) == {"slept": 3.0}
    state = stack.engine.inspect(stack.container("proxy"))["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0)
    assert any("stopping: finishing in-flight requests" in line for line in proxy_logs(stack))
