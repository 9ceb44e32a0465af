"""Header hygiene: what crosses the proxy in each direction, and what never does.

Headers the proxy owns (the session headers) are removed in every spelling a backend might
fold to the same name: any case, and ``_`` for ``-`` (CGI-style servers such as PHP, Rack or
WSGI turn both ``X-Session`` and ``X_Session`` into ``HTTP_X_SESSION``). Hop-by-hop headers
(RFC 9110 section 7.6.1), and every header that ``Connection`` names, are removed too.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import Config

#: RFC 9110 section 7.6.1 names Connection, Proxy-Connection, Keep-Alive, TE,
#: Transfer-Encoding and Upgrade; Trailer and the Proxy-Auth pair are hop-by-hop in RFC 2616
#: section 13.5.1 and meaningless to forward.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
#: Client-supplied forwarding headers: trusted only from ``trusted_proxies``.
FORWARDING = frozenset(
    {
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
    }
)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def canonical_name(name: str) -> str:
    """The name a lenient backend would see: lower case, ``_`` folded to ``-``."""
    return name.lower().replace("_", "-")


@dataclass(frozen=True, slots=True)
class ForwardingInfo:
    """What the proxy knows about the client connection."""

    peer: str
    scheme: str
    host: str


class HeaderPolicy:
    """Header rules built once from the configuration."""

    def __init__(self, config: Config) -> None:
        s = config.session
        self.session_header = s.header
        self.status_header = s.status_header
        self.set_header_canonical = canonical_name(s.set_header)
        self.owned = frozenset(canonical_name(h) for h in (s.header, s.set_header, s.status_header))
        #: Dropped from requests; the handler sets its own values for these.
        self._request_drop = HOP_BY_HOP | self.owned | {"host", "cookie", "expect", "x-request-id"}
        self._response_drop = HOP_BY_HOP | self.owned
        self.trusted: Sequence[Network] = config.trusted_proxies
        self.chunk_prefix = config.cookie.name + "."

    # --- requests -----------------------------------------------------------------------

    def is_trusted(self, peer: str) -> bool:
        if not self.trusted or not peer:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # an IPv4 client on a dual-stack [::] socket
        return any(address in net for net in self.trusted)

    def upstream_request_headers(
        self, headers: CIMultiDictProxy[str], info: ForwardingInfo
    ) -> CIMultiDict[str]:
        """Headers for the upstream: the client's, minus owned, hop-by-hop and untrusted
        forwarding headers, plus X-Forwarded-*. Session headers are added by the caller."""
        drop = self._request_drop
        # RFC 9110 section 5.3: several Connection lines are one comma-separated list.
        connection = ",".join(headers.getall("Connection", ()))
        if connection:
            drop = drop | {canonical_name(t.strip()) for t in connection.split(",")}
        trusted = self.is_trusted(info.peer)
        if not trusted:
            drop = drop | FORWARDING
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in headers.items():
            lowered = name.lower()
            if lowered in drop or ("_" in name and canonical_name(name) in drop):
                continue
            out.add(name, value)
        self._add_forwarding(out, info, trusted)
        return out

    @staticmethod
    def _add_forwarding(out: CIMultiDict[str], info: ForwardingInfo, trusted: bool) -> None:
        prior = out.getall("X-Forwarded-For", []) if trusted else []
        out.popall("X-Forwarded-For", None)
        chain = [*prior, info.peer] if info.peer else prior
        if chain:
            out["X-Forwarded-For"] = ", ".join(chain)
        if not trusted or "X-Forwarded-Proto" not in out:
            out["X-Forwarded-Proto"] = info.scheme
        if not trusted or "X-Forwarded-Host" not in out:
            out["X-Forwarded-Host"] = info.host

    @staticmethod
    def request_id(headers: CIMultiDictProxy[str]) -> str:
        """The client's X-Request-Id if it is sane (one value, short, plain), else a new one."""
        values = headers.getall("X-Request-Id", [])
        if len(values) == 1 and _REQUEST_ID.fullmatch(values[0]):
            return values[0]
        return os.urandom(16).hex()  # 128 random bits, like a UUID4, at a third of the cost

    # --- responses ----------------------------------------------------------------------

    def client_response_headers(
        self, headers: Iterable[tuple[str, str]], connection: str | None
    ) -> tuple[CIMultiDict[str], list[str]]:
        """Split an upstream response's headers into those for the client and the values of
        the session set-header (any spelling). Set-Cookie headers naming a session chunk are
        dropped: the proxy alone writes those. Every other Set-Cookie passes unchanged."""
        drop = self._response_drop
        if connection:
            drop = drop | {canonical_name(t.strip()) for t in connection.split(",")}
        out: CIMultiDict[str] = CIMultiDict()
        set_session: list[str] = []
        for name, value in headers:
            lowered = name.lower()
            folded = canonical_name(lowered) if "_" in lowered else lowered
            if folded in drop:
                if folded == self.set_header_canonical:
                    set_session.append(value)
                continue
            if lowered == "set-cookie" and self._names_chunk(value):
                continue
            out.add(name, value)
        return out, set_session

    def _names_chunk(self, set_cookie: str) -> bool:
        name = set_cookie.split("=", 1)[0].strip()
        suffix = name[len(self.chunk_prefix) :]
        return name.startswith(self.chunk_prefix) and suffix.isascii() and suffix.isdigit()
