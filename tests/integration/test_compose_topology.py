"""docker-compose.yml run as plain processes: the same commands and files, no Docker engine.

The topology lives in a network namespace of its own (``ip netns``), whose ``/etc/hosts``
maps every compose service name to its loopback; the machine's own ``/etc/hosts`` is not
touched (``ip netns exec`` bind-mounts ``/etc/netns/NAME/hosts`` for its processes only).

* The backends run their Dockerfile's ENTRYPOINT + CMD with its ENV, read from the Dockerfile
  (the Go one as the binary ``build_go_backend()`` makes); the proxy runs the image's
  ``session-sidecar serve`` on config/compose.yaml, the file compose mounts, with the
  environment compose gives it and a secret from ``session-sidecar keygen``.
* Each waits for its own compose healthcheck, run inside the namespace, backends first, as
  ``depends_on`` says.
* A client inside the namespace (netns_client.py) reaches every backend through the proxy,
  shares one session between all three and reads the admin port. Outside, nothing answers.

Not reproduced: the images' users, read-only root filesystems, tmpfs, init and cap_drop, and
the split into a public and an internal network (here there is one loopback).
test_container.py checks those as configuration.

``ip netns add`` needs root. Without it these tests fail; they never skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.backends import BACKEND_KINDS, BACKENDS_DIR, REPO_ROOT, BackendKind
from tests.integration.log_watch import WATCH
from tests.integration.sidecar import RunningProxy
from tests.integration.test_container import (
    Stage,
    backend_argv,
    mapping,
    mounts,
    read_dockerfile,
)

pytestmark = pytest.mark.integration

COMPOSE_FILE: Final = REPO_ROOT / "docker-compose.yml"
COMPOSE_PROXY_CONFIG: Final = REPO_ROOT / "config" / "compose.yaml"
PROXY_DOCKERFILE: Final = REPO_ROOT / "Dockerfile"
CLIENT: Final = Path(__file__).with_name("netns_client.py")
NAMESPACE: Final = f"sidecar-compose-{os.getpid()}"
#: The image's entrypoint on this machine: the same console script, from this checkout.
HOST_ENTRYPOINTS: Final = {"session-sidecar": [sys.executable, "-m", "proxy"]}
STARTUP_TIMEOUT: Final = 20.0
STOP_TIMEOUT: Final = 10.0
CLIENT_TIMEOUT: Final = 30.0
SESSION_MARKER: Final = "compose-topology-session-marker-7c41"


def fail(message: str) -> NoReturn:
    pytest.fail(message, pytrace=False)


def host_argv(argv: list[str]) -> list[str]:
    """An image's command with its program found on this machine; python is this interpreter."""
    program, *args = argv
    if program == "python":
        return [sys.executable, *args]
    found = shutil.which(program)
    if found is None:
        fail(f"`{program}` is not on PATH: run `make deps`")
    return [found, *args]


def image_env(stage: Stage) -> dict[str, str]:
    """This environment plus the image's ENV, except PATH (the image's paths are not here)."""
    return {**os.environ, **{k: v for k, v in stage.env().items() if k != "PATH"}}


# --- docker-compose.yml and config/compose.yaml --------------------------------------------

COMPOSE_VARIABLE: Final = re.compile(r"\$\{(?P<name>\w+)(?::?[-?][^}]*)?\}")
DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def compose_services() -> dict[str, dict[str, Any]]:
    compose = mapping(yaml.safe_load(COMPOSE_FILE.read_text()))
    return {name: mapping(service) for name, service in mapping(compose["services"]).items()}


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:?message}`` or ``${NAME:-default}``, for a NAME set."""

    def lookup(match: re.Match[str]) -> str:
        assert match["name"] in variables, f"{value!r} needs {match['name']}"
        return variables[match["name"]]

    return COMPOSE_VARIABLE.sub(lookup, value)


def duration(text: str) -> float:
    """A compose duration such as ``3s``, ``1m30s`` or ``500ms``, in seconds."""
    parts = DURATION_PART.findall(text)
    assert parts and "".join(n + u for n, u in parts) == text, f"duration {text!r}"
    return sum(float(n) * DURATION_UNITS[u] for n, u in parts)


@dataclass(frozen=True, slots=True)
class Healthcheck:
    argv: list[str]
    timeout: float


def healthcheck(service: dict[str, Any]) -> Healthcheck:
    check = mapping(service["healthcheck"])
    form, *argv = check["test"]
    assert form == "CMD", f"healthcheck {check['test']!r}: only the exec form is run here"
    return Healthcheck(host_argv(argv), duration(str(check.get("timeout", "30s"))))


def proxy_argv(service: dict[str, Any]) -> list[str]:
    """The image's ENTRYPOINT + CMD, with each file compose mounts read where it really is."""
    runtime = read_dockerfile(PROXY_DOCKERFILE)[-1]
    program, *args = runtime.exec_form("ENTRYPOINT")
    assert program in HOST_ENTRYPOINTS, f"ENTRYPOINT {program!r}: how does it run here?"
    mounted = {m.target: str((COMPOSE_FILE.parent / m.source).resolve()) for m in mounts(service)}
    cmd = runtime.exec_form("CMD")
    assert set(cmd) & set(mounted), f"CMD {cmd} reads no file that compose mounts"
    return [*HOST_ENTRYPOINTS[program], *args, *(mounted.get(arg, arg) for arg in cmd)]


def generate_secret() -> str:
    """What the compose file asks for in .env: ``session-sidecar keygen``."""
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "keygen"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


# --- the namespace and its processes -------------------------------------------------------


class Namespace:
    """A named network namespace whose processes see ``/etc/netns/NAME/hosts`` as /etc/hosts."""

    def __init__(self, ip: str, name: str) -> None:
        self.ip = ip
        self.name = name
        self.path = Path("/run/netns") / name

    def command(self, argv: list[str]) -> list[str]:
        return [self.ip, "netns", "exec", self.name, *argv]

    def run(
        self, argv: list[str], timeout: float, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(argv),
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def pids(self) -> list[int]:
        listed = subprocess.run(
            [self.ip, "netns", "pids", self.name],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return [int(pid) for pid in listed.stdout.split()]

    def delete(self) -> None:
        """End whatever still runs inside (only this module starts processes here), then delete."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run([self.ip, "netns", "del", self.name], timeout=30, check=True)


def open_namespace(name: str, hostnames: list[str], cleanup: contextlib.ExitStack) -> Namespace:
    ip = shutil.which("ip")
    if ip is None:
        fail("`ip` is not on PATH: run `make deps` (Debian package iproute2)")
    added = subprocess.run(
        [ip, "netns", "add", name], capture_output=True, text=True, timeout=30, check=False
    )
    if added.returncode != 0:
        fail(
            f"`ip netns add {name}` failed: {added.stderr.strip()}\n"
            f"The compose topology test makes a network namespace, which needs root "
            f"(CAP_SYS_ADMIN); it runs as uid {os.geteuid()}. Run it as root: it does not skip."
        )
    namespace = Namespace(ip, name)
    cleanup.callback(namespace.delete)
    etc = Path("/etc/netns") / name
    etc.mkdir(parents=True, exist_ok=True)
    cleanup.callback(shutil.rmtree, etc)
    (etc / "hosts").write_text(f"127.0.0.1 localhost {' '.join(hostnames)}\n")
    subprocess.run([ip, "-n", name, "link", "set", "lo", "up"], timeout=30, check=True)
    return namespace


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL if it is still there. Idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_service(
    namespace: Namespace,
    cleanup: contextlib.ExitStack,
    logs: Path,
    name: str,
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
) -> Service:
    """Start ``argv`` in the namespace. ``ip netns exec`` execs it: the pid is the service's."""
    log_path = logs / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            namespace.command(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    service = Service(name, process, log_path)
    cleanup.callback(service.stop)
    return service


def wait_until_healthy(namespace: Namespace, service: Service, check: Healthcheck) -> None:
    """Run the compose healthcheck inside the namespace until it passes, as compose would."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last = "never ran"
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            fail(
                f"{service.name} exited with code {service.process.returncode} before its "
                f"healthcheck passed; its output:\n{service.output()}"
            )
        try:
            result = namespace.run(check.argv, timeout=check.timeout)
        except subprocess.TimeoutExpired:
            last = f"timed out after {check.timeout} s"
        else:
            if result.returncode == 0:
                return
            last = f"exit {result.returncode}: {result.stderr.strip()[-500:]}"
        time.sleep(0.1)
    fail(
        f"{service.name}: its compose healthcheck did not pass within {STARTUP_TIMEOUT:.0f} s "
        f"(last: {last}); its output:\n{service.output()}"
    )


# --- the client inside --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: str

    def json(self) -> Any:
        return json.loads(self.body)

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


def get(url: str) -> dict[str, Any]:
    return {"method": "GET", "url": url}


def post_json(url: str, body: object) -> dict[str, Any]:
    return {"method": "POST", "url": url, "json": body}


@dataclass(frozen=True, slots=True)
class Topology:
    namespace: Namespace
    services: dict[str, Service]
    #: What the client inside calls the proxy and its admin port, e.g. http://localhost:8080.
    proxy_url: str
    admin_url: str
    prefixes: dict[str, str]
    #: The upstream URLs of config/compose.yaml, by upstream name (python, node, go).
    upstream_urls: dict[str, str]
    #: Every port the topology listens on: the proxy's two and the backends'.
    ports: list[int]
    machine_hosts_file: str

    def via_proxy(self, kind: BackendKind, path: str) -> str:
        return f"{self.proxy_url}{self.prefixes[kind]}{path}"

    def fetch(self, *requests: dict[str, Any]) -> list[Reply]:
        """Send ``requests`` in order from one browser-like client inside the namespace."""
        result = self.namespace.run(
            [sys.executable, str(CLIENT)], timeout=CLIENT_TIMEOUT, stdin=json.dumps(requests)
        )
        assert result.returncode == 0, f"the client inside the namespace failed:\n{result.stderr}"
        return [
            Reply(r["status"], [(k, v) for k, v in r["headers"]], r["body"])
            for r in json.loads(result.stdout)
        ]


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    services = compose_services()
    config = mapping(yaml.safe_load(COMPOSE_PROXY_CONFIG.read_text()))
    upstreams = [mapping(u) for u in config["upstreams"]]
    logs = tmp_path_factory.mktemp("compose-topology")
    machine_hosts_file = Path("/etc/hosts").read_text()
    secret = generate_secret()
    WATCH.sensitive(secret)
    with contextlib.ExitStack() as cleanup:
        namespace = open_namespace(NAMESPACE, list(services), cleanup)
        running: dict[str, Service] = {}
        for kind in BACKEND_KINDS:
            runtime = read_dockerfile(BACKENDS_DIR / kind / "Dockerfile")[-1]
            name = f"backend-{kind}"
            argv, cwd = backend_argv(kind), BACKENDS_DIR / kind
            running[name] = start_service(
                namespace, cleanup, logs, name, argv, cwd, image_env(runtime)
            )
        for name in list(running):
            wait_until_healthy(namespace, running[name], healthcheck(services[name]))

        proxy = services["proxy"]
        environment = {
            key: interpolate(str(value), {"SESSION_SECRET": secret})
            for key, value in mapping(proxy.get("environment", {})).items()
        }
        env = {
            **image_env(read_dockerfile(PROXY_DOCKERFILE)[-1]),
            **environment,
            "PYTHONPATH": str(REPO_ROOT),
        }
        running["proxy"] = start_service(
            namespace, cleanup, logs, "proxy", proxy_argv(proxy), COMPOSE_FILE.parent, env
        )
        listen, admin_listen = port_of(config["listen"]), port_of(config["admin_listen"])
        # The module's log check reads this proxy's output for the secret and the session.
        WATCH.proxies.append(
            RunningProxy(
                running["proxy"].process,
                listen,
                admin_listen,
                COMPOSE_PROXY_CONFIG,
                running["proxy"].log_path,
            )
        )
        wait_until_healthy(namespace, running["proxy"], healthcheck(proxy))

        yield Topology(
            namespace=namespace,
            services=running,
            proxy_url=f"http://localhost:{listen}",
            admin_url=f"http://localhost:{admin_listen}",
            prefixes={u["name"]: u["path_prefix"] for u in upstreams},
            upstream_urls={u["name"]: u["url"] for u in upstreams},
            ports=[listen, admin_listen, *(int(urlsplit(u["url"]).port or 80) for u in upstreams)],
            machine_hosts_file=machine_hosts_file,
        )


# --- inside the namespace: end to end --------------------------------------------------------


def test_every_service_runs_inside_the_namespace(topology: Topology) -> None:
    namespace = os.stat(topology.namespace.path).st_ino
    assert namespace != os.stat("/proc/self/ns/net").st_ino
    for name, service in topology.services.items():
        assert os.stat(f"/proc/{service.process.pid}/ns/net").st_ino == namespace, name


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_each_prefix_reaches_its_backend_with_the_prefix_stripped(
    topology: Topology, kind: BackendKind
) -> None:
    (reply,) = topology.fetch(get(topology.via_proxy(kind, "/whoami")))
    assert reply.status == 200, reply.body
    seen = reply.json()
    assert seen["backend"] == kind
    assert seen["path"] == "/whoami"
    assert seen["status"] == "absent"


def test_service_names_lead_to_the_backends_inside_the_namespace(topology: Topology) -> None:
    kinds = list(topology.upstream_urls)
    replies = topology.fetch(*(get(f"{topology.upstream_urls[k]}/whoami") for k in kinds))
    assert [reply.json()["backend"] for reply in replies] == kinds


@pytest.mark.parametrize("writer", BACKEND_KINDS)
def test_session_set_through_one_backend_is_read_through_the_other_two(
    topology: Topology, writer: BackendKind
) -> None:
    session = {"user": f"set-through-{writer}", "marker": SESSION_MARKER, "cart": [1, 2, 3]}
    WATCH.sensitive(SESSION_MARKER)
    readers = [kind for kind in BACKEND_KINDS if kind != writer]
    written, *reads = topology.fetch(
        post_json(topology.via_proxy(writer, "/session"), session),
        *(get(topology.via_proxy(reader, "/whoami")) for reader in readers),
    )
    assert written.status == 200, written.body
    cookies = written.header_values("Set-Cookie")
    assert cookies, "setting the session sent no cookie"
    for cookie in cookies:
        WATCH.sensitive(cookie.split(";")[0].partition("=")[2])
    for reader, reply in zip(readers, reads, strict=True):
        seen = reply.json()
        assert seen["backend"] == reader
        assert seen["status"] == "valid", f"{reader}: {seen['status']}"
        assert seen["session"] == session, reader


def test_admin_readyz_sees_every_backend(topology: Topology) -> None:
    (reply,) = topology.fetch(get(f"{topology.admin_url}/readyz"))
    assert reply.status == 200, reply.body
    assert reply.json() == {"status": "ready"}


def requests_answered(page: str) -> dict[tuple[str, str], float]:
    """``session_sidecar_requests_total`` by (upstream, status)."""
    return {
        (sample.labels["upstream"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == "session_sidecar_requests_total"
    }


def test_metrics_count_requests_per_upstream(topology: Topology) -> None:
    per_upstream = 2
    metrics = get(f"{topology.admin_url}/metrics")
    calls = [get(topology.via_proxy(kind, "/whoami")) for kind in BACKEND_KINDS] * per_upstream
    before, *answers, after = topology.fetch(metrics, *calls, metrics)
    assert [a.status for a in answers] == [200] * len(calls)
    counted_before, counted_after = requests_answered(before.body), requests_answered(after.body)
    for kind in BACKEND_KINDS:
        key = (kind, "200")
        assert counted_after.get(key, 0.0) - counted_before.get(key, 0.0) == per_upstream, kind


# --- outside the namespace ------------------------------------------------------------------


def listening_sockets(net: Path) -> dict[int, set[int]]:
    """The TCP listeners of the network namespace behind ``net`` (a /proc/PID/net): port to
    socket inodes."""
    found: dict[int, set[int]] = {}
    for table in ("tcp", "tcp6"):
        for line in (net / table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                port = int(fields[1].rpartition(":")[2], 16)
                found.setdefault(port, set()).add(int(fields[9]))
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target.removeprefix("socket:[").removesuffix("]")))
    return inodes


def connection_refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_no_port_of_the_topology_answers_outside_the_namespace(topology: Topology) -> None:
    ours = set[int]().union(*(socket_inodes(pid) for pid in topology.namespace.pids()))
    inside = listening_sockets(Path(f"/proc/{topology.services['proxy'].process.pid}/net"))
    outside = listening_sockets(Path("/proc/self/net"))
    for port in topology.ports:
        assert inside.get(port, set()) & ours, f"nothing of the topology listens on {port} inside"
        assert not outside.get(port, set()) & ours, f"the topology listens on {port} outside"
        if port not in outside:  # Only another program of this machine may answer there.
            assert connection_refused(port), f"127.0.0.1:{port} answers outside the namespace"


def test_machine_hosts_file_is_left_alone(topology: Topology) -> None:
    assert Path("/etc/hosts").read_text() == topology.machine_hosts_file
