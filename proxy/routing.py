"""Routing: which configured upstream a request goes to, and with which path.

Built once from the configuration. Upstreams whose ``host`` matches the request's host are
preferred (exact names before ``*.`` wildcards, longer wildcards first), then those without a
``host``; within the first group that has a match, the longest ``path_prefix`` wins. Prefixes
match whole path segments: ``/api`` matches ``/api`` and ``/api/x``, never ``/apix``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
