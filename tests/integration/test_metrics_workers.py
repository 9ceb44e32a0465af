"""The supervisor's /metrics of a real two-worker proxy: every worker's process gauges, load,
reloads, key ids, session sizes by direction and invalid sessions by reason.

The worker whose series must disappear is killed in the last test of the module.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from proxy.session_keys import KeyRing
from tests.integration.admin_scrape import (
    Series,
    admin_url,
    answers,
    call,
    samples,
    scrape,
    value,
    wait_for,
)
from tests.integration.backends import RunningBackend
from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import CookieClient, RawConnection
from tests.integration.scripted_backend import HANG_PATH, ScriptedBackend
from tests.integration.sidecar import SECRET_1, SECRET_2, RunningProxy, base_config

pytestmark = pytest.mark.integration

PROCESS_GAUGES = (
    "session_sidecar_worker_resident_memory_bytes",
    "session_sidecar_worker_cpu_seconds",
    "session_sidecar_worker_open_fds",
)
KEYS = "session_sidecar_session_key_info"


@pytest.fixture(scope="module")
def hanging() -> Iterator[ScriptedBackend]:
    with ScriptedBackend() as running:
        yield running


def proxy_config(python_backend: RunningBackend, hanging: ScriptedBackend) -> dict[str, Any]:
    upstreams = [
        {"name": "app", "url": python_backend.url, "timeout": 5},
        {"name": "hang", "url": hanging.url, "path_prefix": HANG_PATH, "timeout": 30},
    ]
    return base_config(
        python_backend.url,
        upstreams=upstreams,
        admin_listen="127.0.0.1:0",
        log_format="json",
        workers=2,
    )


@pytest.fixture(scope="module")
def proxy(
    python_backend: RunningBackend,
    hanging: ScriptedBackend,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningProxy]:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory.mktemp("multiproc"))}
    config = proxy_config(python_backend, hanging)
    with WATCH.start_proxy(config, env=env) as running:
        wait_for(lambda: len(worker_pids(running)) == 2)
        wait_for(lambda: answers(admin_url(running)))
        yield running


def worker_pids(proxy: RunningProxy) -> set[str]:
    """Pids of the workers that said they listen (restarted ones included)."""
    found = set(re.findall(r"listening on \S+ \(pid (\d+)\)", proxy.output()))
    return {pid for pid in found if pid != str(proxy.process.pid)}


def gauge_pids(series: Series, name: str) -> set[str]:
    return {dict(labels)["pid"] for labels in samples(series, name)}


def live_pids(proxy: RunningProxy) -> set[str]:
    return {pid for pid in worker_pids(proxy) if os.path.exists(f"/proc/{pid}")}


def test_every_worker_has_its_memory_cpu_and_fds_labelled_by_pid(proxy: RunningProxy) -> None:
    pids = live_pids(proxy)
    wait_for(lambda: all(gauge_pids(scrape(proxy), g) == pids for g in PROCESS_GAUGES))
    series = scrape(proxy)
    for pid in pids:
        assert value(series, PROCESS_GAUGES[0], pid=pid) > 10 * 2**20  # a Python process
        assert value(series, PROCESS_GAUGES[1], pid=pid) > 0
        assert value(series, PROCESS_GAUGES[2], pid=pid) >= 4  # stdio, the socket, epoll
    assert str(proxy.process.pid) not in gauge_pids(series, PROCESS_GAUGES[0])


def test_requests_in_flight_and_client_connections_are_added_over_workers(
    proxy: RunningProxy, hanging: ScriptedBackend
) -> None:
    idle = [RawConnection(proxy.port) for _ in range(3)]
    hanging.hanging.clear()
    busy = RawConnection(proxy.port)
    try:
        busy.send(f"GET {HANG_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert hanging.hanging.wait(5)
        wait_for(
            lambda: (
                (
                    value(scrape(proxy), "session_sidecar_in_flight_requests"),
                    value(scrape(proxy), "session_sidecar_client_connections"),
                )
                == (1, 4)
            )
        )
    finally:
        busy.close()
        for connection in idle:
            connection.close()
    wait_for(lambda: value(scrape(proxy), "session_sidecar_client_connections") == 0)
    assert value(scrape(proxy), "session_sidecar_in_flight_requests") == 0


def test_session_bytes_are_counted_by_direction(proxy: RunningProxy) -> None:
    before = scrape(proxy)
    with CookieClient(proxy.url) as client:
        assert client.set_session({"user": "direction"}).status == 200  # out
        for cookie in client.cookies.values():
            WATCH.sensitive(cookie)
        assert client.whoami()["session"] == {"user": "direction"}  # in

    def grew(direction: str) -> float:
        name = "session_sidecar_session_bytes_count"
        return value(scrape(proxy), name, direction=direction) - value(
            before, name, direction=direction
        )

    wait_for(lambda: (grew("in"), grew("out")) == (1, 1))


def test_invalid_sessions_are_counted_by_reason(proxy: RunningProxy) -> None:
    name = "session_sidecar_invalid_sessions_total"
    before = scrape(proxy)
    with CookieClient(proxy.url) as client:
        client.set_session({"user": "tamper"})
        for cookie in client.cookies.values():
            WATCH.sensitive(cookie)
        token = client.cookies["session.0"]
        middle = len(token) - 20
        client.cookies["session.0"] = (
            token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
        )
        assert client.whoami()["status"] == "invalid"
        client.cookies["session.0"] = "garbage"
        assert client.whoami()["status"] == "invalid"

    def grew(reason: str) -> float:
        return value(scrape(proxy), name, reason=reason) - value(before, name, reason=reason)

    wait_for(lambda: (grew("bad_signature"), grew("malformed"), grew("other")) == (1, 1, 0))


def test_reloads_are_counted_by_outcome_and_the_key_ids_in_force_follow(
    proxy: RunningProxy, python_backend: RunningBackend, hanging: ScriptedBackend
) -> None:
    old_kid = KeyRing([SECRET_1.encode()]).newest.kid
    new_kid = KeyRing([SECRET_2.encode()]).newest.kid
    assert keys_shown(scrape(proxy)) == {("0", old_kid, "signs")}
    before = scrape(proxy)
    config = proxy_config(python_backend, hanging)
    config["admin_listen"] = admin_url(proxy).removeprefix("http://")
    config["secrets"] = [SECRET_2, SECRET_1]  # rotation: a new key in front
    proxy.rewrite_config(config)
    proxy.signal(signal.SIGHUP)
    wait_for(lambda: reloads(scrape(proxy), before, "ok") == 1)
    assert keys_shown(scrape(proxy)) == {("0", new_kid, "signs"), ("1", old_kid, "verifies")}
    config["cookie"] = {"colour": "blue"}  # refused: an unknown key
    proxy.rewrite_config(config)
    proxy.signal(signal.SIGHUP)
    wait_for(lambda: reloads(scrape(proxy), before, "refused") == 1)
    assert reloads(scrape(proxy), before, "ok") == 1
    assert len(keys_shown(scrape(proxy))) == 2  # the running configuration stays
    page = call(admin_url(proxy), "/metrics").body.decode()
    assert SECRET_1 not in page and SECRET_2 not in page
    # A worker restarted later reads the file: leave a valid one.
    config["cookie"] = {"secure": False}
    proxy.rewrite_config(config)


def keys_shown(series: Series) -> set[tuple[str, str, str]]:
    return {
        (dict(labels)["index"], dict(labels)["kid"], dict(labels)["role"])
        for labels in samples(series, KEYS)
    }


def reloads(series: Series, before: Series, outcome: str) -> float:
    name = "session_sidecar_reloads_total"
    return value(series, name, outcome=outcome) - value(before, name, outcome=outcome)


def test_a_dead_workers_series_disappear_and_its_successor_appears(proxy: RunningProxy) -> None:
    pids = live_pids(proxy)
    wait_for(lambda: gauge_pids(scrape(proxy), PROCESS_GAUGES[0]) == pids)
    victim = sorted(pids)[0]
    os.kill(int(victim), signal.SIGKILL)
    wait_for(lambda: len(live_pids(proxy)) == 2 and victim not in live_pids(proxy), 20)
    successors = live_pids(proxy)
    wait_for(lambda: all(gauge_pids(scrape(proxy), g) == successors for g in PROCESS_GAUGES))
    assert victim not in gauge_pids(scrape(proxy), PROCESS_GAUGES[0])


def test_a_dead_worker_waits_for_a_valid_file_instead_of_failing_again_and_again(
    proxy: RunningProxy, python_backend: RunningBackend, hanging: ScriptedBackend
) -> None:
    config = proxy_config(python_backend, hanging)
    config["admin_listen"] = admin_url(proxy).removeprefix("http://")
    good = dict(config)
    config["cookie"] = {"colour": "blue"}
    proxy.rewrite_config(config)  # no SIGHUP: the file is simply broken now
    pids = live_pids(proxy)
    victim, survivor = sorted(pids)
    os.kill(int(victim), signal.SIGKILL)
    notice = "not restarting it while"
    wait_for(lambda: notice in proxy.output())
    time.sleep(2)  # four supervision rounds
    assert proxy.output().count(notice) == 1
    assert live_pids(proxy) == {survivor}
    wait_for(lambda: gauge_pids(scrape(proxy), PROCESS_GAUGES[0]) == {survivor})
    assert call(proxy.url, "/whoami").status == 200  # the survivor serves
    proxy.rewrite_config(good)
    wait_for(lambda: len(live_pids(proxy)) == 2, 20)
    assert victim not in live_pids(proxy)


def test_a_worker_refilled_from_a_changed_file_makes_every_worker_reload_it(
    proxy: RunningProxy, python_backend: RunningBackend, hanging: ScriptedBackend
) -> None:
    # A restarted worker reads the file as it is now. If that is a rotation to SECRET_2 that
    # nobody SIGHUPed, the survivor must take it too: one SECRET_1 session, valid on one
    # worker and invalid on the other, is the split this prevents.
    config = proxy_config(python_backend, hanging)
    config["admin_listen"] = admin_url(proxy).removeprefix("http://")
    rotated = {**config, "secrets": [SECRET_2]}
    broken = {**config, "cookie": {"colour": "blue"}}
    proxy.rewrite_config(broken)
    victim, survivor = sorted(live_pids(proxy))
    reloaded = proxy.output().count("configuration reloaded")
    os.kill(int(victim), signal.SIGKILL)
    wait_for(lambda: proxy.output().count("not restarting it while") >= 2)
    proxy.rewrite_config(rotated)  # valid again, and different from what runs; no SIGHUP
    wait_for(lambda: len(live_pids(proxy)) == 2, 20)
    wait_for(lambda: proxy.output().count("configuration reloaded") > reloaded)
    assert survivor in live_pids(proxy)
    new_kid = KeyRing([SECRET_2.encode()]).newest.kid
    wait_for(lambda: keys_shown(scrape(proxy)) == {("0", new_kid, "signs")})
    # Both workers now sign with SECRET_2: a session set now is valid on every connection.
    with CookieClient(proxy.url) as client:
        client.set_session({"user": "after-rotation"})
        statuses = set()
        for _ in range(12):  # a new connection each time: the kernel picks the worker
            statuses.add(client.whoami({"Connection": "close"})["status"])
    assert statuses == {"valid"}
