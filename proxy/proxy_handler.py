"""The proxy handler: one request in, routed, carried to its upstream and back, streamed.

Order of work per request: route (404 if none) -> read the session cookies -> build the
upstream headers (hygiene, X-Session, X-Session-Status) -> send, streaming the body -> apply the
backend's X-Set-Session (or refuse it with 502, leaving the old session alone) -> stream the
response. The session codec and the header rules live in their own modules; this one only
moves bytes and decides status codes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.http_parser import RawResponseMessage
from multidict import CIMultiDict
from yarl import URL

from proxy.config import Config, Upstream
from proxy.http_headers import ForwardingInfo, HeaderPolicy
from proxy.http_upstream import UpstreamConnectError, UpstreamPool, UpstreamResponse, encode_head
from proxy.proxy_websocket import is_websocket_upgrade, proxy_websocket
from proxy.request_record import Observer, RequestRecord, ignore
from proxy.routing import Router, normalize_path
from proxy.session_codec import SessionCodec
from proxy.session_exchange import Inbound, Outbound, SessionExchange

log = logging.getLogger("session_sidecar.proxy")

#: Responses up to this size (by Content-Length) are read whole and sent in one write.
SMALL_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class ProxyState:
    """Everything derived from one configuration; replaced whole on reload (SIGHUP)."""

    config: Config
    router: Router
    headers: HeaderPolicy
    exchange: SessionExchange
    upstream_urls: dict[str, URL]

    @classmethod
    def build(cls, config: Config, codec: SessionCodec) -> ProxyState:
        return cls(
            config=config,
            router=Router(config.upstreams),
            headers=HeaderPolicy(config),
            exchange=SessionExchange(config, codec),
            upstream_urls={
                up.name: URL.build(scheme=up.scheme, host=up.host, port=up.port)
                for up in config.upstreams
            },
        )


class UpstreamFailure(Exception):
    """The upstream could not give response headers. ``kind`` names what went wrong."""

    def __init__(self, kind: str, status: int, error: str) -> None:
        super().__init__(kind)
        self.kind = kind
        self.status = status
        self.error = error


class ProxyHandler:
    """The request handler for aiohttp's low-level server."""

    def __init__(
        self,
        state: ProxyState,
        pool: UpstreamPool,
        client: aiohttp.ClientSession,
        observer: Observer = ignore,
    ) -> None:
        self.state = state
        self.pool = pool
        #: aiohttp's client, for WebSocket upstreams only.
        self.client = client
        self.observer = observer

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        state = self.state  # one consistent configuration for the whole request
        peer = request.remote or ""
        record = RequestRecord(
            request_id=state.headers.request_id(request.headers),
            client=peer,
            method=request.method,
            path=request.rel_url.raw_path[:512],
            started=time.time(),
        )
        began = time.perf_counter()
        try:
            response = await self._handle(request, state, record, peer)
            record.status = response.status
            return response
        except asyncio.CancelledError:
            record.status = 499  # the client went away (nginx's convention)
            raise
        finally:
            record.duration = time.perf_counter() - began
            try:
                self.observer(record)
            except Exception:  # an observer must never break a request
                log.exception("request observer failed")

    async def _handle(
        self, request: web.BaseRequest, state: ProxyState, record: RequestRecord, peer: str
    ) -> web.StreamResponse:
        rid = record.request_id
        if request.method == "CONNECT":
            # Never a forward proxy: CONNECT would open a tunnel to a host the config doesn't name.
            return json_response(405, {"error": "method_not_allowed"}, rid)
        url = request.rel_url
        path = normalize_path(url.raw_path)
        # For an absolute-form target aiohttp takes the host from the target (RFC 9112 section
        # 3.2.2); either way it only selects among configured upstreams.
        host = request.host
        route = state.router.route(host, path, url.raw_query_string)
        if route is None:
            return json_response(404, {"error": "no_route", "path": path[:200]}, rid)
        upstream = route.upstream
        record.upstream = upstream.name

        cookie_header = _joined(request.headers.getall("Cookie", []))
        inbound = state.exchange.inbound(cookie_header)
        record.session_state = inbound.state.value
        record.session_reason = inbound.reason
        if inbound.chunk_count:
            record.session_bytes = inbound.result.size
            record.session_chunks = inbound.chunk_count

        info = ForwardingInfo(peer=peer, scheme=request.scheme, host=host)
        headers = state.headers.upstream_request_headers(request.headers, info)
        headers["Host"] = host
        if inbound.cookies.others:
            headers["Cookie"] = inbound.cookies.others
        headers[state.headers.session_header] = inbound.payload
        headers[state.headers.status_header] = inbound.state.value
        headers["X-Request-Id"] = rid

        if is_websocket_upgrade(request):
            record.websocket = True
            # Appended, never joined: a target like "//other.host/x" is a path here, and
            # joining would read it as an authority (RFC 3986 section 4.2) and connect there.
            target = URL(f"{state.upstream_urls[upstream.name]}{route.target}", encoded=True)
            return await proxy_websocket(request, self.client, target, headers, upstream.timeout)

        try:
            upstream_response = await self._send(request, route.target, headers, upstream, record)
        except UpstreamFailure as failure:
            record.upstream_error = failure.kind
            log.warning("upstream %s: %s (request %s)", upstream.name, failure.error, rid)
            return json_response(failure.status, {"error": failure.error}, rid)
        try:
            return await self._respond(request, state, inbound, upstream_response, record)
        finally:
            self.pool.release(upstream_response)

    async def _send(
        self,
        request: web.BaseRequest,
        target: str,
        headers: CIMultiDict[str],
        upstream: Upstream,
        record: RequestRecord,
    ) -> UpstreamResponse:
        """Send the request; return once the upstream's response headers are in."""
        body = None
        chunked = False
        uploaded = None
        if request.body_exists:
            uploaded = asyncio.Event()
            body = _stream_body(request, record)
            if "Content-Length" not in headers:
                # The client's own framing was hop-by-hop; re-frame for this connection.
                headers["Transfer-Encoding"] = "chunked"
                chunked = True
        head = encode_head(request.method, target, headers.items())
        try:
            return await self.pool.request(
                upstream.host,
                upstream.port,
                head,
                body,
                chunked,
                skip_payload=request.method == "HEAD",
                uploaded=uploaded,
                timeout=upstream.timeout,
            )
        except TimeoutError:
            raise UpstreamFailure("timeout", 504, "upstream_timeout") from None
        except UpstreamConnectError:
            raise UpstreamFailure("refused", 502, "upstream_unreachable") from None
        except LineTooLong:
            raise UpstreamFailure("header_too_large", 431, "upstream_header_too_large") from None
        except HttpProcessingError:
            raise UpstreamFailure("bad_response", 502, "upstream_bad_response") from None
        except (aiohttp.ClientError, OSError):
            raise UpstreamFailure("reset", 502, "upstream_connection_failed") from None

    async def _respond(
        self,
        request: web.BaseRequest,
        state: ProxyState,
        inbound: Inbound,
        upstream_response: UpstreamResponse,
        record: RequestRecord,
    ) -> web.StreamResponse:
        rid = record.request_id
        message = upstream_response.message
        headers, set_values = state.headers.client_response_headers(
            message.headers.items(), message.headers.get("Connection")
        )
        outbound = state.exchange.outbound(inbound, set_values, time.time())
        _record_outbound(record, outbound)
        if outbound.error_body is not None:
            log.warning(
                "upstream %s: refused its session header: %s (request %s)",
                record.upstream,
                outbound.detail,
                rid,
            )
            return json_response(outbound.error_status, outbound.error_body, rid)
        for cookie in outbound.set_cookies:
            headers.add("Set-Cookie", cookie)
        if "X-Request-Id" not in headers:
            headers["X-Request-Id"] = rid
        content = upstream_response.payload
        try:
            if _is_small(request.method, message):
                # Bounded by SMALL_BODY: one read, and aiohttp sends head and body in one write.
                body = await content.read()
                record.bytes_out = len(body)
                headers.popall("Content-Length", None)
                return web.Response(
                    status=message.code, reason=message.reason, headers=headers, body=body
                )
            response = web.StreamResponse(
                status=message.code, reason=message.reason, headers=headers
            )
            record.status = message.code  # logged even if the body is cut short below
            await response.prepare(request)
            while True:
                chunk = await content.readany()
                if not chunk:
                    break
                record.bytes_out += len(chunk)
                await response.write(chunk)
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, OSError):
            # The upstream died mid-body. Abort the client's connection so it can never take
            # a truncated body for a complete one.
            record.upstream_error = "reset"
            log.warning("upstream %s: connection lost mid-body (request %s)", record.upstream, rid)
            if request.transport is not None:
                request.transport.abort()
            raise _AbortedResponse() from None
        await response.write_eof()
        return response


def _is_small(method: str, message: RawResponseMessage) -> bool:
    """A response whose whole body may be read before answering: a Content-Length of at most
    SMALL_BODY, and a status and method that carry a body (RFC 9110 sections 6.4.1, 9.3.2)."""
    if method == "HEAD" or message.code in (204, 304) or message.code < 200:
        return False
    length = message.headers.get("Content-Length")
    return length is not None and length.isdigit() and int(length) <= SMALL_BODY


class _AbortedResponse(web.HTTPException):
    """Raised after aborting the client connection; there is nothing left to send."""

    status_code = 502


def _record_outbound(record: RequestRecord, outbound: Outbound) -> None:
    record.session_change = outbound.change.value
    if outbound.chunks:
        record.session_bytes = outbound.size
        record.session_chunks = outbound.chunks


async def _stream_body(request: web.BaseRequest, record: RequestRecord) -> AsyncIterator[bytes]:
    # RFC 9110 section 10.1.1: the client waits for 100 Continue before sending the body. It
    # is sent only now, once the upstream connection is up and the body is really wanted.
    if request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    content = request.content
    while True:
        chunk = await content.readany()
        if not chunk:
            break
        record.bytes_in += len(chunk)
        yield chunk


def _joined(values: list[str]) -> str | None:
    # HTTP/2 clients may split Cookie over several fields; RFC 9113 section 8.2.3 joins with "; ".
    if not values:
        return None
    return values[0] if len(values) == 1 else "; ".join(values)


def json_response(status: int, body: dict[str, object], request_id: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="application/json",
        headers={"X-Request-Id": request_id},
    )
