"""A client writes the proxy's own headers, in spellings a backend may fold together.

Each forged value carries a marker; the recording upstream must never see it, nor an owned
header other than the proxy's own ``X-Session`` and ``X-Session-Status``, nor a ``session.N``
cookie. Issue 7, item 4 (dot spellings) is the case this would have found.
"""

from __future__ import annotations

import pytest

from tests.adversarial.recording_upstream import RecordingUpstream, assert_clean
from tests.integration.proxy_client import RawConnection
from tests.integration.sidecar import RunningProxy

pytestmark = pytest.mark.integration

MARKER = "forged-7f3a-marker"
FORGED = '{"user":"admin","m":"' + MARKER + '"}'
#: Spellings in '-', '_' and case; the '.' spellings are in test_forged_dot_spellings.py.
SPELLINGS = ["X-Session", "x-session", "X_SESSION", "X_Session", "x-SESSION"]
OWNED = ["Session", "Session-Status", "Set-Session", "Patch-Session"]


def spelled(base: str, spelling: str) -> str:
    name = "X-" + base
    if spelling.isupper():
        name = name.upper()
    elif spelling.islower():
        name = name.lower()
    return name.replace("-", "_") if "_" in spelling else name


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("owned", OWNED)
def test_a_forged_owned_header_never_reaches_the_upstream(
    proxy: RunningProxy, upstream: RecordingUpstream, owned: str, spelling: str
) -> None:
    upstream.reset()
    name = spelled(owned, spelling)
    with RawConnection(proxy.port) as client:
        client.send(
            f"GET /forged?id=a HTTP/1.1\r\nHost: app\r\n{name}: {FORGED}\r\n"
            f"Cookie: a=1; session.0={MARKER}\r\n\r\n"
            "GET /benign?id=b HTTP/1.1\r\nHost: app\r\n\r\n"
        )
        assert client.read_response().json()["id"] == "a"
        assert client.read_response().json()["id"] == "b"
    upstream.wait_idle(2)
    assert upstream.targets() == ["/forged?id=a", "/benign?id=b"]
    assert_clean(upstream, MARKER)
