"""Integration fixtures shared by every module: the log check after each module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.backends import BackendKind, RunningBackend, start_backend
from tests.integration.log_watch import WATCH
from tests.integration.sidecar import RunningProxy, base_config


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


# --- shared by modules that do not define their own ---------------------------------------


@pytest.fixture(scope="module")
def python_backend() -> Iterator[RunningBackend]:
    with start_backend("python") as running:
        yield running


@pytest.fixture(scope="module")
def proxy(python_backend: RunningBackend) -> Iterator[RunningProxy]:
    """The proxy with the default test configuration in front of the Python backend."""
    with WATCH.start_proxy(base_config(python_backend.url)) as running:
        yield running


@pytest.fixture(scope="module", params=["python", "node"])
def any_proxy(request: pytest.FixtureRequest) -> Iterator[RunningProxy]:
    """A proxy in front of the Python backend, then one in front of the Node backend."""
    kind: BackendKind = request.param
    with start_backend(kind) as backend, WATCH.start_proxy(base_config(backend.url)) as running:
        yield running
