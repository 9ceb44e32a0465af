"""Property-based fuzzing of request heads and of upstream response heads (issue 7).

(a) Whatever head a client writes (any method, target, header spelling, line end and body),
the proxy answers with well-formed HTTP/1.1 or closes, and the recording upstream's
invariants hold. (b) Whatever head an upstream answers with (Connection tokens, duplicated
Content-Length, Transfer-Encoding variants, set-session spellings, session Set-Cookies), the
client gets a well-formed response whose framing lets its next keep-alive request get its own
answer, or the connection closes.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
from collections.abc import Iterator
from typing import Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.adversarial.recording_upstream import RecordingUpstream, assert_clean
from tests.adversarial.strict_http import Ambiguous, parse_responses
from tests.adversarial.test_smuggling_corpus import send_and_read, upstream_answers
from tests.integration.log_watch import WATCH
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = pytest.mark.integration

MARKER: Final = "fuzz-41d2-marker"
FUZZ_SETTINGS: Final = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_counter = itertools.count()

OWNED_BASES: Final = ["Session", "Session-Status", "Set-Session", "Patch-Session"]


@st.composite
def owned_name(draw: st.DrawFn) -> bytes:
    """An owned header name in a random spelling: case, and '-', '_' or '.' between words."""
    words = ["X", *draw(st.sampled_from(OWNED_BASES)).split("-")]
    separators = draw(st.lists(st.sampled_from(["-", "_", "."]), min_size=len(words) - 1))
    name = words[0] + "".join(s + w for s, w in zip(separators, words[1:], strict=False))
    name += "".join(words[len(separators) + 1 :])
    cased = "".join(c.upper() if draw(st.booleans()) else c.lower() for c in name)
    return cased.encode()


FRAMING_LINES: Final = [
    b"Content-Length: 5",
    b"Content-Length: 5, 5",
    b"Content-Length: 0",
    b"Content-Length: +5",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: xchunked",
    b"Transfer-Encoding: chunked, identity",
    b"Connection: close",
    b"Connection: keep-alive",
    b"Connection: Upgrade",
    b"Upgrade: websocket",
    b"Expect: 100-continue",
    b"Cookie: session.0=@M@",
    b"Cookie: a=1, session.1=@M@",
    b"Trailer: X-Session",
]

header_line = st.one_of(
    st.builds(lambda n, v: n + b": " + v, owned_name(), st.just(b'{"m":"@M@"}')),
    st.sampled_from(FRAMING_LINES),
    st.builds(
        lambda n, sep, v: n + sep + v,
        st.from_regex(rb"\A[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,20}\Z"),
        st.sampled_from([b": ", b":", b" : ", b":\t", b"\x00: "]),
        st.binary(max_size=30),
    ),
)
methods = st.sampled_from([b"GET", b"POST", b"PUT", b"OPTIONS", b"DELETE", b"PATCH", b"G\x00T"])
targets = st.sampled_from([b"/f", b"http://evil/f", b"//f", b"/f#x", b"/f\x01"])
line_ends = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"])


@FUZZ_SETTINGS
@given(
    method=methods,
    target=targets,
    lines=st.lists(header_line, max_size=8),
    eol=line_ends,
    body=st.binary(max_size=40),
)
def test_any_request_head_gets_a_well_formed_answer_and_smuggles_nothing(
    proxy: RunningProxy,
    upstream: RecordingUpstream,
    method: bytes,
    target: bytes,
    lines: list[bytes],
    eol: bytes,
    body: bytes,
) -> None:
    tag = f"fz{next(_counter)}"
    start = method + b" " + target + b"?id=" + tag.encode() + b"-a HTTP/1.1"
    head = eol.join([start, b"Host: app", *lines]).replace(b"@M@", MARKER.encode())
    benign = f"GET /next?id={tag}-b HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"
    upstream.reset()
    raw, closed = send_and_read(proxy.port, head + eol + eol + body + benign.encode(), idle=0.5)
    try:
        responses = parse_responses(raw, eof=closed)
    except Ambiguous as error:
        pytest.fail(f"malformed response from the proxy ({error}): {raw[:400]!r}")
    assert all(r.status not in (101, 500) for r in responses), raw[:400]
    upstream.wait_idle(2)
    answered = upstream_answers(responses)
    assert [t for t in upstream.targets() if t not in answered] == []
    assert all(tag in t for t in answered)
    assert_clean(upstream, MARKER)


# --- (b) upstream response heads ----------------------------------------------------------------


class FuzzedUpstream:
    """A raw upstream: ``/fuzz`` gets :attr:`answer` verbatim and the connection closes; any
    other target gets a JSON answer naming its ``?id=``, framed by Content-Length."""

    def __init__(self) -> None:
        self.answer = b""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        buffer = b""
        with sock:
            sock.settimeout(10)
            try:
                while True:
                    while b"\r\n\r\n" not in buffer:
                        data = sock.recv(65536)
                        if not data:
                            return
                        buffer += data
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    target = head.split(b" ")[1].decode("latin-1")
                    if target.startswith("/fuzz"):
                        sock.sendall(self.answer)
                        return
                    ident = target.partition("id=")[2]
                    body = json.dumps({"id": ident}).encode()
                    sock.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
                    )
            except OSError:
                return

    def stop(self) -> None:
        self._listener.close()


RESPONSE_LINES: Final = [
    b"Connection: close",
    b"Connection: keep-alive",
    b"Connection: content-length",
    b"Connection: transfer-encoding",
    b"Connection: Content-Length, X-Session",
    b"Connection: upgrade",
    b"Upgrade: websocket",
    b"Content-Length: 5",
    b"Content-Length: 5, 5",
    b"Content-Length: 5\r\nContent-Length: 5",
    b"Content-Length: 6",
    b"Content-Length: 50",
    b"Content-Length: +5",
    b"Content-Length: 0x5",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: Chunked",
    b"Transfer-Encoding: chunked, identity",
    b"Transfer-Encoding: gzip",
    b"Transfer-Encoding: xchunked",
    b"Keep-Alive: timeout=5",
    b"Set-Cookie: session.0=forged; Path=/",
    b"Set-Cookie: session.1=; Max-Age=0",
    b"Set-Cookie: =session.0",
    b"Set-Cookie: SESSION.0=x",
    b"Set-Cookie: a=1",
    b"Trailer: X-Session",
]
response_line = st.one_of(
    st.sampled_from(RESPONSE_LINES),
    st.builds(lambda n: n + b': {"user":"x"}', owned_name()),
    st.builds(lambda n: n + b": {not json", owned_name()),
)
bodies = st.sampled_from(
    [b"hello", b"", b"5\r\nhello\r\n0\r\n\r\n", b"5\r\nhello\r\n", b"hello world, more bytes"]
)
statuses = st.sampled_from(
    [
        b"200 OK",
        b"204 No Content",
        b"304 Not Modified",
        b"404 Nope",
        b"101 Switching Protocols",
        b"302 Found",
        b"200",
    ]
)


@pytest.fixture(scope="module")
def fuzzed_upstream() -> Iterator[FuzzedUpstream]:
    running = FuzzedUpstream()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def fuzzed_proxy(fuzzed_upstream: FuzzedUpstream) -> Iterator[RunningProxy]:
    with WATCH.start_proxy(base_config(fuzzed_upstream.url)) as running:
        yield running


@FUZZ_SETTINGS
@given(status=statuses, lines=st.lists(response_line, max_size=6), body=bodies)
def test_any_upstream_head_leaves_the_client_connection_framed_or_closed(
    fuzzed_proxy: RunningProxy,
    fuzzed_upstream: FuzzedUpstream,
    status: bytes,
    lines: list[bytes],
    body: bytes,
) -> None:
    tag = f"up{next(_counter)}"
    fuzzed_upstream.answer = b"\r\n".join([b"HTTP/1.1 " + status, *lines]) + b"\r\n\r\n" + body
    request = (
        f"GET /fuzz?id={tag}-a HTTP/1.1\r\nHost: app\r\n\r\n"
        f"GET /next?id={tag}-b HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"
    )
    raw, closed = send_and_read(fuzzed_proxy.port, request.encode(), idle=3.0)
    try:
        responses = parse_responses(raw, eof=closed)
    except Ambiguous as error:
        pytest.fail(f"malformed or unframed response ({error}): {raw[:400]!r}")
    assert all(r.status != 101 for r in responses), raw[:400]
    if len(responses) >= 2:
        assert len(responses) == 2, raw[:600]
        assert json.loads(responses[1].body)["id"] == f"{tag}-b"
    else:
        assert closed, raw[:400]


def test_an_upstream_status_outside_100_to_599_is_a_502(
    fuzzed_proxy: RunningProxy, fuzzed_upstream: FuzzedUpstream
) -> None:
    fuzzed_upstream.answer = b"HTTP/1.1 999 Odd\r\nContent-Length: 5\r\n\r\nhello"
    raw, _ = send_and_read(
        fuzzed_proxy.port, b"GET /fuzz?id=odd HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"
    )
    assert raw.startswith(b"HTTP/1.1 502 "), raw[:200]
