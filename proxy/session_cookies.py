"""Chunk cookies on the wire: finding them in a ``Cookie`` header, writing ``Set-Cookie``.

The codec deals in chunk values by index; this module maps them to and from cookie syntax
(RFC 6265). It owns the names ``<name>.0``, ``<name>.1``, ... and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TypeVar

from proxy.config import CookiePolicy
from proxy.session_codec import ChunkCookie

K = TypeVar("K", int, str)

#: RFC 6265 section 5.2.2: a Max-Age of zero or less expires the cookie at once; a past Expires
#: does the same for clients that predate Max-Age.
_EXPIRED = "; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
#: Chunk indexes above this are not ours (and not worth an int() on a hostile header).
_MAX_INDEX_DIGITS = 3


@dataclass(slots=True)
class CookieSplit:
    """A request's ``Cookie`` header, split into session chunks and everything else."""

    #: Chunk values by index. A chunk sent twice with different values is left out and
    #: recorded in ``conflicts``.
    chunks: dict[int, str] = field(default_factory=dict)
    #: Indexes that came more than once with different values.
    conflicts: set[int] = field(default_factory=set)
    #: The other cookies, unchanged, joined with "; " (None if there are none).
    others: str | None = None


def split_cookie_header(header: str | None, name: str) -> CookieSplit:
    """Separate ``<name>.<i>`` cookies from the rest of a ``Cookie`` header.

    A pair that some backend's parser could still read as a chunk (RFC 2965 commas, a quoted
    name, another case: ``a=1, session.0=x``, ``"session.0"=x``) is dropped, never forwarded:
    only the proxy's own reading of the chunks may reach a backend."""
    if not header:
        return CookieSplit()
    prefix = name + "."
    lower_prefix = prefix.lower()
    if prefix not in header and lower_prefix not in header.lower():
        return CookieSplit(others=header)
    hidden = _hidden_chunk_pattern(lower_prefix)
    split = CookieSplit()
    others: list[str] = []
    plen = len(prefix)
    for piece in header.split(";"):
        pair = piece.strip()
        if not pair.startswith(prefix):
            # A pair too short to hold "<name>.<digit>" skips the search: thousands of tiny
            # pairs then cost a loop turn each (the head's cap bounds how many).
            if pair and (len(pair) <= plen or not hidden.search(pair)):
                others.append(pair)
            continue
        key, _, value = pair.partition("=")
        index_text = key[plen:].rstrip()
        if not _is_chunk_index(index_text):
            if not hidden.search(pair):
                others.append(pair)
            continue
        keep_once(split.chunks, split.conflicts, int(index_text), cookie_value(value))
    split.others = "; ".join(others) or None
    return split


def cookie_value(raw: str) -> str:
    """A cookie-value without its surrounding space and quotes (RFC 6265 section 4.1.1)."""
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def keep_once(values: dict[K, str], conflicts: set[K], key: K, value: str) -> None:
    """Record ``key``'s value, unless it came before with another one (another Path's cookie,
    say): then it is ambiguous, neither is trusted, and the key goes to ``conflicts``."""
    if key in conflicts:
        return
    seen = values.get(key)
    if seen is None:
        values[key] = value
    elif seen != value:
        del values[key]
        conflicts.add(key)


_HIDDEN_CACHE: dict[str, re.Pattern[str]] = {}


def _hidden_chunk_pattern(lower_prefix: str) -> re.Pattern[str]:
    """``<name>.<digits>`` at the start of a pair or after a separator a lenient parser splits
    on, followed by ``=`` or the end (a nameless cookie, RFC 6265bis section 5.6)."""
    pattern = _HIDDEN_CACHE.get(lower_prefix)
    if pattern is None:
        pattern = re.compile(
            r"(?:^|[\s,;\"'])" + re.escape(lower_prefix) + r"[0-9]+\s*(?:=|\"|'|,|$)",
            re.IGNORECASE,
        )
        _HIDDEN_CACHE[lower_prefix] = pattern
    return pattern


def _is_chunk_index(text: str) -> bool:
    # Canonical decimal only: "0", "7", "12"; not "07", "+1", "1_0" or non-ASCII digits.
    return (
        0 < len(text) <= _MAX_INDEX_DIGITS
        and text.isascii()
        and text.isdigit()
        and (text == "0" or text[0] != "0")
    )


class SetCookieWriter:
    """Renders ``Set-Cookie`` values for chunk cookies under one cookie policy."""

    def __init__(self, policy: CookiePolicy) -> None:
        attrs = [f"; Path={policy.path}"]
        if policy.domain:
            attrs.append(f"; Domain={policy.domain}")
        common_tail = ""
        if policy.http_only:
            common_tail += "; HttpOnly"
        if policy.secure:
            common_tail += "; Secure"
        common_tail += f"; SameSite={policy.same_site.capitalize()}"
        scope = "".join(attrs)
        self._live_suffix = f"{scope}; Max-Age={policy.max_age}{common_tail}"
        self._expired_suffix = f"{scope}{_EXPIRED}{common_tail}"
        self.name = policy.name

    def live(self, cookie: ChunkCookie) -> str:
        return f"{cookie.name}={cookie.value}{self._live_suffix}"

    def expired(self, index: int) -> str:
        return self.expired_named(f"{self.name}.{index}")

    def expired_named(self, name: str) -> str:
        """Expire any cookie of this scope by name (a chunk, or a migrated legacy cookie)."""
        # The value is emptied too: a client that ignores the expiry still drops the old value.
        return f"{name}={self._expired_suffix}"
