"""The access log's ``client``: behind a trusted front proxy, the client X-Forwarded-For names.

Every request comes from 127.0.0.1 here. With 127.0.0.1 trusted, the proxy is a front
proxy's neighbour and reads X-Forwarded-For right to left; with it untrusted, the header is
the client's own word and ``client`` stays the peer.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.admin_scrape import access_line, call
from tests.integration.backends import RunningBackend
from tests.integration.log_watch import WATCH
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = pytest.mark.integration


def start(backend: RunningBackend, trusted: list[str]) -> RunningProxy:
    config = base_config(backend.url, log_format="json", trusted_proxies=trusted)
    return WATCH.start_proxy(config)


@pytest.fixture(scope="module")
def behind_trusted(python_backend: RunningBackend) -> Iterator[RunningProxy]:
    with start(python_backend, ["127.0.0.1/32", "10.0.0.0/8"]) as running:
        yield running


@pytest.fixture(scope="module")
def behind_untrusted(python_backend: RunningBackend) -> Iterator[RunningProxy]:
    with start(python_backend, ["10.0.0.0/8"]) as running:
        yield running


def client_logged(proxy: RunningProxy, request_id: str, forwarded_for: str | None) -> str:
    headers = {"X-Request-Id": request_id}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    assert call(proxy.url, "/whoami", headers=headers).status == 200
    client: str = access_line(proxy, request_id)["client"]
    return client


def test_the_client_is_the_address_the_trusted_front_proxy_names(
    behind_trusted: RunningProxy,
) -> None:
    assert client_logged(behind_trusted, "xff-1", "198.51.100.7") == "198.51.100.7"


def test_trusted_hops_are_skipped_and_what_the_client_wrote_itself_is_not_believed(
    behind_trusted: RunningProxy,
) -> None:
    # The client forged 203.0.113.66; the front proxy appended 198.51.100.7; an internal
    # 10.x hop came after it.
    forwarded = "203.0.113.66, 198.51.100.7, 10.1.2.3"
    assert client_logged(behind_trusted, "xff-2", forwarded) == "198.51.100.7"


def test_a_trusted_peer_without_x_forwarded_for_is_the_client(
    behind_trusted: RunningProxy,
) -> None:
    assert client_logged(behind_trusted, "xff-3", None) == "127.0.0.1"


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(
    behind_untrusted: RunningProxy,
) -> None:
    assert client_logged(behind_untrusted, "xff-4", "198.51.100.7") == "127.0.0.1"
