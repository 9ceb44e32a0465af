"""Admin server: /healthz, /readyz and /metrics on ``admin_listen``, never the proxied port.

* ``/healthz``: 200 ``{"status":"ok"}`` while the process serves at all (liveness).
* ``/readyz``: 200 when the upstreams ``readiness.require`` names (all by default, any one,
  or a list) accept a TCP connection within :data:`PROBE_TIMEOUT`, probed concurrently;
  otherwise 503 naming each unreachable upstream and why (readiness).
* ``/metrics``: Prometheus text (or OpenMetrics, if the scraper asks for it).

It has its own aiohttp runner with access logging off: probes and scrapes are not requests.
``admin_listen`` is read at start; a reload does not move the admin port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Final

from aiohttp import web

from proxy.config import Config
from proxy.metrics import exposition

log = logging.getLogger("session_sidecar.admin")

#: Seconds an upstream has to accept a TCP connection before /readyz calls it unreachable.
PROBE_TIMEOUT: Final = 1.0


class AdminEndpoints:
    """The admin handlers, reading the current configuration from ``config_provider``."""

    def __init__(self, config_provider: Callable[[], Config]) -> None:
        self.config_provider = config_provider

    async def healthz(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        config = self.config_provider()
        readiness = config.readiness
        upstreams = readiness.probed(config.upstreams)
        # Upstreams on the same host and port share one probe.
        addresses = sorted({(up.host, up.port) for up in upstreams})
        results = await asyncio.gather(*(probe_tcp(host, port) for host, port in addresses))
        failures = dict(zip(addresses, results, strict=True))
        unreachable = {
            up.name: failure
            for up in upstreams
            if (failure := failures[(up.host, up.port)]) is not None
        }
        if not readiness.ready(len(upstreams), len(unreachable)):
            return _json(503, {"status": "unavailable", "unreachable": unreachable})
        if unreachable:  # ready with "any": still say which are down
            return _json(200, {"status": "ready", "unreachable": unreachable})
        return _json(200, {"status": "ready"})

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = exposition(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})


async def probe_tcp(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None if ``host:port`` accepts a TCP connection within ``timeout``, else why not."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


def admin_app(config_provider: Callable[[], Config]) -> web.Application:
    endpoints = AdminEndpoints(config_provider)
    app = web.Application()
    app.router.add_get("/healthz", endpoints.healthz)
    app.router.add_get("/readyz", endpoints.readyz)
    app.router.add_get("/metrics", endpoints.metrics)
    return app


async def start_admin(config_provider: Callable[[], Config]) -> web.AppRunner | None:
    """Start the admin server on the current config's ``admin_listen``; None when it is off.

    If the admin port cannot be bound the error is logged and the process exits with status 1,
    as it does for the proxied port: running without the probes an orchestrator relies on
    would only fail later and less clearly.
    """
    listen = config_provider().admin_listen
    if listen is None:
        return None
    runner = web.AppRunner(admin_app(config_provider), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, listen.host, listen.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        log.error("cannot listen on admin_listen %s: %s", listen, exc.strerror or exc)
        raise SystemExit(1) from None
    log.info("admin endpoints on %s (/healthz, /readyz, /metrics)", listen)
    return runner


def _json(status: int, body: dict[str, object]) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="application/json",
    )
