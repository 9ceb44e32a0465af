"""deploy/kubernetes/session-sidecar.yaml, read as a reviewer reads it.

No cluster runs here: nothing is applied. The manifest is loaded with ``yaml.safe_load_all`` and
checked against what the proxy really does: its probes hit paths the admin server serves on the
configured admin port, the ports the ConfigMap's ``proxy.yaml`` listens on are the container's,
the real ``session-sidecar check-config`` accepts that ``proxy.yaml``, the image is the one
docker-compose.yml builds, and docs/deployment.md shows this very manifest.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from proxy.admin import admin_app
from proxy.config import Config, parse_config
from tests.integration.backends import REPO_ROOT
from tests.integration.test_front_proxies import NGINX_SETTINGS

pytestmark = pytest.mark.integration

MANIFEST: Final = REPO_ROOT / "deploy" / "kubernetes" / "session-sidecar.yaml"
DEPLOYMENT_DOC: Final = REPO_ROOT / "docs" / "deployment.md"
SIDECAR: Final = "session-sidecar"
#: The image's ``USER`` (Dockerfile): a numeric uid, so runAsNonRoot can verify it.
IMAGE_UID: Final = 10001
#: The ``preStop`` hook's sleep: endpoint removal reaches every node before SIGTERM.
PRESTOP_SLEEP: Final = ["sleep", "5"]

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def documents() -> dict[str, Manifest]:
    loaded = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    by_kind = {d["kind"]: d for d in loaded}
    assert len(by_kind) == len(loaded), "one object of each kind"
    return by_kind


@pytest.fixture(scope="module")
def pod(documents: dict[str, Manifest]) -> Manifest:
    template: Manifest = documents["Deployment"]["spec"]["template"]
    return template


@pytest.fixture(scope="module")
def sidecar(pod: Manifest) -> Manifest:
    return container(pod, SIDECAR)


@pytest.fixture(scope="module")
def proxy_yaml(documents: dict[str, Manifest]) -> str:
    text: str = documents["ConfigMap"]["data"]["proxy.yaml"]
    return text


@pytest.fixture(scope="module")
def config(proxy_yaml: str, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The ConfigMap's proxy.yaml as the proxy parses it, secret files made in a temporary
    directory (in the pod they come from the Secret's volume)."""
    text, _ = with_local_secrets(proxy_yaml, tmp_path_factory.mktemp("secrets"))
    return parse_config(text, env={})


def container(pod: Manifest, name: str) -> Manifest:
    found: list[Manifest] = [c for c in pod["spec"]["containers"] if c["name"] == name]
    assert len(found) == 1, name
    return found[0]


def port_number(container: Manifest, port: int | str) -> int:
    """A probe's or Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def secret_files(proxy_yaml: str) -> list[str]:
    return re.findall(r"\{file: ([^}]+)\}", proxy_yaml)


def with_local_secrets(proxy_yaml: str, directory: Path) -> tuple[str, list[Path]]:
    """``proxy_yaml`` with each ``{file: ...}`` secret moved into ``directory``, written there."""
    made = []
    for index, path in enumerate(secret_files(proxy_yaml)):
        local = directory / Path(path).name
        local.write_text(f"deploy-manifest-test-secret-{index}-0123456789abcdefghij\n")
        proxy_yaml = proxy_yaml.replace(f"{{file: {path}}}", f"{{file: {local}}}")
        made.append(local)
    return proxy_yaml, made


def quantity(text: str | int) -> float:
    """A Kubernetes quantity (``250m``, ``1``, ``128Mi``) as a plain number."""
    units = {"m": 1e-3, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    match = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi)?", str(text))
    assert match, text
    return float(match.group(1)) * units.get(match.group(2) or "", 1)


# --- the probes and the ports ----------------------------------------------------------------


def test_probes_ask_the_admin_paths_on_the_configured_admin_port(
    sidecar: Manifest, config: Config
) -> None:
    served = {resource.canonical for resource in admin_app(lambda: config).router.resources()}
    probes = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    assert config.admin_listen is not None
    for probe, path in probes.items():
        http_get = sidecar[probe]["httpGet"]
        assert http_get["path"] == path
        assert path in served
        assert port_number(sidecar, http_get["port"]) == config.admin_listen.port


def test_the_proxy_listens_on_the_pod_ip_at_the_containers_ports(
    sidecar: Manifest, config: Config
) -> None:
    assert config.admin_listen is not None
    assert port_number(sidecar, "http") == config.listen.port
    assert port_number(sidecar, "admin") == config.admin_listen.port
    # The kubelet probes the pod IP: a loopback admin_listen would fail every probe.
    assert (config.listen.host, config.admin_listen.host) == ("0.0.0.0", "0.0.0.0")


def test_the_service_and_the_ingress_reach_the_proxy_port_only(
    documents: dict[str, Manifest], pod: Manifest, sidecar: Manifest, config: Config
) -> None:
    service = documents["Service"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port_number(sidecar, port["targetPort"]) == config.listen.port
    backends = [
        path["backend"]["service"]
        for rule in documents["Ingress"]["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends == [{"name": service["metadata"]["name"], "port": {"name": port["name"]}}]


def test_the_application_listens_on_loopback_where_the_upstream_points(
    pod: Manifest, config: Config
) -> None:
    env = {e["name"]: e["value"] for e in container(pod, "app")["env"]}
    ((upstream_host, upstream_port),) = {(u.host, u.port) for u in config.upstreams}
    assert (env["HOST"], int(env["PORT"])) == (upstream_host, upstream_port) == ("127.0.0.1", 8001)


# --- the configuration -------------------------------------------------------------------


def test_check_config_accepts_the_configmaps_proxy_yaml(proxy_yaml: str, tmp_path: Path) -> None:
    text, made = with_local_secrets(proxy_yaml, tmp_path)
    assert made, "the secrets come from files"
    path = tmp_path / "proxy.yaml"
    path.write_text(text)
    done = subprocess.run(
        [str(Path(sys.executable).with_name("session-sidecar")), "check-config", "-c", str(path)],
        env={k: v for k, v in os.environ.items() if k != "SESSION_SIDECAR_CONFIG"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{path}: OK\n")
    assert done.stderr == ""  # no warning either


def test_the_proxy_reads_the_mounted_configmap_and_secret(
    documents: dict[str, Manifest], pod: Manifest, sidecar: Manifest, proxy_yaml: str
) -> None:
    mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    config_path = sidecar["args"][sidecar["args"].index("-c") + 1]
    assert config_path == f"{mounts['config']}/proxy.yaml"
    assert volumes["config"]["configMap"]["name"] == documents["ConfigMap"]["metadata"]["name"]
    # Whole-directory mounts, never subPath: a subPath mount is never updated for a reload.
    assert not any("subPath" in m for m in sidecar["volumeMounts"])
    for path in secret_files(proxy_yaml):
        assert Path(path).parent == Path(mounts["secrets"])
    assert "secretName" in volumes["secrets"]["secret"]


def test_the_grace_period_covers_the_prestop_sleep_and_the_shutdown_timeout(
    pod: Manifest, sidecar: Manifest, config: Config
) -> None:
    assert sidecar["lifecycle"]["preStop"]["exec"]["command"] == PRESTOP_SLEEP
    needed = int(PRESTOP_SLEEP[1]) + config.shutdown_timeout
    assert pod["spec"]["terminationGracePeriodSeconds"] > needed


# --- resources, disruption, hardening ------------------------------------------------------


@pytest.mark.parametrize("name", ["app", SIDECAR])
def test_every_container_has_cpu_and_memory_requests_within_its_limits(
    pod: Manifest, name: str
) -> None:
    resources = container(pod, name)["resources"]
    for resource in ("cpu", "memory"):
        request = quantity(resources["requests"][resource])
        limit = quantity(resources["limits"][resource])
        assert 0 < request <= limit, (name, resource)


def test_the_sidecars_memory_limit_leaves_room_above_the_soaks_rss(sidecar: Manifest) -> None:
    # docs/benchmarks.md: the 1,000,000-request soak peaked at 116.0 MiB with one worker.
    assert quantity(sidecar["resources"]["limits"]["memory"]) >= 2 * 116 * (1 << 20)


def test_the_disruption_budget_selects_these_pods_and_lets_a_drain_proceed(
    documents: dict[str, Manifest], pod: Manifest
) -> None:
    budget = documents["PodDisruptionBudget"]["spec"]
    deployment = documents["Deployment"]["spec"]
    selector = budget["selector"]["matchLabels"]
    assert selector == deployment["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    allowed = budget.get("maxUnavailable", deployment["replicas"] - budget.get("minAvailable", 0))
    assert 1 <= allowed < deployment["replicas"]


def test_the_sidecar_runs_as_the_images_non_root_user_with_nothing_more(
    sidecar: Manifest,
) -> None:
    assert f"USER {IMAGE_UID}:{IMAGE_UID}" in (REPO_ROOT / "Dockerfile").read_text()
    assert sidecar["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": IMAGE_UID,
        "runAsGroup": IMAGE_UID,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_the_pod_runs_non_root_under_the_runtimes_seccomp_profile(pod: Manifest) -> None:
    context = pod["spec"]["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    for each in pod["spec"]["containers"]:
        assert each["securityContext"]["readOnlyRootFilesystem"] is True
        assert each["securityContext"]["capabilities"] == {"drop": ["ALL"]}


# --- the images, TLS, and the doc --------------------------------------------------------


def test_the_images_are_the_ones_docker_compose_builds(pod: Manifest) -> None:
    services = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    assert container(pod, SIDECAR)["image"] == services["proxy"]["image"]
    assert container(pod, "app")["image"] == services["backend-python"]["image"]


def test_tls_ends_at_the_ingress_with_the_measured_nginx_buffer(
    documents: dict[str, Manifest],
) -> None:
    ingress = documents["Ingress"]
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    assert {h for tls in ingress["spec"]["tls"] for h in tls["hosts"]} == hosts
    assert all(tls["secretName"] for tls in ingress["spec"]["tls"])
    annotations = ingress["metadata"]["annotations"]
    # What the real-nginx tests ran with (tests/integration/test_front_proxies.py).
    tested = dict(re.findall(r"(proxy_buffer_size|proxy_buffers)\s+([^;]+);", NGINX_SETTINGS))
    assert (
        annotations["nginx.ingress.kubernetes.io/proxy-buffer-size"] == tested["proxy_buffer_size"]
    )
    # ingress-nginx writes "proxy_buffers <number> <proxy-buffer-size>".
    number, size = tested["proxy_buffers"].split()
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffers-number"] == number
    assert size == tested["proxy_buffer_size"]


def test_docs_deployment_md_shows_this_manifest(documents: dict[str, Manifest]) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DEPLOYMENT_DOC.read_text(), re.DOTALL)
    shown = [b for b in blocks if "kind: PodDisruptionBudget" in b]
    assert len(shown) == 1
    in_doc = {d["kind"]: d for d in yaml.safe_load_all(shown[0]) if d}
    assert in_doc == documents
