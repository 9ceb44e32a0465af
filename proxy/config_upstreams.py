"""The ``upstreams:`` list: where each request goes, and what each upstream may see."""

from __future__ import annotations

from dataclasses import dataclass
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
    for i, item in enumerate(raw):
        upstream = _parse_upstream(item, f"upstreams[{i}]", errors)
        if upstream is not None:
            parsed[i] = upstream
    names: dict[str, int] = {}
    routes: dict[tuple[str | None, str], int] = {}
    for i, up in parsed.items():
        if up.name in names:
            errors.append(f"upstreams[{i}].name: {up.name!r} is already used; names must be unique")
        names.setdefault(up.name, i)
        route = (up.match_host, up.path_prefix)
        if route in routes:
            errors.append(
                f"upstreams[{i}]: same host and path_prefix as upstreams[{routes[route]}];"
                " it could never be chosen"
            )
        routes.setdefault(route, i)
    return tuple(parsed.values())


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
    default_name = f"{parts.hostname}:{port}" if parts is not None and port else f"upstream{path}"
    name = s.str_("name", default_name)
    strip_prefix = s.bool_("strip_prefix", False)
    timeout = s.number("timeout", 30.0, 0, 3600)
    forward_session = s.bool_("forward_session", True)
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
    )
