"""The example backends, reached directly without the sidecar: the contract the proxy relies on."""

import asyncio
import hashlib
import http.client
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.integration.admin_scrape import Reply
from tests.integration.admin_scrape import call as call_url
from tests.integration.backends import BACKEND_KINDS, BackendKind, RunningBackend, start_backend

pytestmark = [pytest.mark.integration, pytest.mark.system]

PATTERN = bytes(range(256))


def call(
    backend: RunningBackend,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    return call_url(backend.url, path, method, body, headers)


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


@pytest.fixture(scope="module", params=BACKEND_KINDS)
def backend(request: pytest.FixtureRequest) -> Iterator[RunningBackend]:
    with start_backend(request.param) as running:
        yield running


def test_healthz_answers_ok(backend: RunningBackend) -> None:
    reply = call(backend, "GET", "/healthz")
    assert (reply.status, reply.body) == (200, b"ok")


def test_startup_logs_one_listening_line(backend: RunningBackend) -> None:
    assert backend.output().splitlines()[0] == f"listening on 127.0.0.1:{backend.port}"


def test_whoami_echoes_session_headers(backend: RunningBackend) -> None:
    session = {"user": "ada", "n": 1}
    reply = call(
        backend,
        "GET",
        "/whoami?x=1",
        headers={
            "X-Session": compact(session),
            "X-Session-Status": "valid",
            "Cookie": "a=1; b=2",
        },
    )
    assert reply.status == 200
    body = reply.json()
    assert body["backend"] == backend.kind
    assert body["path"] == "/whoami?x=1"
    assert body["method"] == "GET"
    assert body["session"] == session
    assert body["session_raw"] == compact(session)
    assert body["status"] == "valid"
    assert body["cookie"] == "a=1; b=2"
    assert body["headers"]["x-session-status"] == "valid"
    assert body["headers"]["host"] == f"{backend.host}:{backend.port}"


def test_whoami_without_session_headers_reports_nulls(backend: RunningBackend) -> None:
    body = call(backend, "GET", "/whoami").json()
    assert (body["session"], body["session_raw"], body["status"], body["cookie"]) == (
        None,
        None,
        None,
        None,
    )


def test_whoami_joins_repeated_headers_with_commas(backend: RunningBackend) -> None:
    connection = http.client.HTTPConnection(backend.host, backend.port, timeout=30)
    try:
        connection.putrequest("GET", "/whoami")
        connection.putheader("X-Repeated", "one")
        connection.putheader("X-Repeated", "two")
        connection.endheaders()
        body = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    assert body["headers"]["x-repeated"] == "one, two"


@pytest.mark.parametrize("path", ["/", "/anything/else?q=1"])
def test_unknown_get_path_answers_like_whoami(backend: RunningBackend, path: str) -> None:
    reply = call(backend, "GET", path, headers={"X-Session": "{}"})
    assert reply.status == 200
    assert reply.json()["path"] == path
    assert reply.json()["session"] == {}


def test_unknown_post_path_is_not_found(backend: RunningBackend) -> None:
    assert call(backend, "POST", "/nowhere", body=b"{}").status == 404


def test_post_session_replaces_it_through_x_set_session(backend: RunningBackend) -> None:
    reply = call(
        backend,
        "POST",
        "/session",
        body=json.dumps({"user": "ada", "name": "Zoë"}).encode(),
        headers={"Content-Type": "application/json", "X-Session": '{"old":true}'},
    )
    assert reply.status == 200
    assert reply.json() == {"ok": True}
    [encoded] = reply.headers.get_all("X-Set-Session") or []
    assert json.loads(encoded) == {"user": "ada", "name": "Zoë"}
    assert encoded == compact(json.loads(encoded))  # Compact, non-ASCII escaped; any key order.


def test_post_session_rejects_a_body_that_is_not_an_object(backend: RunningBackend) -> None:
    reply = call(backend, "POST", "/session", body=b"[1, 2]")
    assert reply.status == 400
    assert reply.headers.get("X-Set-Session") is None


def test_merge_adds_keys_to_the_current_session(backend: RunningBackend) -> None:
    reply = call(
        backend,
        "POST",
        "/session/merge",
        body=b'{"b": 3, "c": 4}',
        headers={"X-Session": '{"a":1,"b":2}'},
    )
    merged = {"a": 1, "b": 3, "c": 4}
    assert reply.json() == merged
    assert json.loads(reply.headers["X-Set-Session"]) == merged


def test_clear_answers_an_empty_object(backend: RunningBackend) -> None:
    reply = call(backend, "POST", "/session/clear", headers={"X-Session": '{"a":1}'})
    assert reply.headers.get_all("X-Set-Session") == ["{}"]
    assert reply.json() == {"ok": True}


def test_grow_adds_a_random_string_of_the_requested_size(backend: RunningBackend) -> None:
    reply = call(backend, "GET", "/session/grow?kb=3&key=pad", headers={"X-Session": '{"a":1}'})
    encoded = reply.headers["X-Set-Session"]
    session = json.loads(encoded)
    assert session["a"] == 1
    assert len(session["pad"]) == 3 * 1024
    assert len(set(session["pad"])) > 32  # Random, not a run of one character.
    assert reply.json() == {"bytes": len(encoded)}


def test_raw_set_session_sends_the_value_verbatim(backend: RunningBackend) -> None:
    value = '{"broken": tru'
    reply = call(backend, "GET", f"/raw-set-session?value={quote(value)}")
    assert reply.status == 200
    assert reply.headers.get_all("X-Set-Session") == [value]


def test_raw_set_session_sends_one_header_per_value(backend: RunningBackend) -> None:
    reply = call(backend, "GET", "/raw-set-session?value=%7B%7D&value=null")
    assert reply.headers.get_all("X-Set-Session") == ["{}", "null"]


def test_raw_set_session_refuses_a_line_break(backend: RunningBackend) -> None:
    reply = call(backend, "GET", "/raw-set-session?value=a%0D%0AX-Evil%3A%201")
    assert reply.status == 400
    assert reply.headers.get("X-Evil") is None


def test_set_cookies_sends_three_separate_headers(backend: RunningBackend) -> None:
    reply = call(backend, "GET", "/set-cookies")
    assert reply.headers.get_all("Set-Cookie") == [
        "a=1; Path=/",
        "b=2; Path=/; HttpOnly",
        "session.0=evil; Path=/",
    ]


def test_slow_waits_before_answering(backend: RunningBackend) -> None:
    started = time.monotonic()
    reply = call(backend, "GET", "/slow?seconds=0.3")
    assert time.monotonic() - started >= 0.3
    assert reply.json() == {"slept": 0.3}


@pytest.mark.parametrize("size", [0, 1000, 3 * 1024 * 1024 + 7])
def test_download_streams_the_pattern_with_content_length(
    backend: RunningBackend, size: int
) -> None:
    reply = call(backend, "GET", f"/download?bytes={size}")
    assert reply.headers["Content-Length"] == str(size)
    assert reply.body == (PATTERN * (size // 256 + 1))[:size]


def test_echo_returns_the_body_unchanged(backend: RunningBackend) -> None:
    payload = PATTERN * 4096 + b"tail"
    reply = call(backend, "POST", "/echo", body=payload)
    assert reply.headers["Content-Type"] == "application/octet-stream"
    assert reply.body == payload


def test_echo_returns_a_chunked_body_unchanged(backend: RunningBackend) -> None:
    chunks = [PATTERN * 300, b"middle", PATTERN * 700]
    connection = http.client.HTTPConnection(backend.host, backend.port, timeout=30)
    try:
        connection.request("POST", "/echo", body=iter(chunks), encode_chunked=True)
        body = connection.getresponse().read()
    finally:
        connection.close()
    assert body == b"".join(chunks)


def test_upload_reports_size_and_sha256(backend: RunningBackend) -> None:
    payload = PATTERN * 5000
    reply = call(backend, "POST", "/upload", body=payload)
    assert reply.json() == {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}


def test_reset_hangs_up_in_the_middle_of_the_body(backend: RunningBackend) -> None:
    connection = http.client.HTTPConnection(backend.host, backend.port, timeout=30)
    try:
        connection.request("GET", "/reset")
        response = connection.getresponse()
        assert response.headers["Content-Length"] == "1000000"
        with pytest.raises(http.client.IncompleteRead) as excinfo:
            response.read()
    finally:
        connection.close()
    assert len(excinfo.value.partial) == 1000


def test_large_session_and_cookie_headers_are_accepted(backend: RunningBackend) -> None:
    session = {"blob": "s" * (48 * 1024 - len('{"blob":""}'))}
    cookie = "; ".join(f"c{i}={'k' * 4000}" for i in range(15))
    assert len(compact(session)) == 48 * 1024
    assert len(cookie) > 60_000
    reply = call(
        backend, "GET", "/whoami", headers={"X-Session": compact(session), "Cookie": cookie}
    )
    assert reply.status == 200
    assert reply.json()["session"] == session
    assert reply.json()["cookie"] == cookie


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_sigterm_stops_the_backend_cleanly(kind: BackendKind) -> None:
    running = start_backend(kind)
    assert running.stop() == 0


@pytest.fixture(scope="module")
def python_backend() -> Iterator[RunningBackend]:
    with start_backend("python") as running:
        yield running


async def websocket_exchange(backend: RunningBackend) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"{backend.url}/ws",
            protocols=("superchat",),
            headers={"X-Session": '{"user":"ada"}'},
        ) as ws,
    ):
        await ws.send_str("hello")
        text = await ws.receive_str()
        await ws.send_bytes(b"\x00\xffbinary")
        binary = await ws.receive_bytes()
        await ws.send_str("session")
        handshake_session = await ws.receive_str()
        await ws.send_str("close")
        closing = await ws.receive()
        return {
            "protocol": ws.protocol,
            "text": text,
            "binary": binary,
            "session": handshake_session,
            "close_type": closing.type,
            "close_code": closing.data,
            "close_message": closing.extra,
        }


def test_python_websocket_echoes_negotiates_and_closes_with_4001(
    python_backend: RunningBackend,
) -> None:
    result = asyncio.run(websocket_exchange(python_backend))
    assert result == {
        "protocol": "superchat",
        "text": "hello",
        "binary": b"\x00\xffbinary",
        "session": '{"user":"ada"}',
        "close_type": aiohttp.WSMsgType.CLOSE,
        "close_code": 4001,
        "close_message": "bye",
    }
