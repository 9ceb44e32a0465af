"""Routing: which configured upstream a request goes to, and with which path.

Built once from the configuration. Upstreams whose ``host`` matches the request's host are
preferred (exact names before ``*.`` wildcards, longer wildcards first), then those without a
``host``; within the first group that has a match, the longest ``path_prefix`` wins. Prefixes
match whole path segments: ``/api`` matches ``/api`` and ``/api/x``, never ``/apix``.

A request whose host is not a plain authority (:func:`valid_host`) gets no route at all: the
connection answers ``400`` before routing (RFC 9112 section 3.2).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from proxy.config import Upstream


@dataclass(frozen=True, slots=True)
class Route:
    upstream: Upstream
    #: The path and query to request from the upstream (base path and strip_prefix applied).
    target: str


class Router:
    def __init__(self, upstreams: Sequence[Upstream]) -> None:
        exact: dict[str, list[Upstream]] = {}
        wildcards: list[tuple[str, list[Upstream]]] = []
        default: list[Upstream] = []
        for up in upstreams:
            if up.match_host is None:
                default.append(up)
            elif up.match_host.startswith("*."):
                suffix = up.match_host[1:]  # ".example.com"
                for known, group in wildcards:
                    if known == suffix:
                        group.append(up)
                        break
                else:
                    wildcards.append((suffix, [up]))
            else:
                exact.setdefault(up.match_host, []).append(up)
        by_prefix = _longest_prefix_first
        self._exact = {host: by_prefix(group) for host, group in exact.items()}
        self._wildcards = [
            (suffix, by_prefix(group))
            for suffix, group in sorted(wildcards, key=lambda item: -len(item[0]))
        ]
        self._default = by_prefix(default)

    def route(self, host: str, path: str, query: str = "") -> Route | None:
        """Choose the upstream for ``host`` (a Host header, port allowed) and an absolute path."""
        name = _hostname(host)
        groups: list[list[Upstream]] = []
        exact = self._exact.get(name)
        if exact:
            groups.append(exact)
        for suffix, group in self._wildcards:
            if name.endswith(suffix) and len(name) > len(suffix):
                groups.append(group)
        groups.append(self._default)
        for group in groups:
            for up in group:
                prefix = up.path_prefix
                if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
                    return Route(up, _target(up, path, query))
        return None


_OCTET: Final = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"  # no leading zero (octal)
_IPV4: Final = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
#: 1 to 65535, without leading zeros.
_PORT: Final = (
    r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
)
_LABEL: Final = r"[A-Za-z0-9-]{1,63}+"
#: Possessive repeats: a label ends only at "." or ":", so nothing is ever given back and a
#: refused host costs one pass, however it is spelled.
_HOST: Final = re.compile(
    rf"(?P<name>{_LABEL}(?:\.{_LABEL})*+\.?"  # a name or an IPv4 address; one trailing dot
    r"|\[[0-9A-Fa-f:.]{2,45}+\])"  # an IPv6 address in brackets, checked by ipaddress below
    rf"(?::{_PORT})?"
)
#: A last label a URL parser reads as a number (WHATWG URL's "ends in a number"): the name is
#: then an IPv4 address to it (127.1, 0x7f.1), so it must be a plain dotted quad.
_NUMBER: Final = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")
#: 253 characters of name (RFC 1035 section 2.3.4), a trailing dot and ":65535".
_MAX_HOST_CHARS: Final = 260
#: Hosts already found valid: a worker sees a few, so the check is usually one set lookup.
_VALID_HOSTS: set[str] = set()
_VALID_HOSTS_MAX: Final = 1024


def valid_host(host: str) -> bool:
    """Is ``host`` (a Host field or an absolute-form target's authority) fit to route and
    forward? RFC 9112 section 3.2: a server answers 400 to an invalid Host.

    Accepted: a name of letters, digits and hyphens in dot-separated labels (one trailing dot
    allowed), a dotted-quad IPv4 address or a bracketed IPv6 address, each with an optional
    port 1-65535 without leading zeros. Everything RFC 3986's reg-name allows beyond that
    (percent-encoding, sub-delims), userinfo, an empty host or port and any other character
    is refused: a backend or a cache could read such a host differently from the router.
    Valid hosts are remembered (a bounded set), so the usual answer costs a set lookup.
    """
    if host in _VALID_HOSTS:
        return True
    match = _HOST.fullmatch(host) if len(host) <= _MAX_HOST_CHARS else None
    if match is None:
        return False
    name = match["name"]
    if name.startswith("["):
        try:
            ipaddress.IPv6Address(name[1:-1])
        except ValueError:
            return False
    elif _NUMBER.fullmatch(name.rstrip(".").rpartition(".")[2]) and not _IPV4.fullmatch(name):
        return False
    if len(_VALID_HOSTS) < _VALID_HOSTS_MAX:
        _VALID_HOSTS.add(host)
    return True


def _longest_prefix_first(group: list[Upstream]) -> list[Upstream]:
    return sorted(group, key=lambda up: -len(up.path_prefix))


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # IPv6 literal, RFC 3986 section 3.2.2
        return host.split("]", 1)[0] + "]"
    name, _, _ = host.partition(":")
    return name.rstrip(".")


def _target(up: Upstream, path: str, query: str) -> str:
    if up.strip_prefix and up.path_prefix != "/":
        path = path[len(up.path_prefix) :] or "/"
    path = up.base_path + path
    return f"{path}?{query}" if query else path


def normalize_path(raw_path: str) -> str:
    """Remove dot segments (RFC 3986 section 5.2.4) from a raw, still-encoded path.

    Routing decides on the normalised path and forwards it, so ``/public/../admin`` cannot be
    routed by its ``/public`` prefix and then resolved to ``/admin`` by the backend. ``%2e`` is
    an encoded unreserved "." (RFC 3986 section 6.2.2.2) and counts as one.
    """
    if "." not in raw_path and "%2" not in raw_path:
        return raw_path or "/"
    segments = raw_path.split("/")
    out: list[str] = []
    for segment in segments[1:]:
        plain = segment.replace("%2e", ".").replace("%2E", ".")
        if plain == "..":
            if out:
                out.pop()
        elif plain != ".":
            out.append(segment)
    if segments[-1] and segments[-1].replace("%2e", ".").replace("%2E", ".") in (".", ".."):
        out.append("")  # "/a/b/.." -> "/a/", as in RFC 3986 section 5.2.4 step 2
    return "/" + "/".join(out)
