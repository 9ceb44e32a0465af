"""Fixtures the adversarial modules share: the upstreams they attack through, and the proxy.

A module overrides ``upstream`` (a recording upstream with other behaviour) or ``proxy`` (in
front of the hostile Node backend) by defining a fixture of the same name.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.adversarial.recording_upstream import RecordingUpstream
from tests.integration.backends import RunningBackend, start_backend
from tests.integration.log_watch import WATCH
from tests.integration.sidecar import RunningProxy, base_config


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    """A raw-socket upstream that records every byte it receives."""
    with RecordingUpstream() as running:
        yield running


@pytest.fixture(scope="module")
def proxy(upstream: RecordingUpstream) -> Iterator[RunningProxy]:
    with WATCH.start_proxy(base_config(upstream.url)) as running:
        yield running


@pytest.fixture(scope="module")
def hostile() -> Iterator[RunningBackend]:
    """The real Node backend that can answer anything (tests/adversarial/hostile_backend.js)."""
    with start_backend("hostile-node") as running:
        yield running
