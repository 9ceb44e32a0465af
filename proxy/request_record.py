"""What the proxy reports about each finished request, for the access log and the metrics.

It holds sizes, states and names only: never a cookie value, a secret or session content.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    client: str
    method: str
    #: Path without the query string (queries may carry tokens).
    path: str
    status: int = 0
    #: Upstream name, or "" when no upstream was chosen.
    upstream: str = ""
    started: float = 0.0
    duration: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    #: absent | valid | expired | invalid
    session_state: str = "absent"
    #: Why an incoming session was invalid ("bad signature", ...), never its content.
    session_reason: str = ""
    #: none | set | cleared | resigned | refreshed | overflow | invalid_header
    session_change: str = "none"
    #: Bytes and chunks of the session received (valid) or written (set/resigned/refreshed).
    session_bytes: int = 0
    session_chunks: int = 0
    #: "" | refused | timeout | reset | header_too_large | bad_response | session_too_large
    upstream_error: str = ""
    websocket: bool = False


Observer = Callable[[RequestRecord], None]
