"""Reading a running proxy's admin port and output: one request, a /metrics scrape, access lines.

Shared by the tests of the admin endpoints, the metrics and the upstream error causes.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.sidecar import RunningProxy

#: (sample name, labels) -> value, as one scrape of /metrics shows them.
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    base_url: str,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request on a fresh connection."""
    parts = urlsplit(base_url)
    assert parts.hostname is not None and parts.port is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.msg, response.read())
    finally:
        connection.close()


def admin_url(proxy: RunningProxy) -> str:
    assert proxy.admin_url is not None
    return proxy.admin_url


def answers(base_url: str) -> bool:
    """Does the admin port answer /healthz yet?"""
    try:
        return call(base_url, "/healthz").status == 200
    except OSError:
        return False


def scrape(proxy: RunningProxy) -> Series:
    reply = call(admin_url(proxy), "/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    series: Series = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for s in family.samples:
            series[(s.name, frozenset(s.labels.items()))] = s.value
    return series


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, frozenset(labels.items())), 0.0)


def samples(series: Series, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every series of one sample name: labels -> value."""
    return {labels: v for (n, labels), v in series.items() if n == name}


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def json_lines(proxy: RunningProxy) -> list[dict[str, Any]]:
    """Every JSON line of the proxy's output (stdout and stderr share its output file)."""
    return [json.loads(line) for line in proxy.output().splitlines() if line.startswith("{")]


def access_lines(proxy: RunningProxy) -> list[dict[str, Any]]:
    """The access log lines."""
    return [entry for entry in json_lines(proxy) if "request_id" in entry]


def access_line(proxy: RunningProxy, request_id: str) -> dict[str, Any]:
    """The access line of one request, once it is written (within 50 ms of its end)."""
    found: list[dict[str, Any]] = []

    def written() -> bool:
        found[:] = [e for e in access_lines(proxy) if e["request_id"] == request_id]
        return bool(found)

    wait_for(written)
    assert len(found) == 1, found
    return found[0]


def process_lines(proxy: RunningProxy, level: str | None = None) -> list[dict[str, Any]]:
    """The process log lines (JSON), of one level if given."""
    return [
        e for e in json_lines(proxy) if "logger" in e and (level is None or e["level"] == level)
    ]
