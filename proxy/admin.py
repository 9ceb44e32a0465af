"""Admin server: /healthz, /readyz, /metrics on admin_listen. (Stub: to be completed.)"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from proxy.config import Config


async def start_admin(config_provider: Callable[[], Config]) -> web.AppRunner | None:
    """Start the admin server on the current config's admin_listen; None when it is off."""
    return None
