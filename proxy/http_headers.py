"""Header hygiene: what crosses the proxy in each direction, and what never does.

Headers the proxy owns (the session headers) are removed in every spelling a backend might
fold to the same name: any case, and any character other than a letter or digit (CGI-style
servers such as PHP, Rack or WSGI turn ``X-Session``, ``X_Session`` and ``X.Session`` all into
``HTTP_X_SESSION``). Hop-by-hop headers (RFC 9110 section 7.6.1), and every header that
``Connection`` names, are removed too. Framing headers are never removed by a ``Connection``
token: framing is decided per hop by the handler (RFC 9112 section 6).

A response that sets session cookies is marked private (:meth:`HeaderPolicy.mark_uncacheable`):
a shared cache must never hand one user's session to another (Flask's CVE-2023-30861).
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import Config
from proxy.config_session import folded_header

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
#: Header names classified per spelling; names repeat, so folding costs one dict lookup.
_CLASSIFY_CACHE_MAX = 4096
#: RFC 9110 section 5.3 / RFC 9112 section 6: a Connection token never removes framing.
_FRAMING = frozenset({"content-length", "transfer-encoding"})


def canonical_name(name: str) -> str:
    """The name a lenient backend would see: lower case, ``_`` folded to ``-``."""
    return name.lower().replace("_", "-")


@dataclass(frozen=True, slots=True)
class ResponseHeaders:
    """An upstream response's headers split for the client, and the owned headers' values."""

    headers: CIMultiDict[str]
    #: Values of the session set-header, any spelling.
    set_values: list[str]
    #: Values of the session patch-header (RFC 7396 merge patch), any spelling.
    patch_values: list[str]


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
        self._set_folded = folded_header(s.set_header)
        self._patch_folded = folded_header(s.patch_header)
        #: Sent with a session read from a legacy (``migrate:``) cookie: its format's name.
        self.migrated_header = f"{s.header}-Migrated"
        owned = (s.header, s.set_header, s.status_header, s.patch_header, self.migrated_header)
        self.owned_folded = frozenset(folded_header(h) for h in owned)
        #: Dropped from requests; the handler sets its own values for these.
        self._request_drop = HOP_BY_HOP | {"host", "cookie", "expect", "x-request-id"}
        self._response_drop = HOP_BY_HOP
        self._request_cache: dict[str, bool] = {}
        self._response_cache: dict[str, str] = {}
        self.trusted: Sequence[Network] = config.trusted_proxies
        self.chunk_prefix = config.cookie.name + "."

    def _drops_request_header(self, lowered: str) -> bool:
        """Is this (lower-case) name owned or dropped by itself, in any spelling?"""
        known = self._request_cache.get(lowered)
        if known is None:
            known = (
                lowered in self._request_drop
                or canonical_name(lowered) in self._request_drop
                or folded_header(lowered) in self.owned_folded
            )
            if len(self._request_cache) < _CLASSIFY_CACHE_MAX:
                self._request_cache[lowered] = known
        return known

    def _response_kind(self, lowered: str) -> str:
        """ "set", "patch", "owned", "hop" or "" (forward) for a lower-case response name."""
        known = self._response_cache.get(lowered)
        if known is None:
            folded = folded_header(lowered)
            if folded == self._set_folded:
                known = "set"
            elif folded == self._patch_folded:
                known = "patch"
            elif folded in self.owned_folded:
                known = "owned"
            elif lowered in self._response_drop or canonical_name(lowered) in self._response_drop:
                known = "hop"
            else:
                known = ""
            if len(self._response_cache) < _CLASSIFY_CACHE_MAX:
                self._response_cache[lowered] = known
        return known

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
        # RFC 9110 section 5.3: several Connection lines are one comma-separated list.
        named = _connection_tokens(",".join(headers.getall("Connection", ())))
        trusted = self.is_trusted(info.peer)
        if not trusted:
            named = named | FORWARDING
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in headers.items():
            lowered = name.lower()
            if self._drops_request_header(lowered):
                continue
            if named and (lowered in named or canonical_name(lowered) in named):
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
        values = headers.getall("X-Request-Id", ())
        if len(values) == 1 and _REQUEST_ID.fullmatch(values[0]):
            return values[0]
        return new_request_id()

    # --- responses ----------------------------------------------------------------------

    def client_response_headers(
        self, headers: Iterable[tuple[str, str]], connection: str | None
    ) -> ResponseHeaders:
        """Split an upstream response's headers into those for the client and the values of
        the session set- and patch-headers (any spelling). Set-Cookie headers naming a session
        chunk are dropped: the proxy alone writes those. Every other Set-Cookie passes."""
        named = _connection_tokens(connection) if connection else frozenset()
        out: CIMultiDict[str] = CIMultiDict()
        set_values: list[str] = []
        patch_values: list[str] = []
        for name, value in headers:
            lowered = name.lower()
            kind = self._response_kind(lowered)
            if kind:
                if kind == "set":
                    set_values.append(value)
                elif kind == "patch":
                    patch_values.append(value)
                continue
            if named and (lowered in named or canonical_name(lowered) in named):
                continue
            if lowered == "set-cookie" and self.names_chunk(value):
                continue
            out.add(name, value)
        return ResponseHeaders(out, set_values, patch_values)

    def names_chunk(self, set_cookie: str) -> bool:
        """Does this Set-Cookie value write a cookie a client would send as a chunk?

        RFC 6265bis section 5.6: ``=session.0`` and a pair with no ``=`` at all make a cookie
        with an empty name, which the client sends back as bare ``session.0``; both count."""
        pair = set_cookie.split(";", 1)[0]
        name, eq, value = pair.partition("=")
        name = name.strip()
        if eq and not name:
            name = value.split("=", 1)[0].strip()
        prefix = self.chunk_prefix
        if name[: len(prefix)].lower() != prefix.lower():
            return False
        suffix = name[len(prefix) :].strip()
        return suffix.isascii() and suffix.isdigit()

    @staticmethod
    def mark_uncacheable(headers: CIMultiDict[str]) -> None:
        """Keep a response that sets session cookies out of shared caches.

        RFC 9111 section 5.2.2.7: ``private`` forbids a shared cache to store it; ``public``
        and ``s-maxage`` would say the opposite, so they go. ``no-store`` and the backend's
        other directives stay. ``Vary: Cookie`` (RFC 9110 section 12.5.5) for caches that
        ignore ``private``."""
        directives = [
            d.strip()
            for value in headers.popall("Cache-Control", ())
            for d in value.split(",")
            if d.strip()
        ]
        kept = [
            d
            for d in directives
            if d.lower() not in ("public", "private") and not d.lower().startswith("s-maxage")
        ]
        headers["Cache-Control"] = ", ".join(["private", *kept])
        vary = [v.strip() for value in headers.popall("Vary", ()) for v in value.split(",")]
        vary = [v for v in vary if v]
        if not any(v == "*" or v.lower() == "cookie" for v in vary):
            vary.append("Cookie")
        headers["Vary"] = ", ".join(vary)


class _RequestIds:
    """32 hex digits: 64 random bits drawn once per process, then a 64-bit counter.

    Unique across workers and restarts like a UUID4, without a getrandom() syscall per
    request. An id tells how many requests its worker has served; it is a correlation id,
    never a secret. A forked child draws a prefix of its own."""

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


#: A new request id (see :class:`_RequestIds`).
new_request_id = _RequestIds()


def _connection_tokens(connection: str) -> frozenset[str]:
    """Names a Connection header removes: never the framing headers (RFC 9112 section 6)."""
    if not connection:
        return frozenset()
    tokens = {canonical_name(t.strip()) for t in connection.split(",")}
    return frozenset(tokens - _FRAMING - {""})
