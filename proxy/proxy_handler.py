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
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from multidict import CIMultiDict
from yarl import URL

from proxy.config import Config, Upstream
from proxy.http_headers import ForwardingInfo, HeaderPolicy
from proxy.proxy_websocket import is_websocket_upgrade, proxy_websocket
from proxy.request_record import Observer, RequestRecord, ignore
from proxy.routing import Router, normalize_path
from proxy.session_codec import SessionCodec
from proxy.session_exchange import Inbound, Outbound, SessionExchange

log = logging.getLogger("session_sidecar.proxy")

#: Bodies are copied in pieces of at most this size; memory stays bounded by a few of them.
STREAM_CHUNK = 256 * 1024


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
        self, state: ProxyState, client: aiohttp.ClientSession, observer: Observer = ignore
    ) -> None:
        self.state = state
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
            record.session_bytes = len(inbound.payload)
            record.session_chunks = inbound.chunk_count

        info = ForwardingInfo(peer=peer, scheme=request.scheme, host=host)
        headers = state.headers.upstream_request_headers(request.headers, info)
        headers["Host"] = host
        if inbound.cookies.others:
            headers["Cookie"] = inbound.cookies.others
        headers[state.headers.session_header] = inbound.payload
        headers[state.headers.status_header] = inbound.state.value
        headers["X-Request-Id"] = rid
        target = state.upstream_urls[upstream.name].join(URL(route.target, encoded=True))

        if is_websocket_upgrade(request):
            record.websocket = True
            return await proxy_websocket(request, self.client, target, headers, upstream.timeout)

        try:
            upstream_response = await self._send(request, target, headers, upstream, record)
        except UpstreamFailure as failure:
            record.upstream_error = failure.kind
            log.warning("upstream %s: %s (request %s)", upstream.name, failure.error, rid)
            return json_response(failure.status, {"error": failure.error}, rid)
        try:
            return await self._respond(request, state, inbound, upstream_response, record)
        finally:
            upstream_response.release()

    async def _send(
        self,
        request: web.BaseRequest,
        target: URL,
        headers: CIMultiDict[str],
        upstream: Upstream,
        record: RequestRecord,
    ) -> aiohttp.ClientResponse:
        """Send the request; return once the upstream's response headers are in."""
        try:
            if not request.body_exists:
                async with asyncio.timeout(upstream.timeout):
                    return await self._request(request.method, target, headers, None)
            return await self._send_with_body(request, target, headers, upstream, record)
        except TimeoutError:
            raise UpstreamFailure("timeout", 504, "upstream_timeout") from None
        except aiohttp.ClientResponseError as exc:
            if _is_header_too_large(exc):
                raise UpstreamFailure(
                    "header_too_large", 431, "upstream_header_too_large"
                ) from None
            raise UpstreamFailure("bad_response", 502, "upstream_bad_response") from None
        except (aiohttp.ClientConnectorError, ConnectionRefusedError):
            raise UpstreamFailure("refused", 502, "upstream_unreachable") from None
        except (aiohttp.ClientError, OSError):
            raise UpstreamFailure("reset", 502, "upstream_connection_failed") from None

    async def _send_with_body(
        self,
        request: web.BaseRequest,
        target: URL,
        headers: CIMultiDict[str],
        upstream: Upstream,
        record: RequestRecord,
    ) -> aiohttp.ClientResponse:
        uploaded = asyncio.Event()
        body = _stream_body(request, uploaded, record)
        sending = asyncio.ensure_future(self._request(request.method, target, headers, body))
        try:
            # The timeout counts from the end of the upload: a slow, large upload is not the
            # upstream's fault.
            upload_wait = asyncio.ensure_future(uploaded.wait())
            await asyncio.wait((sending, upload_wait), return_when=asyncio.FIRST_COMPLETED)
            upload_wait.cancel()
            return await asyncio.wait_for(sending, upstream.timeout)
        finally:
            if not sending.done():
                sending.cancel()

    def _request(
        self,
        method: str,
        target: URL,
        headers: CIMultiDict[str],
        body: AsyncIterator[bytes] | None,
    ) -> Coroutine[Any, Any, aiohttp.ClientResponse]:
        return self.client.request(
            method,
            target,
            headers=headers,
            data=body,
            allow_redirects=False,
            compress=None,
            auto_decompress=False,
        )

    async def _respond(
        self,
        request: web.BaseRequest,
        state: ProxyState,
        inbound: Inbound,
        upstream_response: aiohttp.ClientResponse,
        record: RequestRecord,
    ) -> web.StreamResponse:
        rid = record.request_id
        headers, set_values = state.headers.client_response_headers(
            upstream_response.headers.items(), upstream_response.headers.get("Connection")
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
        response = web.StreamResponse(
            status=upstream_response.status, reason=upstream_response.reason, headers=headers
        )
        await response.prepare(request)
        content = upstream_response.content
        try:
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


class _AbortedResponse(web.HTTPException):
    """Raised after aborting the client connection; there is nothing left to send."""

    status_code = 502


def _record_outbound(record: RequestRecord, outbound: Outbound) -> None:
    record.session_change = outbound.change.value
    if outbound.chunks:
        record.session_bytes = outbound.size
        record.session_chunks = outbound.chunks


async def _stream_body(
    request: web.BaseRequest, uploaded: asyncio.Event, record: RequestRecord
) -> AsyncIterator[bytes]:
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
    uploaded.set()


def _joined(values: list[str]) -> str | None:
    # HTTP/2 clients may split Cookie over several fields; RFC 9113 section 8.2.3 joins with "; ".
    if not values:
        return None
    return values[0] if len(values) == 1 else "; ".join(values)


def _is_header_too_large(exc: aiohttp.ClientResponseError) -> bool:
    cause = exc.__cause__ or exc.__context__
    return isinstance(cause, LineTooLong) or "Got more than" in str(exc.message)


def json_response(status: int, body: dict[str, object], request_id: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="application/json",
        headers={"X-Request-Id": request_id},
    )
