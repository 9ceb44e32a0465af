"""Legacy Flask session cookies: verified once, turned into plain JSON the proxy can re-issue.

It knows nothing of HTTP beyond cookie names. :meth:`LegacyReader.read` takes the legacy cookies
a request carried (see :func:`split_legacy_cookies`) and returns a :class:`LegacyResult` whose
``state`` is ``absent | valid | expired | invalid``, like the codec's. Bad input is a result,
never an exception.

Wire format (Flask's ``SecureCookieSessionInterface``, itsdangerous ``URLSafeTimedSerializer``)::

    <payload>.<timestamp>.<signature>      payload = base64url(tagged JSON)
    .<payload>.<timestamp>.<signature>     payload = base64url(zlib(tagged JSON))

``signature`` is HMAC-<digest> over ``[.]<payload>.<timestamp>`` with the key
HMAC-<digest>(secret, salt) (itsdangerous ``key_derivation="hmac"``). The
"Chunked Secure Cookie Session" snippet splits that same string over ``<name>:0`` ...
``<name>:9``; it is joined in the order of the cookie names sorted as strings.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

from itsdangerous.encoding import base64_decode, bytes_to_int
from itsdangerous.exc import BadData
from itsdangerous.signer import Signer

from proxy.config_migrate import MAX_LEGACY_COOKIE_BYTES, MigrateConfig
from proxy.session_codec import (
    FUTURE_SKEW_SECONDS,
    SessionError,
    SessionState,
    compact_session,
    inflate_bounded,
    parse_session_json,
)
from proxy.session_cookies import cookie_value, keep_once

#: itsdangerous writes the timestamp as a big-endian integer; eight bytes is year 292 billion.
_MAX_TIMESTAMP_CHARS = 11
_DIGESTS: dict[str, Callable[..., Any]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}


class LegacyTagError(Exception):
    """Flask's tagged JSON holds a value with no plain-JSON rule. ``reason`` is a fixed phrase."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LegacyResult:
    state: SessionState
    #: Compact ASCII JSON of the session when valid, else ``"{}"``.
    payload: str = "{}"
    #: Signing time (Unix seconds) of a valid or expired legacy session.
    issued_at: int | None = None
    #: Why it is not valid, for the DEBUG log. A fixed phrase, never cookie or session content.
    reason: str = ""
    #: Every legacy cookie name the request carried, valid or not: expire them all, forward none.
    carried: tuple[str, ...] = ()


@dataclass(slots=True)
class LegacyCookieSplit:
    """A ``Cookie`` header split into the legacy cookies and everything else."""

    #: Legacy cookie values by name. A name sent twice with different values is left out.
    values: dict[str, str] = field(default_factory=dict)
    #: Legacy names that came more than once with different values.
    conflicts: set[str] = field(default_factory=set)
    #: The other cookies, unchanged, joined with "; " (None if there are none).
    others: str | None = None


def split_legacy_cookies(header: str | None, names: Collection[str]) -> LegacyCookieSplit:
    """Separate the cookies named exactly ``names`` from the rest of a ``Cookie`` header.

    Give it the header that :func:`proxy.session_cookies.split_cookie_header` left over
    (``others``). A pair some backend's parser could still read as a legacy cookie (another case,
    a quoted name, an RFC 2965 comma: ``a=1, session=x``) is dropped, never forwarded, so the old
    Flask code can never see a session the proxy did not verify.
    """
    if not header or not names:
        return LegacyCookieSplit(others=header or None)
    lowered = header.lower()
    if not any(name.lower() in lowered for name in names):
        return LegacyCookieSplit(others=header)
    hidden = _hidden_legacy_pattern(tuple(sorted(names)))
    split = LegacyCookieSplit()
    others: list[str] = []
    shortest = min(map(len, names))
    for piece in header.split(";"):
        pair = piece.strip()
        if len(pair) < shortest:  # too short to hold a legacy name: no search, one loop turn
            if pair:
                others.append(pair)
            continue
        key, eq, value = pair.partition("=")
        key = key.strip()
        if not eq or key not in names:
            if pair and not hidden.search(pair):
                others.append(pair)
            continue
        keep_once(split.values, split.conflicts, key, cookie_value(value))
    split.others = "; ".join(others) or None
    return split


@functools.lru_cache(maxsize=8)
def _hidden_legacy_pattern(names: tuple[str, ...]) -> re.Pattern[str]:
    """A legacy name at the start of a pair or after a separator a lenient parser splits on,
    followed by ``=`` or the end (a nameless cookie, RFC 6265bis section 5.6)."""
    alternatives = "|".join(re.escape(name) for name in names)
    return re.compile(r"(?:^|[\s,;\"'])(?:" + alternatives + r")\s*(?:=|\"|'|,|$)", re.IGNORECASE)


class LegacyReader:
    """Reads one ``migrate:`` format's cookies with Flask's keys, salt, digest and max age.

    Every key in ``secret_keys`` verifies (Flask's SECRET_KEY then SECRET_KEY_FALLBACKS). The
    Flask JSON, tags included, may be at most ``max_json_bytes`` after decompression, and the
    plain JSON too; each legacy cookie value at most :data:`MAX_LEGACY_COOKIE_BYTES`.
    """

    def __init__(
        self,
        config: MigrateConfig,
        max_json_bytes: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.max_json_bytes = max_json_bytes
        self.clock = clock
        self.names = config.legacy_names()
        self._name_set = frozenset(self.names)
        # itsdangerous wants the newest key last; the config lists it first.
        self._signer = Signer(
            [secret.value for secret in reversed(config.secret_keys)],
            salt=config.salt,
            key_derivation="hmac",
            digest_method=_DIGESTS[config.digest],
        )

    def read(self, cookies: Mapping[str, str], conflicts: Collection[str] = ()) -> LegacyResult:
        """Verify the legacy cookies a request carried, by name (other names are ignored).

        ``conflicts`` are legacy names sent twice with different values: the session is then
        invalid, and those names are still in ``carried`` so the response expires them.
        """
        present = sorted(name for name in cookies if name in self._name_set)
        carried = tuple(sorted({*present, *(c for c in conflicts if c in self._name_set)}))
        if not carried:
            return LegacyResult(SessionState.ABSENT)
        if len(carried) != len(present):
            return _invalid("legacy cookie sent twice with different values", carried)
        values = [cookies[name] for name in present]
        if any(len(value) > MAX_LEGACY_COOKIE_BYTES for value in values):
            return _invalid("legacy cookie too large", carried)
        # flask: the one name. flask-chunked: the snippet joined its pieces in name order.
        token = "".join(values)
        if not token:
            return LegacyResult(SessionState.ABSENT, reason="legacy cookie empty", carried=carried)
        return self._verify(token, carried)

    def _verify(self, token: str, carried: tuple[str, ...]) -> LegacyResult:
        try:
            signed = self._signer.unsign(token)
        except (BadData, UnicodeError):
            return _invalid("bad signature", carried)
        payload_b64, _, ts_b64 = signed.rpartition(b".")
        if not payload_b64 or not ts_b64 or len(ts_b64) > _MAX_TIMESTAMP_CHARS:
            return _invalid("malformed timestamp", carried)
        try:
            issued_at = bytes_to_int(base64_decode(ts_b64))
        except BadData:
            return _invalid("malformed timestamp", carried)
        now = self.clock()
        if issued_at > now + FUTURE_SKEW_SECONDS:
            return _invalid("timestamp in the future", carried)
        if now - issued_at > self.config.max_age:
            return LegacyResult(SessionState.EXPIRED, issued_at=issued_at, carried=carried)
        compressed = payload_b64.startswith(b".")
        try:
            body = base64_decode(payload_b64[1:] if compressed else payload_b64)
        except BadData:
            return _invalid("malformed encoding", carried)
        raw = inflate_bounded(body, self.max_json_bytes) if compressed else body
        if raw is None or len(raw) > self.max_json_bytes:
            return _invalid("payload too large or corrupt", carried)
        try:
            value = untag_flask_json(parse_session_json(raw, self.max_json_bytes))
        except LegacyTagError as exc:
            return _invalid(exc.reason, carried)
        except SessionError:
            return _invalid("payload not JSON", carried)
        if not isinstance(value, dict):
            return _invalid("payload not a JSON object", carried)
        try:
            text = compact_session(value, self.max_json_bytes)
        except SessionError:
            return _invalid("payload too large or corrupt", carried)
        if text is None:
            return LegacyResult(
                SessionState.ABSENT,
                issued_at=issued_at,
                reason="legacy session empty",
                carried=carried,
            )
        return LegacyResult(SessionState.VALID, text, issued_at, carried=carried)


# --- Flask's tagged JSON ------------------------------------------------------------------
# flask.json.tag.TaggedJSONSerializer writes a value JSON cannot hold as a one-key object
# {"<tag>": <json>}. Each known tag has one plain-JSON rule; docs/migration.md has the table.


def _tuple(value: Any) -> Any:
    if not isinstance(value, list):
        raise LegacyTagError("malformed tag")
    return value  # ' t' tuple -> array


def _bytes(value: Any) -> Any:
    # ' b' bytes: Flask writes standard base64 (RFC 4648 section 4, '+/' with '=' padding);
    # it stays that string, re-encoded canonically.
    if not isinstance(value, str):
        raise LegacyTagError("malformed tag")
    try:
        return base64.b64encode(base64.b64decode(value, validate=True)).decode("ascii")
    except (binascii.Error, ValueError):
        raise LegacyTagError("malformed tag") from None


def _markup(value: Any) -> Any:
    if not isinstance(value, str):
        raise LegacyTagError("malformed tag")
    return value  # ' m' Markup -> its HTML text, unescaped no further


def _uuid(value: Any) -> Any:
    if not isinstance(value, str):
        raise LegacyTagError("malformed tag")
    try:
        return str(uuid.UUID(hex=value))  # ' u' UUID (32 hex digits) -> 8-4-4-4-12 lower hex
    except ValueError:
        raise LegacyTagError("malformed tag") from None


def _datetime(value: Any) -> Any:
    # ' d' datetime: Flask writes an HTTP date (RFC 9110 section 5.6.7), seconds, GMT.
    if not isinstance(value, str):
        raise LegacyTagError("malformed tag")
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        raise LegacyTagError("malformed tag") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # ISO 8601 / RFC 3339


def _tagged_dict(value: Any) -> Any:
    # ' di': a one-key dict whose key is itself a tag; Flask appended "__" to that key.
    if not isinstance(value, dict) or len(value) != 1:
        raise LegacyTagError("malformed tag")
    key, item = next(iter(value.items()))
    if not key.endswith("__"):
        raise LegacyTagError("malformed tag")
    return {key[:-2]: item}


_TAGS: dict[str, Callable[[Any], Any]] = {
    " t": _tuple,
    " b": _bytes,
    " m": _markup,
    " u": _uuid,
    " d": _datetime,
    " di": _tagged_dict,
}


def untag_flask_json(value: Any) -> Any:
    """Flask's parsed tagged JSON as plain JSON values, innermost first (as Flask untags).

    A one-key object whose key starts with a space is a tag: Flask's own tags all do, and an
    app's custom tags (``session_interface.serializer.register``) should. One with no rule
    raises :class:`LegacyTagError` ("unknown tag"), as does a tag with a value of the wrong
    shape ("malformed tag"); the reader turns both into an invalid result.
    """
    try:
        return _untag(value)
    except RecursionError:
        raise LegacyTagError("nested too deeply") from None


def _untag(value: Any) -> Any:
    if isinstance(value, list):
        return [_untag(item) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and isinstance(value.get(" di"), dict):
        # The inner key is the tag-like key with "__" appended: a key, not a tag.
        return _tagged_dict({key: _untag(item) for key, item in value[" di"].items()})
    value = {key: _untag(item) for key, item in value.items()}
    if len(value) == 1:
        key = next(iter(value))
        if key.startswith(" "):
            rule = _TAGS.get(key)
            if rule is None:
                raise LegacyTagError("unknown tag")
            return rule(value[key])
    return value


def _invalid(reason: str, carried: tuple[str, ...]) -> LegacyResult:
    return LegacyResult(SessionState.INVALID, reason=reason, carried=carried)
