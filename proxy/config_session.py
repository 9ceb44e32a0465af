"""The ``session:`` section: the owned header names, sealing, refresh and the JSON size cap."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from proxy.config_reader import TOKEN, Section


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    header: str = "X-Session"
    set_header: str = "X-Set-Session"
    status_header: str = "X-Session-Status"
    #: A backend's JSON Merge Patch (RFC 7396) to apply to the request's session.
    patch_header: str = "X-Patch-Session"
    encrypt: bool = False
    #: Compress with zlib when that makes the cookie shorter.
    compress: bool = True
    #: Re-issue a valid cookie older than this many seconds (sliding expiry); None = never.
    refresh_after: int | None = None
    #: Largest session JSON accepted from a backend and largest decompressed payload accepted
    #: from a cookie (the decompression-bomb cap).
    max_json_bytes: int = 131_072


_HEADER_KEYS = ("header", "set_header", "status_header", "patch_header")


def parse_session(raw: Any, errors: list[str]) -> SessionPolicy:
    s = Section(raw, "session", errors)
    d = SessionPolicy()
    names = {key: s.str_(key, getattr(d, key), TOKEN) for key in _HEADER_KEYS}
    if len({folded_header(h) for h in names.values()}) != len(names):
        s.errors.append(
            "session: header, set_header, status_header and patch_header must be four different"
            " names once case and every character other than letters and digits are ignored"
        )
    policy = SessionPolicy(
        header=names["header"],
        set_header=names["set_header"],
        status_header=names["status_header"],
        patch_header=names["patch_header"],
        encrypt=s.bool_("encrypt", d.encrypt),
        compress=s.bool_("compress", d.compress),
        refresh_after=s.duration("refresh_after", None),
        max_json_bytes=s.int_("max_json_bytes", d.max_json_bytes, 2, 16 << 20),
    )
    s.check_unknown()
    return policy


_NON_ALNUM = re.compile(r"[^0-9a-z]")


def folded_header(name: str) -> str:
    """A name as PHP, CGI and other lenient servers may see it: ``X.Set_Session`` -> xsetsession."""
    return _NON_ALNUM.sub("", name.lower())
