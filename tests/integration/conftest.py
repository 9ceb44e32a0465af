"""Integration fixtures shared by every module: the log check after each module, and the
``adapters`` marker of tests/integration/test_adapters.py."""

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


# --- tests that apply to some adapters only ------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect a ``@pytest.mark.adapters(...)`` test for every adapter it does not name.

    tests/integration/test_adapters.py runs each test once per adapter in its ``ADAPTERS``
    (a module-scoped parametrized fixture, ``adapter``). A test of one framework's own API is
    left out for the others rather than skipped: a skip reads as something that should have run.
    """
    kept: list[pytest.Item] = []
    left_out: list[pytest.Item] = []
    for item in items:
        (kept if runs_for_its_adapter(item) else left_out).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


def runs_for_its_adapter(item: pytest.Item) -> bool:
    """False for an item whose ``adapter`` its ``adapters`` marker does not name. A marker on
    a test not run per adapter, or naming an adapter its module does not have (a typo would
    leave the test out everywhere), is a usage error."""
    marker = item.get_closest_marker("adapters")
    if marker is None:
        return True
    callspec = getattr(item, "callspec", None)
    adapter = callspec.params.get("adapter") if callspec is not None else None
    if adapter is None:
        raise pytest.UsageError(f"{item.nodeid}: the adapters marker on a test run per no adapter")
    unknown = set(marker.args) - set(getattr(getattr(item, "module", None), "ADAPTERS", ()))
    if unknown:
        raise pytest.UsageError(f"{item.nodeid}: the adapters marker names {sorted(unknown)}")
    return adapter in marker.args
