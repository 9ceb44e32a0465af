"""The session's round trip through one request: cookies in, headers out, and back.

:meth:`SessionExchange.inbound` reads the chunk cookies a request carried; :meth:`outbound`
turns the backend's set-header into ``Set-Cookie`` values, or into an error that leaves every
session cookie untouched. The proxy handler calls these two and knows nothing of HMAC.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.config import Config
from proxy.session_codec import (
    ABSENT,
    DecodeResult,
    EncodedSession,
    InvalidSessionJSON,
    SessionCodec,
    SessionState,
    SessionTooLarge,
    compact_session,
    normalize_session_json,
    parse_session_json,
)
from proxy.session_cookies import CookieSplit, SetCookieWriter, split_cookie_header
from proxy.session_legacy import LegacyReader, split_legacy_cookies
from proxy.session_patch import merge_patch


class Change(enum.Enum):
    """What the response did to the session, for logs and metrics."""

    NONE = "none"
    SET = "set"
    PATCHED = "patched"  # an RFC 7396 merge patch applied to the request's session
    CLEARED = "cleared"
    RESIGNED = "resigned"  # verified only with an older secret, re-signed with the newest
    REFRESHED = "refreshed"  # older than refresh_after, re-issued with a new timestamp
    MIGRATED = "migrated"  # a legacy (Flask) session re-issued in the proxy's format
    OVERFLOW = "overflow"
    INVALID_HEADER = "invalid_header"


@dataclass(slots=True)
class Inbound:
    """The session a request carried: its cookies and what the codec made of them."""

    cookies: CookieSplit
    result: DecodeResult
    #: The ``migrate:`` format the session was read from ("flask", "flask-chunked"), or "".
    migrated: str = ""
    #: Legacy cookie names the request carried: expired by the response, never forwarded.
    legacy_names: tuple[str, ...] = ()

    @property
    def state(self) -> SessionState:
        return self.result.state

    @property
    def payload(self) -> str:
        return self.result.payload

    @property
    def issued_at(self) -> int | None:
        return self.result.issued_at

    @property
    def stale_key(self) -> bool:
        return self.result.stale_key

    @property
    def chunk_count(self) -> int:
        return self.result.chunk_count

    @property
    def reason(self) -> str:
        return self.result.reason

    @property
    def carried_indexes(self) -> set[int]:
        """Every chunk index the request carried, conflicting duplicates included."""
        return set(self.cookies.chunks) | self.cookies.conflicts


@dataclass(frozen=True, slots=True)
class Outbound:
    change: Change
    set_cookies: tuple[str, ...] = ()
    #: For an error: the status and JSON body to send instead of the backend's response.
    error_status: int = 0
    error_body: dict[str, object] | None = None
    #: Why the backend's header was refused, for the log (never its content).
    detail: str = ""
    #: Bytes of cookie data written, and in how many chunks (SET / RESIGNED / REFRESHED).
    size: int = 0
    chunks: int = 0


_UNCHANGED = Outbound(Change.NONE)
#: The reason names no index and no value: both came from the client.
_CONFLICTING_CHUNKS = DecodeResult(
    SessionState.INVALID, reason="a chunk cookie sent twice with different values"
)


class SessionExchange:
    def __init__(self, config: Config, codec: SessionCodec) -> None:
        self.codec = codec
        self.writer = SetCookieWriter(config.cookie)
        self.cookie_name = config.cookie.name
        self.max_json_bytes = config.session.max_json_bytes
        self.refresh_after = config.session.refresh_after
        migrate = config.migrate
        self.legacy = LegacyReader(migrate, self.max_json_bytes) if migrate else None
        #: Each legacy name's expiry, in the legacy cookie's own scope (``migrate.cookie_path``
        #: and ``cookie_domain``): one with the proxy's scope would never reach it.
        self.legacy_expired: dict[str, str] = {}
        if migrate is not None:
            scope = dataclasses.replace(
                config.cookie, path=migrate.cookie_path, domain=migrate.cookie_domain
            )
            legacy_writer = SetCookieWriter(scope)
            self.legacy_expired = {
                n: legacy_writer.expired_named(n) for n in migrate.legacy_names()
            }

    def inbound(self, cookie_header: str | None, decode: bool = True) -> Inbound:
        """The request's session. With ``decode`` False (an upstream that does not receive the
        session) the chunks are only split off, never verified: the session counts as absent.

        A chunk index sent twice with different values makes the session invalid, whichever
        index it is: neither value can be trusted (one may have been tossed in from a sibling
        domain), and dropping both could leave "no session" for a legacy cookie to fill.

        With ``migrate:`` on, legacy cookies are always split off (never forwarded). They are
        read only when the request carries no chunk cookie of the proxy's own (emptied ones,
        chunk 0 among them, are the deleted-session marker and count as none), and expired
        by the response, except for an upstream that does not receive the session."""
        split = split_cookie_header(cookie_header, self.cookie_name)
        if not decode:
            result = ABSENT
        elif split.conflicts:
            result = _CONFLICTING_CHUNKS
        else:
            result = self.codec.decode(split.chunks)
        if self.legacy is None:
            return Inbound(split, result)
        legacy = split_legacy_cookies(split.others, self.legacy.names)
        split.others = legacy.others
        if not decode:
            # An upstream that never sees the session (a static file server, say) cannot take
            # part in a migration: expiring the legacy cookie here would log the user out.
            return Inbound(split, result)
        carried = tuple(sorted({*legacy.values, *legacy.conflicts}))
        # A chunk with a value is the proxy's own, even when it made no session (not the marker).
        if not carried or result.state is not SessionState.ABSENT or any(split.chunks.values()):
            return Inbound(split, result, legacy_names=carried)
        old = self.legacy.read(legacy.values, legacy.conflicts)
        result = DecodeResult(old.state, old.payload, old.issued_at, reason=old.reason)
        migrated = self.legacy.config.format if old.state is SessionState.VALID else ""
        return Inbound(split, result, migrated=migrated, legacy_names=carried)

    def outbound(
        self,
        inbound: Inbound,
        set_values: Sequence[str],
        now: float,
        patch_values: Sequence[str] = (),
    ) -> Outbound:
        """What the backend's set- or patch-header does to the session. Either header, sent
        once; both, or one twice, is refused with the old session kept."""
        outbound = self._outbound(inbound, set_values, now, patch_values)
        if inbound.legacy_names and outbound.error_body is None:
            # Every legacy cookie the request carried goes, whatever became of the session.
            expired = tuple(self.legacy_expired[n] for n in inbound.legacy_names)
            return dataclasses.replace(outbound, set_cookies=outbound.set_cookies + expired)
        return outbound

    def _outbound(
        self,
        inbound: Inbound,
        set_values: Sequence[str],
        now: float,
        patch_values: Sequence[str],
    ) -> Outbound:
        if not set_values and not patch_values:
            if inbound.migrated:
                return self._migrate(inbound)
            return self._maintain(inbound, now)
        if set_values and patch_values:
            return _refused_header("both the set-header and the patch-header were sent")
        if len(set_values) > 1 or len(patch_values) > 1:
            return _refused_header("the set- or patch-header was sent more than once")
        try:
            if set_values:
                payload = normalize_session_json(set_values[0], self.max_json_bytes)
                change = Change.SET
            else:
                payload = self._patched(inbound, patch_values[0])
                change = Change.PATCHED
        except InvalidSessionJSON as exc:
            return _refused_header(str(exc))
        except SessionTooLarge as exc:
            return _overflow(exc)
        if payload is None:
            expired = [self.writer.expired(i) for i in sorted(inbound.carried_indexes)]
            return Outbound(Change.CLEARED, tuple(expired))
        try:
            encoded = self.codec.encode(payload)
        except SessionTooLarge as exc:
            return _overflow(exc)
        return self._replace(inbound, encoded, change)

    def _patched(self, inbound: Inbound, raw: str) -> str | None:
        patch = parse_session_json(raw, self.max_json_bytes)
        valid = inbound.state is SessionState.VALID
        # The payload is the codec's own compact JSON: parsing it back cannot fail.
        current = json.loads(inbound.payload) if valid else {}
        result = merge_patch(current, patch)
        if result is not None and not isinstance(result, dict):
            raise InvalidSessionJSON(f"the patch made a {type(result).__name__}, not an object")
        return compact_session(result, self.max_json_bytes)

    def _migrate(self, inbound: Inbound) -> Outbound:
        """Re-issue a verified legacy session in the proxy's format. Its age restarts, as
        Flask itself re-signs a permanent session on every response."""
        try:
            encoded = self.codec.encode(inbound.payload)
        except SessionTooLarge as exc:
            return _overflow(exc)
        return self._replace(inbound, encoded, Change.MIGRATED)

    def _maintain(self, inbound: Inbound, now: float) -> Outbound:
        if inbound.state is not SessionState.VALID or inbound.issued_at is None:
            return _UNCHANGED
        if self.refresh_after is not None and now - inbound.issued_at > self.refresh_after:
            change, issued_at = Change.REFRESHED, None
        elif inbound.stale_key:
            # Keep the session's age: rotation must not extend its lifetime.
            change, issued_at = Change.RESIGNED, inbound.issued_at
        else:
            return _UNCHANGED
        try:
            encoded = self.codec.encode(inbound.payload, issued_at=issued_at)
        except SessionTooLarge:
            return _UNCHANGED  # it fitted before; a smaller max_chunks now: leave it alone
        return self._replace(inbound, encoded, change)

    def _replace(self, inbound: Inbound, encoded: EncodedSession, change: Change) -> Outbound:
        count = len(encoded.cookies)
        cookies = [self.writer.live(c) for c in encoded.cookies]
        cookies += [self.writer.expired(i) for i in sorted(inbound.carried_indexes) if i >= count]
        return Outbound(change, tuple(cookies), size=encoded.size, chunks=count)


def _refused_header(detail: str) -> Outbound:
    return Outbound(
        Change.INVALID_HEADER,
        error_status=502,
        error_body={"error": "invalid_session_header"},
        detail=detail,
    )


def _overflow(exc: SessionTooLarge) -> Outbound:
    return Outbound(
        Change.OVERFLOW,
        error_status=502,
        error_body={"error": "session_too_large", "bytes": exc.size, "limit": exc.limit},
        detail=str(exc),
    )
