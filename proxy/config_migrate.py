"""The ``migrate:`` section: legacy Flask session cookies the proxy may read once and re-issue.

Off unless present. ``flask`` is Flask's one ``session`` cookie; ``flask-chunked`` is the
"Chunked Secure Cookie Session" snippet's ``session:0`` ... ``session:9``. Both are itsdangerous
``URLSafeTimedSerializer`` strings, so the keys, salt, digest and age are Flask's settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from proxy.config_cookie import CookiePolicy, cookie_domain, cookie_path
from proxy.config_reader import TOKEN, Section, show
from proxy.config_secrets import Secret, parse_secret_list

MigrateFormat = Literal["flask", "flask-chunked"]
Digest = Literal["sha1", "sha256", "sha512"]

#: RFC 6265 section 6.1: a browser stores at least 4096 bytes per cookie, and the ones in use
#: store no more. A legacy cookie value longer than that (counted in characters, which for the
#: ASCII of a signed value are bytes) was never written by a browser's Flask app, so it is
#: refused before any decoding.
MAX_LEGACY_COOKIE_BYTES = 4096
#: The snippet splits the signed string over at most ten cookies, ``<name>:0`` to ``<name>:9``.
FLASK_CHUNKED_COUNT = 10
#: Flask's default PERMANENT_SESSION_LIFETIME: 31 days.
FLASK_MAX_AGE = 31 * 86400


@dataclass(frozen=True, slots=True)
class MigrateConfig:
    format: MigrateFormat
    #: The legacy cookie's name; for ``flask-chunked`` the part before ``:N``.
    cookie_name: str = "session"
    #: Flask's SECRET_KEY then SECRET_KEY_FALLBACKS, newest first; any of them verifies.
    secret_keys: tuple[Secret, ...] = ()
    #: Seconds since signing after which a legacy cookie counts as expired.
    max_age: int = FLASK_MAX_AGE
    salt: str = "cookie-session"
    digest: Digest = "sha1"
    #: Where the legacy cookie lives (Flask's SESSION_COOKIE_PATH and SESSION_COOKIE_DOMAIN):
    #: its expiry must name the same scope, or the browser keeps it (RFC 6265 section 5.3).
    cookie_path: str = "/"
    #: None: host-only, Flask's default.
    cookie_domain: str | None = None

    def legacy_names(self) -> tuple[str, ...]:
        """Every cookie name this format reads (and expires once migrated)."""
        if self.format == "flask":
            return (self.cookie_name,)
        return tuple(f"{self.cookie_name}:{i}" for i in range(FLASK_CHUNKED_COUNT))


def parse_migrate(
    raw: Any,
    cookie: CookiePolicy,
    env: Mapping[str, str],
    base_dir: Path,
    errors: list[str],
    warnings: list[str],
) -> MigrateConfig | None:
    if raw is None:
        return None
    s = Section(raw, "migrate", errors)
    fmt_value = s.get("format")
    fmt: MigrateFormat = "flask"
    if fmt_value not in ("flask", "flask-chunked"):
        s.error(
            "format",
            "expected flask (one session cookie) or flask-chunked (session:0..9), "
            f"got {show(fmt_value)}",
        )
    else:
        fmt = fmt_value
    cookie_name = s.str_("cookie_name", "session", TOKEN)
    secret_keys = parse_secret_list(
        s.get("secret_keys"),
        s.key("secret_keys"),
        env,
        base_dir,
        errors,
        min_bytes=1,
        warnings=warnings,
        missing="list Flask's SECRET_KEY then SECRET_KEY_FALLBACKS, e.g. ['${FLASK_SECRET_KEY}']",
    )
    migrate = MigrateConfig(
        format=fmt,
        cookie_name=cookie_name,
        secret_keys=secret_keys,
        max_age=s.duration("max_age", FLASK_MAX_AGE) or FLASK_MAX_AGE,
        salt=s.str_("salt", "cookie-session"),
        digest=s.choice("digest", "sha1", ("sha1", "sha256", "sha512")),  # type: ignore[arg-type]
        cookie_path=cookie_path(s, "cookie_path", "/"),
        cookie_domain=cookie_domain(s, "cookie_domain"),
    )
    s.check_unknown()
    owned = re.compile(re.escape(cookie.name) + r"\.[0-9]+")
    if any(owned.fullmatch(name) for name in migrate.legacy_names()):
        s.error(
            "cookie_name",
            f"{cookie_name!r} is one of the proxy's own chunk cookies ({cookie.name}.0, "
            f"{cookie.name}.1, ...); set it to the legacy app's SESSION_COOKIE_NAME",
        )
    return migrate
