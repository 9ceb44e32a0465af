"""A client tries to turn its connection into a raw tunnel, to reach the backend unfiltered.

The attack (issue 7, item 1): an upgrade request to a route that can answer 101 (a status
echo), followed in the same write by a request carrying a forged ``X-Session``. If the proxy
relayed bytes after any 101, the forged request would reach the backend as the client wrote
it. Asserted on what a real Node.js ``http`` server parsed, and on every byte a raw upstream
received.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from proxy.websocket_tunnel import accept_for
from tests.adversarial.real_backends import parsed_by
from tests.integration.backends import RunningBackend
from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import RawConnection
from tests.integration.scripted_backend import ScriptedBackend
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = [pytest.mark.integration, pytest.mark.system]

FORGED = '{"user":"admin-forged-marker"}'
KEY = base64.b64encode(os.urandom(16)).decode()
SMUGGLED = (
    "GET /whoami?id=smuggled HTTP/1.1\r\nHost: app\r\n"
    f"X-Session: {FORGED}\r\nX-Session-Status: valid\r\n\r\n"
)


@pytest.fixture(scope="module")
def proxy(hostile: RunningBackend) -> Iterator[RunningProxy]:
    with WATCH.start_proxy(base_config(hostile.url)) as running:
        yield running


def upgrade(
    path: str, key: str | None = KEY, version: str = "13", upgrade: str = "websocket"
) -> str:
    lines = [f"GET {path} HTTP/1.1", "Host: app", f"Upgrade: {upgrade}", "Connection: Upgrade"]
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    lines.append(f"Sec-WebSocket-Version: {version}")
    return "\r\n".join(lines) + "\r\n\r\n"


def assert_nothing_smuggled(seen: list[dict[str, Any]]) -> None:
    assert all("smuggled" not in entry["url"] for entry in seen), seen
    assert all(FORGED not in json.dumps(entry) for entry in seen), seen


# A status-echo route answering 101 in every way a handler could, none of them the answer to
# this handshake: bare, with Upgrade and Connection, with a wrong or another key's accept.
FAKE_101 = {
    "bare": "/status/101",
    "upgrade_headers": "/status/101?upgrade=1",
    "wrong_accept": "/status/101?upgrade=1&accept=dGhlIHNhbXBsZSBub25jZQ==",
    "other_keys_accept": f"/status/101?upgrade=1&accept={accept_for('x3JJHMbDL1EzLkh9GBhXDw==')}",
}


@pytest.mark.parametrize("path", FAKE_101.values(), ids=FAKE_101.keys())
def test_a_101_that_does_not_answer_the_handshake_is_a_502_and_nothing_after_it_is_relayed(
    proxy: RunningProxy, hostile: RunningBackend, path: str
) -> None:
    parsed_by(hostile)
    with RawConnection(proxy.port) as client:
        client.send(upgrade(path) + SMUGGLED)
        reply = client.read_response()
        assert reply.status == 502
        assert reply.json() == {"error": "upstream_bad_response"}
        assert reply.header("Connection") == "close"
        assert reply.header("Upgrade") is None
        assert client.wait_closed(5) in ("eof", "reset")
    seen = parsed_by(hostile)
    assert [entry["url"] for entry in seen] == [path]
    assert_nothing_smuggled(seen)


@pytest.mark.parametrize(
    ("key", "version", "status"),
    [
        (None, "13", 400),  # no key
        ("dG9vc2hvcnQ=", "13", 400),  # base64 of 8 bytes, not 16
        ("not base64 at all!!!!!!=", "13", 400),
        (KEY + "AAAA", "13", 400),  # 19 bytes
        (KEY, "8", 426),  # an older draft
        (KEY, "", 426),
    ],
    ids=["no_key", "short_key", "garbage_key", "long_key", "version_8", "no_version"],
)
def test_an_upgrade_that_is_not_a_valid_handshake_never_reaches_the_backend(
    proxy: RunningProxy, hostile: RunningBackend, key: str | None, version: str, status: int
) -> None:
    parsed_by(hostile)
    with RawConnection(proxy.port) as client:
        client.send(upgrade("/status/101?upgrade=1", key=key, version=version) + SMUGGLED)
        reply = client.read_response()
        assert reply.status == status
        if status == 426:
            assert reply.header("Sec-WebSocket-Version") == "13"  # RFC 6455 section 4.4
        assert client.wait_closed(5) in ("eof", "reset")
    assert parsed_by(hostile) == []


def test_a_non_websocket_upgrade_is_forwarded_as_a_plain_request(
    proxy: RunningProxy, hostile: RunningBackend
) -> None:
    # h2c and friends: the proxy does not switch, so the backend must see neither Upgrade nor
    # a Connection naming it, and a 101 to it is a 502.
    parsed_by(hostile)
    with RawConnection(proxy.port) as client:
        client.send(upgrade("/whoami?id=h2c", key=None, upgrade="h2c"))
        reply = client.read_response()
        assert reply.status == 200
        assert reply.json()["id"] == "h2c"
    (entry,) = parsed_by(hostile)
    names = {name.lower() for name in entry["headers"][::2]}
    assert "upgrade" not in names
    assert "sec-websocket-version" in names  # an end-to-end header: passed on untouched
    with RawConnection(proxy.port) as client:
        client.send(upgrade("/status/101?upgrade=1", key=None, upgrade="h2c") + SMUGGLED)
        assert client.read_response().status == 502
    assert_nothing_smuggled(parsed_by(hostile))


def test_no_upgrade_header_is_added_that_the_backend_did_not_send(
    proxy: RunningProxy, hostile: RunningBackend
) -> None:
    # A valid handshake answered 200 by the backend: a plain response, closed after it.
    with RawConnection(proxy.port) as client:
        client.send(upgrade("/whoami?id=ws-refused"))
        reply = client.read_response()
        assert reply.status == 200
        assert reply.header("Upgrade") is None
        assert reply.header("Connection") == "close"


def test_every_byte_a_raw_upstream_receives_after_a_fake_101_is_nothing() -> None:
    # The raw upstream answers every request with a 101 carrying Upgrade and Connection but no
    # accept, and records every byte of the connection: the smuggled request must not be there.
    fake = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        b"raw bytes from the upstream"
    )
    with (
        ScriptedBackend({"/ws": fake}) as upstream,
        WATCH.start_proxy(base_config(upstream.url)) as proxy,
        RawConnection(proxy.port) as client,
    ):
        client.send(upgrade("/ws") + SMUGGLED)
        reply = client.read_response()
        assert reply.status == 502
        rest = client.wait_closed(5)
        assert rest in ("eof", "reset")
        assert b"raw bytes" not in client.leftover()
        upstream.wait_idle(5)
        received = b"".join(upstream.received)
    assert b"smuggled" not in received
    assert FORGED.encode() not in received
    assert received.count(b"GET /ws HTTP/1.1") == 1


def test_fields_a_genuine_101_names_in_connection_stay_on_its_hop() -> None:
    # RFC 9110 section 7.6.1, on a 101 too: X-Hop is named by Connection, so it is this hop's.
    genuine = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade, X-Hop\r\nX-Hop: secret-route\r\nX-Kept: 1\r\n"
        f"Sec-WebSocket-Accept: {accept_for(KEY)}\r\n\r\n"
    ).encode()
    with (
        ScriptedBackend({"/ws": genuine}) as upstream,
        WATCH.start_proxy(base_config(upstream.url)) as proxy,
        RawConnection(proxy.port) as client,
    ):
        client.send(upgrade("/ws"))
        reply = client.read_response()
    assert reply.status == 101
    assert reply.header("X-Hop") is None
    assert reply.header("X-Kept") == "1"
    assert reply.header("Upgrade") == "websocket"
    assert reply.header("Connection") == "Upgrade"
    assert reply.header("Sec-WebSocket-Accept") == accept_for(KEY)
