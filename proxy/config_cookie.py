"""The ``cookie:`` section: how the proxy's chunk cookies ``<name>.0``, ``<name>.1``... are set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from proxy.config_reader import COOKIE_NAME, HOST_PATTERN, Section, show

#: RFC 6265 section 6.1: browsers store at least 4096 bytes per cookie, counting name, value
#: and the "=" sign. Chromium and Firefox count name+value (4096), Safari is a little stricter,
#: so name=value is kept to 4093 to stay clear of every implementation's rounding.
MAX_CHUNK_SIZE = 4093
MIN_CHUNK_SIZE = 256

SameSite = Literal["lax", "strict", "none"]


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    name: str = "session"
    path: str = "/"
    domain: str | None = None
    secure: bool = True
    http_only: bool = True
    same_site: SameSite = "lax"
    #: Seconds. Both the cookie's Max-Age and the server-side expiry of the signed timestamp.
    max_age: int = 1_209_600
    chunk_size: int = 4000
    max_chunks: int = 12


def parse_cookie(raw: Any, errors: list[str]) -> CookiePolicy:
    s = Section(raw, "cookie", errors)
    d = CookiePolicy()
    name = s.str_("name", d.name)
    if not COOKIE_NAME.fullmatch(name):
        s.error("name", f"{name!r} is not a valid cookie name (letters, digits, -_ and no '.')")
    path = cookie_path(s, "path", d.path)
    domain = cookie_domain(s, "domain")
    secure = s.bool_("secure", d.secure)
    same_site = s.choice("same_site", d.same_site, ("lax", "strict", "none"))
    if same_site == "none" and not secure:
        # Browsers reject SameSite=None cookies that are not Secure (RFC 6265bis section 5.4.7).
        s.error("same_site", "'none' requires secure: true (browsers drop such cookies otherwise)")
    max_age = s.duration("max_age", d.max_age)
    chunk_size = s.int_("chunk_size", d.chunk_size, MIN_CHUNK_SIZE, 1 << 30)
    if chunk_size > MAX_CHUNK_SIZE:
        s.error(
            "chunk_size",
            f"{chunk_size} is more than browsers accept for name=value; "
            f"use at most {MAX_CHUNK_SIZE}",
        )
        chunk_size = d.chunk_size
    max_chunks = s.int_("max_chunks", d.max_chunks, 1, 64)
    http_only = s.bool_("http_only", d.http_only)
    s.check_unknown()
    return CookiePolicy(
        name=name,
        path=path,
        domain=domain,
        secure=secure,
        http_only=http_only,
        same_site=same_site,  # type: ignore[arg-type]
        max_age=max_age or d.max_age,
        chunk_size=chunk_size,
        max_chunks=max_chunks,
    )


def cookie_path(s: Section, key: str, default: str) -> str:
    """A cookie's ``Path`` attribute: absolute, and nothing that would end the attribute."""
    path = s.str_(key, default)
    if not path.startswith("/") or any(c in path for c in ";, \t\r\n"):
        s.error(key, f"expected an absolute path like '/', got {show(path)}")
    return path


def cookie_domain(s: Section, key: str) -> str | None:
    """A cookie's ``Domain`` attribute, or None for a host-only cookie."""
    domain = s.opt_str(key)
    if domain is not None and not HOST_PATTERN.fullmatch(domain.lstrip(".")):
        s.error(key, f"expected a domain like example.com, got {show(domain)}")
    return domain
