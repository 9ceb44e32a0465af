"""What the proxy reports about each finished request, for the access log and the metrics.

It holds sizes, states and names only: never a cookie value, a secret or session content.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

#: The longest client address the access log takes from X-Forwarded-For.
_MAX_CLIENT_CHARS: Final = 64
#: RFC 7239 section 6.3: obfnode = "_" 1*( ALPHA / DIGIT / "." / "_" / "-")
_OBFUSCATED_NODE: Final = re.compile(r"_[A-Za-z0-9._-]+")


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
    #: Bytes and chunks of the session received (a valid one) ...
    session_bytes_in: int = 0
    session_chunks_in: int = 0
    #: ... and written (set, patched, resigned, refreshed, migrated).
    session_bytes_out: int = 0
    session_chunks_out: int = 0
    #: "" or a cause of :mod:`proxy.upstream_errors` (dns, refused, tls, timeout, reset, ...)
    upstream_error: str = ""
    websocket: bool = False


Observer = Callable[[RequestRecord], None]


def forwarded_client(
    peer: str, forwarded_for: Iterable[str], is_trusted: Callable[[str], bool]
) -> str:
    """The client the request came from, as the trusted proxies in front say.

    Each proxy appends the address it received the request from to ``X-Forwarded-For``
    (the convention RFC 7239 section 5.2 writes down for ``Forwarded: for=``), so read right
    to left, every address up to the first one that is not a trusted proxy was written by a
    trusted hop; that first untrusted one is the client. Addresses further left were written
    by the client itself and prove nothing. Without a trusted ``peer`` the header is the
    client's own word, and the peer is the client.
    """
    if not is_trusted(peer):
        return peer
    hops = [hop.strip() for line in forwarded_for for hop in line.split(",")]
    hops = [_without_port(hop) for hop in hops if hop]
    for hop in reversed(hops):
        if not is_trusted(hop):
            return _loggable_node(hop)
    # Every hop is a trusted proxy: the left-most is the closest anyone came to the client.
    return _loggable_node(hops[0]) if hops else peer


def _loggable_node(hop: str) -> str:
    """An address, or one of RFC 7239 section 6's other node names (``unknown``, an obfuscated
    ``_name``); anything else is logged as ``unknown``. The text access log writes the client
    unquoted, so a hop like ``1.2.3.4 status=200`` must not become fields of its own."""
    if "%" not in hop:  # a scoped IPv6 address ("fe80::1%zone") carries any text after "%"
        try:
            return str(ipaddress.ip_address(hop))
        except ValueError:
            pass
    if hop == "unknown" or _OBFUSCATED_NODE.fullmatch(hop):
        return hop[:_MAX_CLIENT_CHARS]
    return "unknown"


def _without_port(hop: str) -> str:
    """``[2001:db8::1]:443`` -> ``2001:db8::1``, ``192.0.2.1:80`` -> ``192.0.2.1`` (some load
    balancers add the port; RFC 7239 section 6 writes IPv6 in brackets)."""
    if hop.startswith("["):
        return hop[1:].partition("]")[0]
    if hop.count(":") == 1:
        return hop.partition(":")[0]
    return hop
