"""The session codec: session JSON <-> signed (or encrypted) chunk cookie values.

It knows nothing of HTTP. :meth:`SessionCodec.encode` turns compact JSON into
:class:`ChunkCookie` values; :meth:`SessionCodec.decode` turns the chunk values a request carried
back into a :class:`DecodeResult`, whose ``state`` is ``absent | valid | expired | invalid``.
Bad input is a result, never an exception.

Wire format of the joined token (split over ``<name>.0``, ``<name>.1``, ... in order)::

    S1.<n>.<kid>.<ts>.<flag>.<body>.<mac>     signed:    mac = HMAC-SHA256(name NUL head+body)
    E1.<n>.<kid>.<ts>.<flag>.<sealed>         encrypted: AES-256-GCM, AAD = name NUL head

``n`` is the chunk count, ``kid`` the key id, ``ts`` the issue time (hex seconds), ``flag`` ``z``
when the body is zlib-compressed, else ``-``. Everything but the MAC is authenticated, the
chunk count and cookie name included, so a stale extra chunk is ignored and a missing, altered
or spliced one fails the whole session. Only ``[A-Za-z0-9_.-]`` appear: RFC 6265 section 4.1.1
cookie-octets that need no quoting.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import math
import os
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from itsdangerous.encoding import base64_decode, base64_encode
from itsdangerous.exc import BadData
from itsdangerous.signer import HMACAlgorithm

from proxy.session_keys import KeyRing, SessionKey

#: Accepted clock skew before a timestamp counts as "from the future" (forged or broken clock).
FUTURE_SKEW_SECONDS = 300
#: Hard ceiling on the chunk count a cookie may claim, whatever the configuration says.
MAX_DECODE_CHUNKS = 256
_MAC_CHARS = 43  # unpadded base64 of a 32-byte HMAC-SHA256
_GCM_NONCE = 12
_GCM_TAG = 16
#: The cache key is the token's tail: the MAC, or the GCM tag. A hit must also match the whole
#: token, so no unverified value can ever be served from the cache.
_CACHE_KEY_CHARS = 22
_EMPTY = "{}"
_HMAC = HMACAlgorithm(hashlib.sha256)  # itsdangerous defaults to SHA-1; never use that


class SessionState(enum.Enum):
    ABSENT = "absent"
    VALID = "valid"
    EXPIRED = "expired"
    INVALID = "invalid"


class SessionError(Exception):
    """A session handed over by a backend cannot be stored."""


class InvalidSessionJSON(SessionError):
    """The session is not a JSON object (or not JSON at all)."""


class SessionTooLarge(SessionError):
    """The session does not fit. ``size`` and ``limit`` are in bytes."""

    def __init__(self, size: int, limit: int, what: str) -> None:
        super().__init__(f"session {what} is {size} bytes, limit {limit}")
        self.size = size
        self.limit = limit


@dataclass(frozen=True, slots=True)
class ChunkCookie:
    """One cookie of a chunked session: ``<name>.<index>=<value>``."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class DecodeResult:
    state: SessionState
    #: Compact ASCII JSON of the session when valid, else ``"{}"``.
    payload: str = _EMPTY
    #: Issue time (Unix seconds) of a valid or expired session.
    issued_at: int | None = None
    #: True when it verified only with an older secret or another mode: re-issue it.
    stale_key: bool = False
    #: How many chunks the session spans (0 when not valid).
    chunk_count: int = 0
    #: Bytes of cookie data the session spans (0 when not valid).
    size: int = 0
    #: Id of the key that verified a valid or expired session (see :mod:`proxy.session_keys`);
    #: "" otherwise. Public: it travels in the cookie, and names the secret for operators.
    key_id: str = ""
    #: Why it is invalid, for logs. Never contains cookie or session content.
    reason: str = ""


ABSENT = DecodeResult(SessionState.ABSENT)


@dataclass(frozen=True, slots=True)
class EncodedSession:
    cookies: tuple[ChunkCookie, ...]
    #: Length of the joined token, i.e. cookie bytes before splitting.
    size: int


@dataclass(slots=True)
class _CacheEntry:
    token: str
    payload: str
    issued_at: int
    key_index: int
    encrypted: bool
    chunk_count: int
    #: The VALID result, built once: a hit only has to check the clock.
    valid: DecodeResult | None = None


def normalize_session_json(raw: str | bytes, max_bytes: int) -> str | None:
    """Validate a backend's session JSON and make it compact ASCII (``\\u`` escapes).

    Returns None for ``{}`` and ``null`` (clear the session). Raises
    :class:`InvalidSessionJSON` for anything but a JSON object, :class:`SessionTooLarge` past
    ``max_bytes``. Done once when a session is set, so requests never parse JSON.
    """
    value = parse_session_json(raw, max_bytes)
    if value is not None and not isinstance(value, dict):
        raise InvalidSessionJSON(f"expected a JSON object, got {type(value).__name__}")
    return compact_session(value, max_bytes)


def parse_session_json(raw: str | bytes, max_bytes: int) -> Any:
    """Parse JSON that every other language reads back the same (RFC 8259 section 8.1 / RFC
    7493): UTF-8 only, no lone surrogate, no NaN or Infinity, no number past a double's range.
    Big integers are exact in Python and pass unchanged. Any JSON value, not only an object."""
    if len(raw) > max_bytes * 8:  # even maximal whitespace cannot shrink it under the limit
        raise SessionTooLarge(len(raw), max_bytes, "JSON")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidSessionJSON("not UTF-8") from None
    elif not raw.isascii():
        # Header bytes arrive decoded with surrogateescape: a byte that is not UTF-8 (a raw
        # Latin-1 e-acute, say) is a lone surrogate here, which strict UTF-8 refuses.
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidSessionJSON("not UTF-8") from None
    try:
        value = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise InvalidSessionJSON(f"not valid JSON ({type(exc).__name__})") from None
    if ("\\u" in raw or "\\U" in raw) and _has_surrogate(value):
        raise InvalidSessionJSON("a string holds a lone surrogate (not Unicode)")
    return value


def compact_session(value: Any, max_bytes: int) -> str | None:
    """A parsed session as compact ASCII JSON; None for ``{}`` and ``null`` (clear it)."""
    if not value:
        return None
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=True)
    except (ValueError, RecursionError) as exc:
        raise InvalidSessionJSON(f"cannot serialise ({type(exc).__name__})") from None
    if len(text) > max_bytes:
        raise SessionTooLarge(len(text), max_bytes, "JSON")
    return text


def _has_surrogate(value: Any) -> bool:
    # json.loads joins an escaped pair into one code point: any surrogate left is lone.
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except (ValueError, RecursionError):
        return False  # compact_session reports it
    return False


def inflate_bounded(body: bytes, limit: int) -> bytes | None:
    """zlib data inflated to at most ``limit`` bytes; None if corrupt or longer.

    The output is capped while inflating: a few KB of zlib can expand to gigabytes (a
    decompression bomb), and this allocates ``limit + 1`` bytes at most.
    """
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        return None
    if inflater.unconsumed_tail or not inflater.eof or len(out) > limit:
        return None
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")  # 1e400 would become Infinity
    return value


def _b64len(nbytes: int) -> int:
    return (4 * nbytes + 2) // 3


class SessionCodec:
    """Encodes and decodes one cookie name's sessions with one key ring.

    ``decode`` keeps a bounded cache of verified tokens, because a client sends the same cookie
    again and again; expiry is still checked on every hit.
    """

    def __init__(
        self,
        secrets: Sequence[bytes],
        *,
        name: str = "session",
        chunk_size: int = 4000,
        max_chunks: int = 12,
        max_age: int = 1_209_600,
        encrypt: bool = False,
        compress: bool = True,
        max_json_bytes: int = 131_072,
        cache_entries: int = 4096,
        cache_bytes: int = 64 << 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = KeyRing(secrets)
        self.name = name
        self.chunk_size = chunk_size
        self.max_chunks = max_chunks
        self.max_age = max_age
        self.encrypt = encrypt
        self.compress = compress
        self.max_json_bytes = max_json_bytes
        self.clock = clock
        self._name_bytes = name.encode("ascii") + b"\x00"
        self._mode = "E1" if encrypt else "S1"
        #: Value capacity of each chunk: chunk_size minus "<name>.<i>=".
        self._capacity = [
            chunk_size - len(f"{name}.{i}=") for i in range(max(max_chunks, MAX_DECODE_CHUNKS))
        ]
        self._cache: OrderedDict[str, _CacheEntry] = OrderedDict()
        self._cache_entries = cache_entries
        self._cache_bytes = cache_bytes
        self._cached_bytes = 0

    @property
    def capacity(self) -> int:
        """Total bytes of token that ``max_chunks`` chunks can carry."""
        return sum(self._capacity[: self.max_chunks])

    def chunk_name(self, index: int) -> str:
        return f"{self.name}.{index}"

    def expires_at(self, issued_at: int) -> int:
        """The last second (Unix time) at which a session issued at ``issued_at`` is valid:
        past ``max_age`` seconds of age it decodes as expired."""
        return issued_at + self.max_age

    # --- encode -------------------------------------------------------------------------

    def encode(self, payload: str, issued_at: int | None = None) -> EncodedSession:
        """Sign (or encrypt) compact JSON and split it into chunk cookies.

        ``payload`` should come from :func:`normalize_session_json`. ``issued_at`` keeps an
        existing session's age when it is only re-signed with a newer key. Raises
        :class:`SessionTooLarge` when it needs more than ``max_chunks`` chunks.
        """
        raw = payload.encode("ascii")
        flag = "-"
        body = raw
        if self.compress:
            packed = zlib.compress(raw, 6)
            if len(packed) < len(raw):
                body, flag = packed, "z"
        key = self.keys.newest
        if issued_at is None:
            issued_at = int(self.clock())
        fields = f"{key.kid}.{issued_at:x}.{flag}."
        if self.encrypt:
            tail_len = _b64len(_GCM_NONCE + len(body) + _GCM_TAG)
        else:
            body_b64 = base64_encode(body).decode("ascii")
            tail_len = len(body_b64) + 1 + _MAC_CHARS
        count = self._chunks_needed(len(self._mode) + 2 + len(fields) + tail_len)
        if count > self.max_chunks:
            size = len(self._mode) + 2 + len(str(count)) + len(fields) + tail_len
            raise SessionTooLarge(size, self.capacity, "cookie data")
        head = f"{self._mode}.{count}.{fields}"
        if self.encrypt:
            token = head + self._seal(key, head, body)
        else:
            signed = head + body_b64
            mac = _HMAC.get_signature(key.sign_key, self._name_bytes + signed.encode("ascii"))
            token = signed + "." + base64_encode(mac).decode("ascii")
        cookies = []
        start = 0
        for index in range(count):
            end = start + self._capacity[index]
            cookies.append(ChunkCookie(self.chunk_name(index), token[start:end]))
            start = end
        self._remember(token, payload, issued_at, key, count)
        return EncodedSession(tuple(cookies), len(token))

    def _chunks_needed(self, length_without_count: int) -> int:
        count = 1
        while count <= self.max_chunks:
            length = length_without_count + len(str(count))
            if sum(self._capacity[:count]) >= length:
                return count
            count = max(count + 1, math.ceil(length / self._capacity[0]))
        return self.max_chunks + 1

    def _seal(self, key: SessionKey, head: str, body: bytes) -> str:
        nonce = os.urandom(_GCM_NONCE)
        sealed = key.aead.encrypt(nonce, body, self._name_bytes + head.encode("ascii"))
        return base64_encode(nonce + sealed).decode("ascii")

    # --- decode -------------------------------------------------------------------------

    def decode(self, chunks: Mapping[int, str]) -> DecodeResult:
        """Verify the chunk values a request carried, by chunk index."""
        head = chunks.get(0)
        if head is None:
            return _invalid("chunk 0 missing") if chunks else ABSENT
        if not head:
            # An emptied chunk 0 is how a session is deleted (for clients that keep expired
            # cookies); whatever chunks follow it are stale.
            return ABSENT
        parts = head.split(".", 6)
        if len(parts) < 6 or parts[0] not in ("S1", "E1"):
            return _invalid("not a session token")
        count_text = parts[1]
        if not (count_text.isascii() and count_text.isdigit()) or len(count_text) > 3:
            return _invalid("bad chunk count")
        count = int(count_text)
        if not 1 <= count <= MAX_DECODE_CHUNKS or count_text != str(count):
            return _invalid("bad chunk count")
        if count == 1:
            token = head
        else:
            try:
                token = "".join([chunks[i] for i in range(count)])
            except KeyError:
                return _invalid(f"{count} chunks expected, some missing")
        entry = self._cache.get(token[-_CACHE_KEY_CHARS:])
        if entry is not None and entry.token == token:
            self._cache.move_to_end(token[-_CACHE_KEY_CHARS:])
            return self._timed_result(entry)
        return self._verify(token, parts[0], count, parts[2], parts[3], parts[4])

    def _verify(
        self, token: str, mode: str, count: int, kid: str, ts_hex: str, flag: str
    ) -> DecodeResult:
        key = self.keys.by_kid.get(kid)
        if key is None:
            return _invalid("unknown key id (secret removed?)")
        if len(ts_hex) > 12 or not _is_hex(ts_hex) or flag not in ("z", "-"):
            return _invalid("malformed header")
        head_len = len(mode) + len(str(count)) + len(kid) + len(ts_hex) + len(flag) + 5
        try:
            if mode == "S1":
                signed, dot, mac_b64 = token.rpartition(".")
                if not dot or len(mac_b64) != _MAC_CHARS or len(signed) < head_len:
                    return _invalid("malformed signature")
                message = self._name_bytes + signed.encode("ascii")
                # Compared as text: the decoder accepts several spellings of one MAC (the spare
                # low bits of its last character), and a changed cookie must never verify.
                expected = base64_encode(_HMAC.get_signature(key.sign_key, message))
                if not hmac.compare_digest(expected, mac_b64.encode("ascii")):
                    return _invalid("bad signature")
                body = base64_decode(signed[head_len:])
            else:
                sealed = _b64decode_canonical(token[head_len:])
                if len(sealed) < _GCM_NONCE + _GCM_TAG:
                    return _invalid("malformed ciphertext")
                aad = self._name_bytes + token[:head_len].encode("ascii")
                body = key.aead.decrypt(sealed[:_GCM_NONCE], sealed[_GCM_NONCE:], aad)
        except (BadData, UnicodeEncodeError, ValueError):
            return _invalid("malformed encoding")
        except InvalidTag:
            return _invalid("bad signature")
        payload = self._inflate(body) if flag == "z" else body
        if payload is None or len(payload) > self.max_json_bytes:
            return _invalid("payload too large or corrupt")
        try:
            text = payload.decode("ascii")
        except UnicodeDecodeError:
            return _invalid("payload not ASCII")
        entry = self._remember(token, text, int(ts_hex, 16), key, count, mode == "E1")
        return self._timed_result(entry)

    def _inflate(self, body: bytes) -> bytes | None:
        return inflate_bounded(body, self.max_json_bytes)

    def _timed_result(self, entry: _CacheEntry) -> DecodeResult:
        now = self.clock()
        if entry.issued_at > now + FUTURE_SKEW_SECONDS:
            return _invalid("timestamp in the future")
        if now - entry.issued_at > self.max_age:
            stale = entry.key_index != 0 or entry.encrypted != self.encrypt
            return DecodeResult(
                SessionState.EXPIRED,
                issued_at=entry.issued_at,
                stale_key=stale,
                key_id=self.keys.keys[entry.key_index].kid,
            )
        if entry.valid is None:
            entry.valid = DecodeResult(
                SessionState.VALID,
                payload=entry.payload,
                issued_at=entry.issued_at,
                stale_key=entry.key_index != 0 or entry.encrypted != self.encrypt,
                chunk_count=entry.chunk_count,
                size=len(entry.token),
                key_id=self.keys.keys[entry.key_index].kid,
            )
        return entry.valid

    def _remember(
        self,
        token: str,
        payload: str,
        issued_at: int,
        key: SessionKey,
        count: int,
        encrypted: bool | None = None,
    ) -> _CacheEntry:
        entry = _CacheEntry(
            token,
            payload,
            issued_at,
            key.index,
            self.encrypt if encrypted is None else encrypted,
            count,
        )
        if self._cache_entries <= 0:
            return entry
        cache_key = token[-_CACHE_KEY_CHARS:]
        old = self._cache.pop(cache_key, None)
        if old is not None:
            self._cached_bytes -= len(old.token) + len(old.payload)
        self._cache[cache_key] = entry
        self._cached_bytes += len(token) + len(payload)
        while len(self._cache) > self._cache_entries or self._cached_bytes > self._cache_bytes:
            _, evicted = self._cache.popitem(last=False)
            self._cached_bytes -= len(evicted.token) + len(evicted.payload)
        return entry


def _invalid(reason: str) -> DecodeResult:
    return DecodeResult(SessionState.INVALID, reason=reason)


def _b64decode_canonical(text: str) -> bytes:
    """Decode unpadded url-safe base64, accepting only the one spelling the encoder writes.

    The decoder alone skips unknown and non-ASCII characters and ignores the spare low bits of
    the last character, so several texts would open to the same ciphertext. Raises ValueError.
    """
    data = base64_decode(text)
    if base64_encode(data) != text.encode("ascii"):
        raise ValueError("not canonical base64")
    return data


_HEX = frozenset("0123456789abcdef")


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in _HEX for c in text)
