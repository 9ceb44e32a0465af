"""Header hygiene: what crosses the proxy in each direction, and what never does.

Headers the proxy owns (the session headers) are removed in every spelling a backend might
fold to the same name: any case, and any character other than a letter or digit (CGI-style
servers such as PHP, Rack or WSGI turn ``X-Session``, ``X_Session`` and ``X.Session`` all into
``HTTP_X_SESSION``). Hop-by-hop headers (RFC 9110 section 7.6.1), and every header that
``Connection`` names, are removed too. Framing headers are never removed by a ``Connection``
token: framing is decided per hop by the handler (RFC 9112 section 6).

A response that sets session cookies is marked private (:meth:`HeaderPolicy.mark_uncacheable`):
a shared cache must never hand one user's session to another (Flask's CVE-2023-30861). One
made with a valid session varies on ``Cookie`` (:meth:`HeaderPolicy.vary_on_cookie`).
"""

from __future__ import annotations

import functools
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
#: A request field's fate (HeaderPolicy._request_kind); a field goes when its kind is above
#: what the peer's trust allows: _KEEP from anyone, _FORWARDING from a trusted proxy.
_KEEP, _FORWARDING, _DROP = 0, 1, 2
#: Header names classified per spelling; names repeat, so folding costs one dict lookup.
_CLASSIFY_CACHE_MAX = 4096
#: RFC 9110 section 5.3 / RFC 9112 section 6: a Connection token never removes framing.
_FRAMING = frozenset({"content-length", "transfer-encoding"})
#: Connection tokens that name nothing more to remove (RFC 9112 section 9.6's "close").
_ALWAYS_DROPPED = (HOP_BY_HOP - _FRAMING) | {"close", ""}


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
        self._request_cache: dict[str, int] = {}
        self._response_cache: dict[str, str] = {}
        self.trusted: Sequence[Network] = config.trusted_proxies
        self.chunk_prefix = config.cookie.name + "."

    def _request_kind(self, name: str) -> int:
        """_DROP (owned or dropped by itself, in any spelling), _FORWARDING (dropped unless
        the peer is trusted) or _KEEP for a request field name. Cached per spelling."""
        known = self._request_cache.get(name)
        if known is None:
            lowered = name.lower()
            canonical = canonical_name(lowered)
            if (
                lowered in self._request_drop
                or canonical in self._request_drop
                or folded_header(lowered) in self.owned_folded
            ):
                known = _DROP
            elif canonical in FORWARDING:
                known = _FORWARDING
            else:
                known = _KEEP
            if len(self._request_cache) < _CLASSIFY_CACHE_MAX:
                self._request_cache[name] = known
        return known

    def _response_kind(self, name: str) -> str:
        """ "set", "patch", "owned", "hop", "cookie" (Set-Cookie) or "" (forward) for a
        response field name. Cached per spelling."""
        known = self._response_cache.get(name)
        if known is None:
            lowered = name.lower()
            folded = folded_header(lowered)
            if folded == self._set_folded:
                known = "set"
            elif folded == self._patch_folded:
                known = "patch"
            elif folded in self.owned_folded:
                known = "owned"
            elif lowered in self._response_drop or canonical_name(lowered) in self._response_drop:
                known = "hop"
            elif lowered == "set-cookie":
                known = "cookie"
            else:
                known = ""
            if len(self._response_cache) < _CLASSIFY_CACHE_MAX:
                self._response_cache[name] = known
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
        # Forwarding fields from an untrusted peer go, like anything Connection names.
        allowed = _FORWARDING if trusted else _KEEP
        out: CIMultiDict[str] = CIMultiDict()
        cache = self._request_cache
        for name, value in headers.items():
            kind = cache.get(name)  # names repeat in the same spelling: one lookup
            if kind is None:
                kind = self._request_kind(name)
            if kind > allowed:
                continue
            if named and canonical_name(name) in named:
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
        cache = self._response_cache
        for name, value in headers:
            kind = cache.get(name)  # names repeat in the same spelling: one lookup
            if kind is None:
                kind = self._response_kind(name)
            if kind:
                if kind == "cookie":
                    if self.names_chunk(value):
                        continue
                else:
                    if kind == "set":
                        set_values.append(value)
                    elif kind == "patch":
                        patch_values.append(value)
                    continue
            if named and canonical_name(name) in named:
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
        HeaderPolicy.vary_on_cookie(headers)

    @staticmethod
    def vary_on_cookie(headers: CIMultiDict[str]) -> None:
        """Say that the response depends on the request's ``Cookie`` (RFC 9110 section
        12.5.5): ``Cookie`` joins the backend's ``Vary`` in one field, unless it already names
        ``Cookie`` in any case, or is ``*`` (which varies on everything already)."""
        values = headers.getall("Vary", None)
        if values is None:
            headers["Vary"] = "Cookie"
            return
        members = [m.strip() for value in values for m in value.split(",")]
        if any(m == "*" or m.lower() == "cookie" for m in members):
            return
        headers.popall("Vary", None)
        headers["Vary"] = ", ".join([*(m for m in members if m), "Cookie"])


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


@functools.lru_cache(maxsize=256)  # a few spellings ("keep-alive", "close") are almost all
def _connection_tokens(connection: str) -> frozenset[str]:
    """Names a Connection header removes: never the framing headers (RFC 9112 section 6)."""
    if not connection:
        return frozenset()
    tokens = {canonical_name(t.strip()) for t in connection.split(",")}
    # Hop-by-hop names go anyway, and "close" names no field: what is left is usually nothing,
    # and then no header needs the per-name check.
    return frozenset(tokens - _FRAMING - _ALWAYS_DROPPED)
