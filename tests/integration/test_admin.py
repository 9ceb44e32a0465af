"""Admin endpoints, metrics and the access log of a real proxy in front of a real backend."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from prometheus_client.multiprocess import MultiProcessCollector

from proxy.metrics import FLUSH_INTERVAL
from proxy.session_keys import KeyRing
from tests.integration.admin_scrape import (
    Reply,
    Series,
    access_lines,
    admin_url,
    answers,
    call,
    scrape,
    value,
    wait_for,
)
from tests.integration.backends import REPO_ROOT, RunningBackend, free_port, start_backend
from tests.integration.sidecar import SECRET_1, RunningProxy, base_config, start_proxy

pytestmark = pytest.mark.integration

ACCESS_KEYS = {
    "time",
    "request_id",
    "client",
    "method",
    "path",
    "status",
    "upstream",
    "duration_ms",
    "bytes_in",
    "bytes_out",
    "session",
    "session_change",
}
SESSION = {"user": "alice", "marker": "session-content-marker-5b1e"}


def cookie_pairs(reply: Reply) -> dict[str, str]:
    """name -> value of every Set-Cookie in a reply."""
    pairs = {}
    for header in reply.headers.get_all("Set-Cookie") or []:
        name, _, rest = header.partition("=")
        pairs[name] = rest.split(";", 1)[0]
    return pairs


@pytest.fixture(scope="module")
def backend() -> Iterator[RunningBackend]:
    with start_backend("python") as running:
        yield running


@pytest.fixture(scope="module")
def proxy(backend: RunningBackend) -> Iterator[RunningProxy]:
    config = base_config(backend.url, admin_listen="127.0.0.1:0", log_format="json")
    with start_proxy(config) as running:
        wait_for(lambda: answers(admin_url(running)))
        yield running


# --- health and readiness -----------------------------------------------------------------


def test_healthz_says_ok(proxy: RunningProxy) -> None:
    reply = call(admin_url(proxy), "/healthz")
    assert reply.status == 200
    assert reply.json() == {"status": "ok"}


def test_readyz_is_ready_while_the_upstream_accepts_connections(proxy: RunningProxy) -> None:
    reply = call(admin_url(proxy), "/readyz")
    assert reply.status == 200
    assert reply.json()["status"] == "ready"


def test_readyz_names_the_upstream_once_it_stops_accepting() -> None:
    backend = start_backend("python")
    config = base_config(backend.url, admin_listen="127.0.0.1:0", log_format="json")
    with backend, start_proxy(config) as proxy:
        wait_for(lambda: answers(admin_url(proxy)))
        assert call(admin_url(proxy), "/readyz").status == 200
        backend.stop()
        began = time.monotonic()
        reply = call(admin_url(proxy), "/readyz")
        assert time.monotonic() - began < 2.0
        assert reply.status == 503
        assert reply.json() == {"status": "unavailable", "unreachable": {"app": "refused"}}
        assert call(admin_url(proxy), "/healthz").status == 200


def test_readyz_requires_all_any_or_the_named_upstreams_as_configured(
    backend: RunningBackend,
) -> None:
    upstreams = [
        {"name": "app", "url": backend.url},
        {"name": "static", "url": f"http://127.0.0.1:{free_port()}", "path_prefix": "/static"},
    ]
    config = base_config(
        backend.url, upstreams=upstreams, admin_listen="127.0.0.1:0", log_format="json"
    )
    with start_proxy(config) as proxy:
        wait_for(lambda: answers(admin_url(proxy)))
        down = {"static": "refused"}
        # The default, "all": one upstream down is enough to leave the load balancer.
        reply = call(admin_url(proxy), "/readyz")
        assert (reply.status, reply.json()) == (503, {"status": "unavailable", "unreachable": down})
        config["admin_listen"] = admin_url(proxy).removeprefix("http://")
        cases: list[tuple[object, int, dict[str, object]]] = [
            ("any", 200, {"status": "ready", "unreachable": down}),
            (["app"], 200, {"status": "ready"}),
            (["static"], 503, {"status": "unavailable", "unreachable": down}),
        ]
        for require, status, body in cases:
            config["readiness"] = {"require": require}
            proxy.rewrite_config(config)
            proxy.signal(signal.SIGHUP)
            wait_for(lambda body=body: call(admin_url(proxy), "/readyz").json() == body)  # type: ignore[misc]
            assert call(admin_url(proxy), "/readyz").status == status, require


@pytest.mark.parametrize("workers", [1, 2])
def test_admin_port_in_use_stops_the_proxy_with_a_clear_error(
    backend: RunningBackend, tmp_path: Path, workers: int
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        admin_port = taken.getsockname()[1]
        config = base_config(
            backend.url,
            listen=f"127.0.0.1:{free_port()}",
            admin_listen=f"127.0.0.1:{admin_port}",
            log_format="json",
            workers=workers,
        )
        config_path = tmp_path / "proxy.yaml"
        config_path.write_text(yaml.safe_dump(config))
        result = subprocess.run(
            [sys.executable, "-m", "proxy", "serve", "-c", str(config_path)],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"cannot listen on admin_listen 127.0.0.1:{admin_port}" in result.stderr
    assert "Traceback" not in result.stderr  # and no worker was left behind to fail


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_admin_paths_are_not_served_on_the_proxied_port(proxy: RunningProxy, path: str) -> None:
    reply = call(proxy.url, path)
    assert b"session_sidecar_" not in reply.body
    assert b'"status":"ok"' not in reply.body
    if path != "/healthz":  # the backend has a /healthz of its own, answering "ok"
        assert reply.json()["path"] == path
    assert reply.headers["X-Request-Id"]


# --- metrics ------------------------------------------------------------------------------


def test_metrics_count_requests_by_upstream_and_status(proxy: RunningProxy) -> None:
    before = scrape(proxy)
    for _ in range(3):
        assert call(proxy.url, "/whoami").status == 200
    assert call(proxy.url, "/anything", method="DELETE").status == 404
    after = scrape(proxy)
    ok = {"upstream": "app", "status": "200"}
    missing = {"upstream": "app", "status": "404"}
    name = "session_sidecar_requests_total"
    assert value(after, name, **ok) - value(before, name, **ok) == 3
    assert value(after, name, **missing) - value(before, name, **missing) == 1
    count = "session_sidecar_request_duration_seconds_count"
    assert value(after, count, upstream="app") - value(before, count, upstream="app") == 4


def test_metrics_count_session_outcomes(proxy: RunningProxy) -> None:
    before = scrape(proxy)
    body = json.dumps(SESSION).encode()
    created = call(proxy.url, "/session", "POST", body, {"Content-Type": "application/json"})
    assert created.status == 200
    cookie = "; ".join(f"{k}={v}" for k, v in cookie_pairs(created).items())
    reading = call(proxy.url, "/whoami", headers={"Cookie": cookie})
    assert reading.json()["session"] == SESSION
    assert call(proxy.url, "/whoami", headers={"Cookie": "session.0=forged"}).status == 200
    after = scrape(proxy)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("session_sidecar_sessions_total", state="absent") == 1
    assert delta("session_sidecar_sessions_total", state="valid") == 1
    assert delta("session_sidecar_sessions_total", state="invalid") == 1
    assert delta("session_sidecar_session_changes_total", change="set") == 1
    assert delta("session_sidecar_session_bytes_count", direction="out") == 1  # written once
    assert delta("session_sidecar_session_bytes_count", direction="in") == 1  # read once
    assert delta("session_sidecar_session_chunks_sum", direction="in") >= 1


def test_metrics_count_upstream_errors_by_kind(proxy: RunningProxy) -> None:
    before = scrape(proxy)
    with pytest.raises(http.client.IncompleteRead):  # the backend hangs up mid-body
        call(proxy.url, "/reset")
    after = scrape(proxy)
    name = "session_sidecar_upstream_errors_total"
    reset = {"upstream": "app", "kind": "reset"}
    assert value(after, name, **reset) - value(before, name, **reset) == 1


def test_a_single_process_shows_its_own_gauges_labelled_by_its_pid(proxy: RunningProxy) -> None:
    series = scrape(proxy)
    pid = str(proxy.process.pid)
    assert value(series, "session_sidecar_worker_resident_memory_bytes", pid=pid) > 10 * 2**20
    assert value(series, "session_sidecar_worker_open_fds", pid=pid) >= 4
    assert value(series, "session_sidecar_in_flight_requests") == 0
    assert ("session_sidecar_reloads_total", frozenset({("outcome", "refused")})) in series
    kid = KeyRing([SECRET_1.encode()]).newest.kid
    labels = frozenset({("index", "0"), ("kid", kid), ("role", "signs")})
    assert series[("session_sidecar_session_key_info", labels)] == 1


# --- the access log -----------------------------------------------------------------------


def test_access_log_has_one_json_line_per_request_and_no_secret(proxy: RunningProxy) -> None:
    body = json.dumps(SESSION).encode()
    created = call(
        proxy.url,
        "/session",
        "POST",
        body,
        {"Content-Type": "application/json", "X-Request-Id": "log-test-1"},
    )
    cookies = cookie_pairs(created)
    assert cookies
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    call(proxy.url, "/whoami?token=query-secret-42", headers={"X-Request-Id": "log-test-2"})
    call(proxy.url, "/whoami", headers={"Cookie": cookie, "X-Request-Id": "log-test-3"})
    ids = {"log-test-1", "log-test-2", "log-test-3"}
    wait_for(lambda: ids <= {e["request_id"] for e in access_lines(proxy)})

    entries = [e for e in access_lines(proxy) if e["request_id"] in ids]
    assert sorted(e["request_id"] for e in entries) == sorted(ids)
    by_id = {e["request_id"]: e for e in entries}
    for entry in entries:
        assert set(entry) == ACCESS_KEYS
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
        assert entry["upstream"] == "app"
        assert entry["status"] == 200
    assert (by_id["log-test-1"]["method"], by_id["log-test-1"]["session_change"]) == ("POST", "set")
    assert by_id["log-test-1"]["bytes_in"] == len(body)
    assert by_id["log-test-2"]["path"] == "/whoami"
    assert by_id["log-test-3"]["session"] == "valid"

    output = proxy.output()
    assert SECRET_1 not in output
    assert "query-secret-42" not in output
    assert SESSION["marker"] not in output
    for cookie_value in cookies.values():
        assert cookie_value not in output


# --- several workers ----------------------------------------------------------------------


def test_supervisor_metrics_count_every_worker(backend: RunningBackend, tmp_path: Path) -> None:
    config = base_config(backend.url, admin_listen="127.0.0.1:0", log_format="json", workers=2)
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with start_proxy(config, env=env) as proxy:
        wait_for(
            lambda: len(set(re.findall(r"listening on \S+ \(pid (\d+)\)", proxy.output()))) == 2
        )
        wait_for(lambda: answers(admin_url(proxy)))
        # The kernel hands each connection to whichever worker accepts first, so one worker may
        # take a whole sequential batch: send concurrent batches until both have counted some.
        sent = 0
        per_worker: list[float] = []
        with ThreadPoolExecutor(max_workers=20) as pool:
            for _ in range(20):
                batch = [f"/whoami?n={sent + i}" for i in range(20)]
                codes = list(pool.map(lambda path: call(proxy.url, path).status, batch))
                assert codes == [200] * 20
                sent += 20
                time.sleep(FLUSH_INTERVAL + 0.2)  # workers add their counts within a second
                files = sorted(tmp_path.glob("counter_*.db"))
                per_worker = [_requests_counted_in(file) for file in files]
                if len([n for n in per_worker if n > 0]) == 2:
                    break
        assert len([n for n in per_worker if n > 0]) == 2, per_worker
        assert sum(per_worker) == sent
        wait_for(lambda: requests_ok(scrape(proxy)) == sent)


def requests_ok(series: Series) -> float:
    return value(series, "session_sidecar_requests_total", upstream="app", status="200")


def _requests_counted_in(file: Path) -> float:
    """The requests one worker counted, read from its own multiprocess file."""
    families = MultiProcessCollector.merge([str(file)])  # type: ignore[no-untyped-call]
    return sum(
        float(s.value)
        for family in families
        for s in family.samples
        if s.name == "session_sidecar_requests_total"
    )
