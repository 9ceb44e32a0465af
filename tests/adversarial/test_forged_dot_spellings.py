"""Issue 7 item 4 and the issue 9 patch header: '.' spellings, and X-Patch-Session.

PHP, CGI and others fold '.', '_' and '-' alike; each of these failed on main at 1c3d512.
"""

from __future__ import annotations

import pytest

from tests.adversarial.recording_upstream import RecordingUpstream, assert_clean
from tests.adversarial.test_forged_owned_headers import FORGED, MARKER
from tests.integration.proxy_client import RawConnection
from tests.integration.sidecar import RunningProxy

pytestmark = pytest.mark.integration

NAMES = [
    "X.Session",
    "X.Session.Status",
    "X.Set.Session",
    "x.session-status",
    "X-Patch-Session",
    "X_Patch_Session",
    "X.Patch.Session",
]


@pytest.mark.parametrize("name", NAMES)
def test_a_forged_owned_header_in_a_dot_or_patch_spelling_never_reaches_the_upstream(
    proxy: RunningProxy, upstream: RecordingUpstream, name: str
) -> None:
    upstream.reset()
    with RawConnection(proxy.port) as client:
        client.send(f"GET /forged?id=a HTTP/1.1\r\nHost: app\r\n{name}: {FORGED}\r\n\r\n")
        assert client.read_response().json()["id"] == "a"
    upstream.wait_idle(2)
    assert_clean(upstream, MARKER)
