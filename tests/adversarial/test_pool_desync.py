"""One client's half-written upload must never reach another client's request.

Issue 7, item 2: a backend that answers before a chunked upload ends. If the upstream
connection went back to the pool before the proxy had written the ``0\\r\\n\\r\\n`` terminator,
the next client's request on it would be parsed as chunk data. The race needs the client's
last chunk and the backend's answer to land in the same loop turn, so each case is repeated
with delays spread over that window; a second client then asks on what would be the pooled
connection, and the real Node.js backend must have parsed exactly the requests the proxy sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.real_backends import parsed_by
from tests.integration.backends import RunningBackend
from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import RawConnection
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = [pytest.mark.integration, pytest.mark.system]

ROUNDS = 40
#: Delays (seconds) between the upload's first and last chunk: the window in which the
#: backend's early answer comes back.
DELAYS = [i * 0.00025 for i in range(ROUNDS)]


@pytest.fixture(scope="module")
def proxy(hostile: RunningBackend) -> Iterator[RunningProxy]:
    with WATCH.start_proxy(base_config(hostile.url)) as running:
        yield running


def desynchronised(seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Node's parse errors other than a connection closed mid-request: that one is how the
    proxy gives up an upload (it aborts the upstream connection), anything else means Node
    read bytes as a request that the proxy never sent as one."""
    return [e for e in seen if e["method"] == "PARSE_ERROR" and e["url"] != "HPE_INVALID_EOF_STATE"]


def second_client_gets_its_own_answer(proxy: RunningProxy, marker: str) -> None:
    with RawConnection(proxy.port) as other:
        other.send(f"GET /whoami?id={marker} HTTP/1.1\r\nHost: app\r\n\r\n")
        reply = other.read_response()
        assert reply.status == 200, reply.body[:200]
        assert reply.json()["id"] == marker


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_an_early_answer_to_an_upload_never_poisons_the_pool(
    proxy: RunningProxy, hostile: RunningBackend, framing: str
) -> None:
    parsed_by(hostile)
    body_first, body_last = b"5\r\nhello\r\n", b"5\r\nworld\r\n0\r\n\r\n"
    header = "Transfer-Encoding: chunked"
    if framing == "content-length":
        body_first, body_last = b"hello", b"world"
        header = "Content-Length: 10"
    for i, delay in enumerate(DELAYS):
        with RawConnection(proxy.port) as uploader:
            uploader.send(f"POST /early HTTP/1.1\r\nHost: app\r\n{header}\r\n\r\n".encode())
            uploader.send(body_first)
            time.sleep(delay)
            # The proxy may have answered and half-closed by now; it reads and drops the rest.
            uploader.send(body_last)
            reply = uploader.read_response()
            assert reply.status == 200
            assert reply.json() == {"early": True}
            if reply.header("Connection") == "close":
                assert uploader.wait_closed(5) == "eof"  # a clean close, never a reset
            else:
                # The same client goes on: its next request is its own, not the upload's tail.
                uploader.send(f"GET /whoami?id=same-{i} HTTP/1.1\r\nHost: app\r\n\r\n")
                follow = uploader.read_response()
                assert follow.status == 200
                assert follow.json()["id"] == f"same-{i}"
        second_client_gets_its_own_answer(proxy, f"other-{i}")
    seen = parsed_by(hostile)
    assert desynchronised(seen) == []
    assert {entry["url"] for entry in seen if entry["method"] != "PARSE_ERROR"} <= {
        "/early",
        *(f"/whoami?id=other-{i}" for i in range(ROUNDS)),
        *(f"/whoami?id=same-{i}" for i in range(ROUNDS)),
    }


@pytest.mark.parametrize("when", ["before_body", "mid_body", "after_head_reply"])
def test_a_client_that_aborts_an_upload_leaves_no_half_request_in_the_pool(
    proxy: RunningProxy, hostile: RunningBackend, when: str
) -> None:
    parsed_by(hostile)
    for i in range(10):
        with RawConnection(proxy.port) as uploader:
            uploader.send(b"POST /whoami?id=abort HTTP/1.1\r\nHost: app\r\n")
            uploader.send(b"Transfer-Encoding: chunked\r\n\r\n")
            if when != "before_body":
                uploader.send(b"400\r\n" + b"x" * 512)
            if when == "after_head_reply":
                time.sleep(0.01)
        second_client_gets_its_own_answer(proxy, f"after-abort-{i}")
    assert desynchronised(parsed_by(hostile)) == []
