"""The heads the proxy writes for an exchange: the request to its upstream, the response (or
the ``101``) to its client, and the proxy's own small JSON answers.

Between a parsed head and the bytes sent: header hygiene applied in both directions, the
session handed to the backend in owned headers and the backend's session headers turned into
chunk cookies, and framing decided per hop (RFC 9112 section 6). No I/O: the connection sends
what these return, and a :class:`Refusal` is the proxy's own answer instead.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiohttp.http_parser import RawRequestMessage, RawResponseMessage
from multidict import CIMultiDict

from proxy.http_headers import ForwardingInfo, HeaderPolicy, ResponseHeaders
from proxy.proxy_exchange import Exchange
from proxy.request_record import RequestRecord
from proxy.routing import Route
from proxy.session_codec import SessionState
from proxy.session_exchange import Inbound, Outbound
from proxy.websocket_tunnel import Handshake, classify_request

log = logging.getLogger("session_sidecar.proxy")

#: RFC 6455 section 4.4: a server that does not speak the client's version names its own.
_WS_VERSION = (("Sec-WebSocket-Version", "13"),)


@dataclass(frozen=True, slots=True)
class Refusal:
    """The proxy answers itself: a status, a JSON body, extra header fields."""

    status: int
    body: Mapping[str, object]
    extra: tuple[tuple[str, str], ...] = ()


def request_head(
    ex: Exchange, message: RawRequestMessage, route: Route, host: str, peer: str
) -> Refusal | None:
    """Build ``ex.head`` for the upstream, or refuse a handshake the upstream must not see."""
    state = ex.state
    policy = state.headers
    headers_in = message.headers
    inbound = _inbound(ex)
    upstream = route.upstream
    headers = policy.upstream_request_headers(headers_in, ForwardingInfo(peer, "http", host))
    headers["Host"] = host
    if inbound.cookies.others:
        headers["Cookie"] = inbound.cookies.others
    if upstream.forward_session:
        headers[policy.session_header] = inbound.payload
        headers[policy.status_header] = inbound.state._value_
        if inbound.migrated:
            headers[policy.migrated_header] = inbound.migrated
    headers["X-Request-Id"] = ex.record.request_id
    if message.upgrade:  # llhttp: an Upgrade header that Connection names
        handshake = classify_request(message.method, message.version, headers_in)
        if handshake is Handshake.WEBSOCKET and ex.has_body:
            handshake = Handshake.BAD_KEY  # section 4.1: the handshake is a bodiless GET
        if handshake is Handshake.BAD_KEY:
            ex.keep_alive = False
            return Refusal(400, {"error": "bad_websocket_handshake"})
        if handshake is Handshake.BAD_VERSION:
            ex.keep_alive = False
            return Refusal(426, {"error": "websocket_version"}, _WS_VERSION)
        if handshake is Handshake.WEBSOCKET:
            # Upgrade and Connection are hop-by-hop; this hop asks for the upgrade again.
            headers["Connection"] = "Upgrade"
            headers["Upgrade"] = headers_in["Upgrade"]
            ex.websocket_key = headers_in["Sec-WebSocket-Key"].strip()
            ex.record.websocket = True
        # Any upgrade: once the upstream answers, this connection is not reused, so no
        # bytes sent after the head can ever be read as a request of their own.
        ex.keep_alive = False
    if ex.has_body:
        ex.expect_continue = headers_in.get("Expect", "").lower() == "100-continue"
        if "Content-Length" not in headers:
            # The client's framing was hop-by-hop; frame the body again for this hop.
            headers["Transfer-Encoding"] = "chunked"
            ex.chunked = True
    ex.head = encode_head(f"{message.method} {route.target} HTTP/1.1", headers.items())
    return None


def response_head(ex: Exchange, message: RawResponseMessage) -> bytes | Refusal:
    """The client's response head for an upstream's (non-101) response."""
    connection = ",".join(message.headers.getall("Connection", ()))
    headers = _session_response_headers(ex, message, connection)
    if isinstance(headers, Refusal):
        return headers
    if _inbound(ex).state is SessionState.VALID and ex.upstream and ex.upstream.forward_session:
        # The backend read the session from this request's cookies: a shared cache must key
        # the answer on them (Flask's session interface says the same whenever it is read).
        HeaderPolicy.vary_on_cookie(headers)
    bodyless = ex.message.method == "HEAD" or message.code in (204, 304)
    if not bodyless and "Content-Length" not in headers:
        # Framing is per hop (RFC 9112 section 6), decided on the headers this hop sends:
        # a chunked, close-delimited or otherwise unframed upstream body is chunked again
        # for an HTTP/1.1 client and close-delimited for HTTP/1.0 (sections 6.3 and 7).
        if ex.message.version >= (1, 1):
            headers["Transfer-Encoding"] = "chunked"
            ex.response_chunked = True
        else:
            ex.keep_alive = False
    if ex.websocket or ex.body_unread:
        # An answer before the whole request body arrived: the upload stops here, and the
        # rest of the body cannot be told from a next request, so this connection ends.
        ex.keep_alive = False
    if not ex.keep_alive:
        headers["Connection"] = "close"
    return encode_head(f"HTTP/1.1 {message.code} {message.reason}", headers.items())


def tunnel_head(ex: Exchange, message: RawResponseMessage) -> bytes | Refusal:
    """The client's ``101`` for a handshake the upstream accepted (RFC 6455 section 4.2.2)."""
    # RFC 9110 section 7.6.1: what the 101's Connection names is hop-by-hop, as on any answer;
    # Upgrade and Connection themselves are set again below for this hop.
    connection = ",".join(message.headers.getall("Connection", ()))
    headers = _session_response_headers(ex, message, connection)
    if isinstance(headers, Refusal):
        ex.keep_alive = False
        return headers
    headers["Upgrade"] = message.headers["Upgrade"]  # checked by websocket_tunnel.accepts()
    headers["Connection"] = "Upgrade"
    return encode_head(f"HTTP/1.1 101 {message.reason}", headers.items())


def _session_response_headers(
    ex: Exchange, message: RawResponseMessage, connection: str | None
) -> CIMultiDict[str] | Refusal:
    """The upstream's header fields made fit for the client: hop-by-hop and owned fields
    removed, its session header applied as chunk cookies, or a 502 that keeps the old session."""
    record = ex.record
    split = ex.state.headers.client_response_headers(message.headers.items(), connection)
    headers = split.headers
    set_values, patch_values = _session_values(ex, split)
    outbound = ex.state.exchange.outbound(_inbound(ex), set_values, time.time(), patch_values)
    _record_outbound(record, outbound)
    if outbound.error_body is not None:
        log.warning(
            "upstream %s: refused its session header: %s (request %s)",
            record.upstream,
            outbound.detail,
            record.request_id,
        )
        return Refusal(outbound.error_status, outbound.error_body)
    if outbound.set_cookies:
        for cookie in outbound.set_cookies:
            headers.add("Set-Cookie", cookie)
        HeaderPolicy.mark_uncacheable(headers)
    if "X-Request-Id" not in headers:
        headers["X-Request-Id"] = record.request_id
    return headers


def _session_values(ex: Exchange, split: ResponseHeaders) -> tuple[list[str], list[str]]:
    """The set- and patch-header values this upstream may send: none unless it receives the
    session (``forward_session``); then they are dropped like any owned header."""
    upstream = ex.upstream
    if upstream is None or upstream.forward_session:
        return split.set_values, split.patch_values
    if split.set_values or split.patch_values:
        log.warning(
            "upstream %s: dropped its session header: forward_session is off (request %s)",
            ex.record.upstream,
            ex.record.request_id,
        )
    return [], []


def _record_outbound(record: RequestRecord, outbound: Outbound) -> None:
    record.session_change = outbound.change._value_
    if outbound.chunks:
        record.session_bytes_out = outbound.size
        record.session_chunks_out = outbound.chunks


def _inbound(ex: Exchange) -> Inbound:
    assert ex.inbound is not None
    return ex.inbound


def encode_head(first_line: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """A request or status line and its header section, ready for the wire (RFC 9112).

    Values come from aiohttp's parser or from the proxy itself, so they hold no CR or LF;
    ``surrogateescape`` gives back any non-UTF-8 bytes a peer sent, unchanged.
    """
    # str.join over the pairs runs in C: no Python-level step per field.
    fields = "\r\n".join(map(": ".join, headers))
    text = f"{first_line}\r\n{fields}\r\n\r\n" if fields else f"{first_line}\r\n\r\n"
    return text.encode("utf-8", "surrogateescape")


def json_answer(
    status: int,
    body: Mapping[str, object],
    request_id: str,
    keep_alive: bool,
    extra: Iterable[tuple[str, str]] = (),
) -> tuple[bytes, int]:
    """The proxy's own answer, a small JSON body framed by Content-Length, and the size of
    that body (the access log's ``out``)."""
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(data))),
        ("X-Request-Id", request_id),
        *extra,
    ]
    if not keep_alive:
        headers.append(("Connection", "close"))
    head = encode_head(f"HTTP/1.1 {status} {_REASONS.get(status, '')}", headers)
    return head + data, len(data)


_REASONS = {
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
