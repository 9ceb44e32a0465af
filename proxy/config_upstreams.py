"""The ``upstreams:`` list: where each request goes, and what each upstream may see."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from proxy.config_reader import HOST_PATTERN, Section, kind, show


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    url: str
    scheme: str
    host: str
    port: int
    #: Path of the upstream URL without a trailing slash ("" for none), prepended on forwarding.
    base_path: str
    path_prefix: str = "/"
    match_host: str | None = None
    strip_prefix: bool = False
    timeout: float = 30.0
    #: False: this upstream gets neither the session header nor the chunk cookies, and its
    #: session headers are refused like any other owned header (e.g. a static file server).
    forward_session: bool = True
    #: Largest session header this upstream takes (bytes of X-Session's value); 0: no limit.
    #: Past it the proxy answers 431 itself rather than let the backend fail on its own terms.
    max_session_header_bytes: int = 0


def parse_upstreams(raw: Any, errors: list[str]) -> tuple[Upstream, ...]:
    if raw is None or raw == []:
        errors.append(
            "upstreams: at least one upstream is required, e.g. [{url: http://127.0.0.1:8000}]"
        )
        return ()
    if not isinstance(raw, list):
        errors.append(f"upstreams: expected a list of upstreams, got {kind(raw)}")
        return ()
    # Keyed by position in the file, so messages name the right entry even after a bad one.
    parsed: dict[int, Upstream] = {}
    written: set[int] = set()
    for i, item in enumerate(raw):
        upstream = _parse_upstream(item, f"upstreams[{i}]", errors)
        if upstream is not None:
            parsed[i] = upstream
            if isinstance(item, dict) and item.get("name") is not None:
                written.add(i)
    names: dict[str, int] = {}
    for i in sorted(written):
        name = parsed[i].name
        if name in names:
            errors.append(f"upstreams[{i}].name: {name!r} is already used; names must be unique")
        names.setdefault(name, i)
    for i in sorted(parsed.keys() - written):
        parsed[i] = replace(parsed[i], name=_unused(parsed[i].name, names))
        names[parsed[i].name] = i
    routes: dict[tuple[str | None, str], int] = {}
    for i, up in parsed.items():
        route = (up.match_host, up.path_prefix)
        if route in routes:
            errors.append(
                f"upstreams[{i}]: same host and path_prefix as upstreams[{routes[route]}];"
                " it could never be chosen"
            )
        routes.setdefault(route, i)
    return tuple(parsed.values())


def _default_name(host: str, port: int, match_host: str | None, prefix: str) -> str:
    """``host:port``, plus the route unless it is the catch-all.

    ``127.0.0.1:8000``, ``127.0.0.1:8000/api``, ``10.0.0.5:80@admin.example.com/v2``: no two
    upstreams share a route, so two on one backend get different names without a ``name:``.
    """
    name = f"{host}:{port}"
    if match_host is not None:
        name += f"@{match_host}"
    return name if prefix == "/" else name + prefix


def _unused(name: str, taken: dict[str, int]) -> str:
    # Only a written name (or an odd path like "/x@h") can equal a default one; a suffix
    # keeps the default unique without making the user rename anything.
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}#{n}"
    return candidate


def _parse_upstream(raw: Any, path: str, errors: list[str]) -> Upstream | None:
    s = Section(raw, path, errors)
    before = len(errors)
    url = s.get("url")
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:  # e.g. an unclosed IPv6 bracket
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        s.error("url", f"expected http:// or https:// URL, got {show(url)}")
        parts = None
    elif parts.query or parts.fragment or parts.username:
        s.error("url", f"expected a URL without query, fragment or credentials, got {show(url)}")
        parts = None
    elif not _resolvable(parts.hostname or ""):
        # The resolver would raise UnicodeError (not an OSError) on every request.
        s.error(
            "url", f"host is no DNS name (empty label, or one over 63 characters) in {show(url)}"
        )
        parts = None
    port: int | None = None
    if parts is not None:
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            s.error("url", f"bad port in {show(url)}")
    prefix = s.str_("path_prefix", "/")
    if not prefix.startswith("/"):
        s.error("path_prefix", f"must start with '/', got {show(prefix)}")
    prefix = "/" + prefix.strip("/")
    match_host = s.opt_str("host")
    if match_host is not None:
        if not HOST_PATTERN.fullmatch(match_host):
            s.error("host", f"expected an exact host or *.example.com, got {show(match_host)}")
        match_host = match_host.lower()
    default_name = (
        _default_name(parts.hostname, port, match_host, prefix)
        if parts is not None and parts.hostname and port
        else path
    )
    name = s.str_("name", default_name)
    strip_prefix = s.bool_("strip_prefix", False)
    timeout = s.number("timeout", 30.0, 0, 3600)
    forward_session = s.bool_("forward_session", True)
    max_session = s.int_("max_session_header_bytes", 0, 0, 16 << 20)
    s.check_unknown()
    if parts is None or port is None or len(errors) > before:
        return None
    assert parts.hostname is not None
    return Upstream(
        name=name,
        url=str(url),
        scheme=parts.scheme,
        host=parts.hostname,
        port=port,
        base_path=parts.path.rstrip("/"),
        path_prefix=prefix,
        match_host=match_host,
        strip_prefix=strip_prefix,
        timeout=timeout,
        forward_session=forward_session,
        max_session_header_bytes=max_session,
    )


def _resolvable(host: str) -> bool:
    """An IP literal, or a name the IDNA codec (RFC 5890: labels of 1 to 63 octets) encodes."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True
