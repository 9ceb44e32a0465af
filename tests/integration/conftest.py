"""Integration fixtures shared by every module: the log check after each module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.log_watch import WATCH


@pytest.fixture(scope="module", autouse=True)
def proxy_output_holds_no_secret_cookie_or_session_content() -> Iterator[None]:
    """After a module's tests, no proxy it started printed a secret, cookie or session."""
    WATCH.reset()
    yield
    for proxy in WATCH.proxies:
        proxy.stop()
    leaks = WATCH.leaks()
    WATCH.reset()
    assert not leaks, "sensitive values in the proxy's output:\n" + "\n".join(leaks)
