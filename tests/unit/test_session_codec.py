"""SessionCodec: round trips, tamper resistance, expiry, key rotation, encryption, bounds."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import random
import re
import string
import time
import zlib
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from proxy.session_codec import (
    FUTURE_SKEW_SECONDS,
    DecodeResult,
    InvalidSessionJSON,
    SessionCodec,
    SessionState,
    SessionTooLarge,
    normalize_session_json,
)
from proxy.session_keys import KeyRing

SECRET_1 = b"first-test-secret-0123456789-abcdefghijklmnop"
SECRET_2 = b"second-test-secret-0123456789-abcdefghijklmno"
COOKIE_SAFE = string.ascii_letters + string.digits + "._-"
COOKIE_VALUE = re.compile(r"[A-Za-z0-9._-]*")
T0 = 1_700_000_000.0
MAX_AGE = 3600

PROPERTY = settings(max_examples=60, deadline=None)


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_codec(secrets: list[bytes] | None = None, **options: Any) -> SessionCodec:
    options.setdefault("clock", FakeClock())
    options.setdefault("max_age", MAX_AGE)
    return SessionCodec(secrets or [SECRET_1], **options)


def chunks_of(codec: SessionCodec, payload: str) -> dict[int, str]:
    return {i: c.value for i, c in enumerate(codec.encode(payload).cookies)}


def random_session(seed: int, size: int) -> str:
    """Compact session JSON carrying ``size`` random bytes as base64: barely compressible."""
    rng = random.Random(seed)
    blob = base64.b64encode(rng.randbytes(size)).decode("ascii")
    return json.dumps({"user": seed, "blob": blob}, separators=(",", ":"))


def b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def decode_fresh(chunks: dict[int, str], **options: Any) -> DecodeResult:
    """Decode with a codec that has never seen the token, so it must really verify it."""
    return make_codec(**options).decode(chunks)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)
json_objects = st.dictionaries(st.text(max_size=12), json_values, min_size=1, max_size=10)
#: A multi-chunk session under SMALL_CHUNKS: (seed, random bytes).
multi_chunk_sessions = st.tuples(st.integers(0, 2**32), st.integers(600, 2500))
SMALL_CHUNKS: dict[str, Any] = {"chunk_size": 256, "max_chunks": 64}


# --- round trips --------------------------------------------------------------------------


@PROPERTY
@given(value=json_objects, encrypt=st.booleans(), compress=st.booleans())
def test_any_json_object_within_capacity_round_trips(
    value: dict[str, Any], encrypt: bool, compress: bool
) -> None:
    options = {**SMALL_CHUNKS, "encrypt": encrypt, "compress": compress}
    payload = normalize_session_json(json.dumps(value), max_bytes=1 << 20)
    assert payload is not None
    try:
        chunks = chunks_of(make_codec(**options), payload)
    except SessionTooLarge as exc:
        assert exc.size > exc.limit
        return
    result = decode_fresh(chunks, **options)
    assert result.state is SessionState.VALID
    assert result.payload == payload
    assert json.loads(result.payload) == json.loads(payload)
    assert result.chunk_count == len(chunks)


def test_session_of_eleven_or_more_chunks_round_trips() -> None:
    codec = make_codec(max_chunks=16)
    payload = random_session(seed=11, size=38_000)
    chunks = chunks_of(codec, payload)
    assert len(chunks) >= 11
    # In the order a cookie jar might list them by name: 0, 1, 10, 11, 2, ...
    by_name = dict(sorted(chunks.items(), key=lambda item: str(item[0])))
    result = decode_fresh(by_name, max_chunks=16)
    assert result.state is SessionState.VALID
    assert result.payload == payload


def test_valid_session_reports_issue_time_and_fresh_key() -> None:
    result = decode_fresh(chunks_of(make_codec(), '{"a":1}'))
    assert result.issued_at == int(T0)
    assert result.stale_key is False


@PROPERTY
@given(
    session=multi_chunk_sessions,
    chunk_size=st.integers(256, 4093),
    name=st.sampled_from(["session", "s", "a-much-longer-cookie-name"]),
    encrypt=st.booleans(),
)
def test_every_chunk_cookie_fits_in_chunk_size(
    session: tuple[int, int], chunk_size: int, name: str, encrypt: bool
) -> None:
    codec = make_codec(name=name, chunk_size=chunk_size, max_chunks=64, encrypt=encrypt)
    for cookie in codec.encode(random_session(*session)).cookies:
        assert len(f"{cookie.name}={cookie.value}") <= chunk_size


@PROPERTY
@given(session=multi_chunk_sessions, encrypt=st.booleans(), compress=st.booleans())
def test_chunk_values_use_only_cookie_safe_characters(
    session: tuple[int, int], encrypt: bool, compress: bool
) -> None:
    codec = make_codec(**SMALL_CHUNKS, encrypt=encrypt, compress=compress)
    for cookie in codec.encode(random_session(*session)).cookies:
        assert COOKIE_VALUE.fullmatch(cookie.value)


def test_chunk_names_are_cookie_name_dot_index() -> None:
    cookies = make_codec(**SMALL_CHUNKS).encode(random_session(1, 1500)).cookies
    assert [c.name for c in cookies] == [f"session.{i}" for i in range(len(cookies))]


@pytest.mark.parametrize("encrypt", [False, True])
def test_value_signed_under_one_cookie_name_does_not_verify_under_another(encrypt: bool) -> None:
    chunks = chunks_of(make_codec(name="a", encrypt=encrypt), '{"user":1}')
    result = decode_fresh(chunks, name="b", encrypt=encrypt)
    assert result.state is SessionState.INVALID


# --- tampering ----------------------------------------------------------------------------


@pytest.mark.parametrize("encrypt", [False, True])
def test_every_single_character_change_of_a_token_is_rejected(encrypt: bool) -> None:
    token = chunks_of(make_codec(encrypt=encrypt), '{"user":42,"role":"admin"}')[0]
    decoder = make_codec(encrypt=encrypt)
    for position, original in enumerate(token):
        for char in COOKIE_SAFE.replace(original, ""):
            tampered = token[:position] + char + token[position + 1 :]
            assert decoder.decode({0: tampered}).state is SessionState.INVALID, (position, char)


@PROPERTY
@given(session=multi_chunk_sessions, encrypt=st.booleans(), data=st.data())
def test_any_single_character_change_of_any_chunk_is_rejected(
    session: tuple[int, int], encrypt: bool, data: st.DataObject
) -> None:
    chunks = chunks_of(make_codec(**SMALL_CHUNKS, encrypt=encrypt), random_session(*session))
    index = data.draw(st.integers(0, len(chunks) - 1), label="chunk")
    value = chunks[index]
    position = data.draw(st.integers(0, len(value) - 1), label="position")
    char = data.draw(st.sampled_from(COOKIE_SAFE.replace(value[position], "")), label="char")
    chunks[index] = value[:position] + char + value[position + 1 :]
    assert decode_fresh(chunks, **SMALL_CHUNKS, encrypt=encrypt).state is SessionState.INVALID


@PROPERTY
@given(session=multi_chunk_sessions, data=st.data())
def test_dropping_any_chunk_is_rejected(session: tuple[int, int], data: st.DataObject) -> None:
    chunks = chunks_of(make_codec(**SMALL_CHUNKS), random_session(*session))
    assume(len(chunks) >= 2)
    del chunks[data.draw(st.integers(1, len(chunks) - 1))]
    assert decode_fresh(chunks, **SMALL_CHUNKS).state is SessionState.INVALID


def test_missing_chunk_zero_is_invalid_not_absent() -> None:
    chunks = chunks_of(make_codec(**SMALL_CHUNKS), random_session(1, 1500))
    del chunks[0]
    assert decode_fresh(chunks, **SMALL_CHUNKS).state is SessionState.INVALID


@PROPERTY
@given(session=multi_chunk_sessions, data=st.data())
def test_reordering_chunks_is_rejected(session: tuple[int, int], data: st.DataObject) -> None:
    chunks = chunks_of(make_codec(**SMALL_CHUNKS), random_session(*session))
    assume(len(chunks) >= 2)
    order = data.draw(st.permutations(range(len(chunks))))
    reordered = {i: chunks[j] for i, j in enumerate(order)}
    assume(reordered != chunks)
    assert decode_fresh(reordered, **SMALL_CHUNKS).state is SessionState.INVALID


@PROPERTY
@given(session=multi_chunk_sessions, data=st.data())
def test_copying_one_chunk_over_another_is_rejected(
    session: tuple[int, int], data: st.DataObject
) -> None:
    chunks = chunks_of(make_codec(**SMALL_CHUNKS), random_session(*session))
    assume(len(chunks) >= 2)
    source, target = data.draw(st.permutations(range(len(chunks))))[:2]
    chunks[target] = chunks[source]
    assert decode_fresh(chunks, **SMALL_CHUNKS).state is SessionState.INVALID


def _splice(a: dict[int, str], b: dict[int, str], from_b: list[bool]) -> dict[int, str] | None:
    """Chunk i from ``b`` where ``from_b[i]``, else from ``a``; None if that is just one of them."""
    spliced = {}
    for i in range(max(len(a), len(b))):
        preferred, other = (b, a) if from_b[i] else (a, b)
        spliced[i] = preferred[i] if i in preferred else other[i]
    head = b if from_b[0] else a
    if all(spliced[i] == head[i] for i in range(len(head))):
        return None  # the head's own chunks, plus stale extras: a genuine session
    return spliced


@PROPERTY
@given(seeds=st.lists(st.integers(0, 2**32), min_size=2, max_size=2, unique=True), data=st.data())
def test_splicing_chunks_of_two_same_size_sessions_is_rejected(
    seeds: list[int], data: st.DataObject
) -> None:
    codec = make_codec(**SMALL_CHUNKS)
    a, b = (chunks_of(codec, random_session(seed, 1500)) for seed in seeds)
    assume(len(a) == len(b))
    spliced = _splice(a, b, data.draw(st.lists(st.booleans(), min_size=len(a), max_size=len(a))))
    assume(spliced is not None)
    assert spliced is not None
    assert decode_fresh(spliced, **SMALL_CHUNKS).state is SessionState.INVALID


@PROPERTY
@given(a_session=multi_chunk_sessions, b_session=multi_chunk_sessions, data=st.data())
def test_splicing_chunks_of_two_different_size_sessions_is_rejected(
    a_session: tuple[int, int], b_session: tuple[int, int], data: st.DataObject
) -> None:
    codec = make_codec(**SMALL_CHUNKS)
    a = chunks_of(codec, random_session(*a_session))
    b = chunks_of(codec, random_session(*b_session))
    assume(len(a) != len(b))
    n = max(len(a), len(b))
    spliced = _splice(a, b, data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    assume(spliced is not None)
    assert spliced is not None
    assert decode_fresh(spliced, **SMALL_CHUNKS).state is SessionState.INVALID


@PROPERTY
@given(
    large=st.tuples(st.integers(0, 2**32), st.integers(2000, 3000)),
    small=st.tuples(st.integers(0, 2**32), st.integers(300, 1000)),
)
def test_stale_chunk_beyond_count_is_ignored(
    large: tuple[int, int], small: tuple[int, int]
) -> None:
    codec = make_codec(**SMALL_CHUNKS)
    jar = chunks_of(codec, random_session(*large))
    newer = chunks_of(codec, random_session(*small))
    assert len(newer) < len(jar)
    jar.update(newer)  # the browser still holds the earlier session's higher chunks
    result = decode_fresh(jar, **SMALL_CHUNKS)
    assert result.state is SessionState.VALID
    assert result.payload == random_session(*small)
    assert result.chunk_count == len(newer)


def test_emptied_chunk_zero_means_no_session() -> None:
    chunks = chunks_of(make_codec(**SMALL_CHUNKS), random_session(1, 1500))
    chunks[0] = ""
    assert decode_fresh(chunks, **SMALL_CHUNKS).state is SessionState.ABSENT


def test_no_chunks_means_no_session() -> None:
    assert decode_fresh({}).state is SessionState.ABSENT


# --- expiry -------------------------------------------------------------------------------


def test_session_is_valid_until_max_age() -> None:
    chunks = chunks_of(make_codec(), '{"a":1}')
    assert decode_fresh(chunks, clock=FakeClock(T0 + MAX_AGE)).state is SessionState.VALID


def test_session_older_than_max_age_is_expired() -> None:
    chunks = chunks_of(make_codec(), '{"a":1}')
    result = decode_fresh(chunks, clock=FakeClock(T0 + MAX_AGE + 1))
    assert result.state is SessionState.EXPIRED
    assert result.issued_at == int(T0)


def test_expired_session_carries_no_payload() -> None:
    chunks = chunks_of(make_codec(), '{"secret":"data"}')
    assert decode_fresh(chunks, clock=FakeClock(T0 + MAX_AGE + 1)).payload == "{}"


def test_timestamp_within_clock_skew_is_accepted() -> None:
    chunks = chunks_of(make_codec(clock=FakeClock(T0 + FUTURE_SKEW_SECONDS)), '{"a":1}')
    assert decode_fresh(chunks, clock=FakeClock(T0)).state is SessionState.VALID


def test_timestamp_from_the_future_is_invalid() -> None:
    chunks = chunks_of(make_codec(clock=FakeClock(T0 + FUTURE_SKEW_SECONDS + 1)), '{"a":1}')
    assert decode_fresh(chunks, clock=FakeClock(T0)).state is SessionState.INVALID


# --- key rotation -------------------------------------------------------------------------


def test_cookie_signed_with_older_secret_verifies_as_stale() -> None:
    chunks = chunks_of(make_codec([SECRET_1]), '{"a":1}')
    result = decode_fresh(chunks, secrets=[SECRET_2, SECRET_1])
    assert result.state is SessionState.VALID
    assert result.stale_key is True


def test_cookie_signed_with_removed_secret_is_invalid() -> None:
    chunks = chunks_of(make_codec([SECRET_1]), '{"a":1}')
    assert decode_fresh(chunks, secrets=[SECRET_2]).state is SessionState.INVALID


def test_newest_secret_signs() -> None:
    chunks = chunks_of(make_codec([SECRET_2, SECRET_1]), '{"a":1}')
    newest_only = decode_fresh(chunks, secrets=[SECRET_2])
    assert newest_only.state is SessionState.VALID
    assert newest_only.stale_key is False
    assert decode_fresh(chunks, secrets=[SECRET_1]).state is SessionState.INVALID


# --- encryption ---------------------------------------------------------------------------


def test_encrypted_session_round_trips() -> None:
    payload = random_session(3, 5000)
    result = decode_fresh(chunks_of(make_codec(encrypt=True), payload), encrypt=True)
    assert result.state is SessionState.VALID
    assert result.payload == payload


def test_encrypted_payload_is_not_readable_in_the_cookie() -> None:
    payload = '{"card":"4111-1111-1111-1111-plaintext-marker"}'
    marker = b"plaintext-marker"
    signed_token = "".join(chunks_of(make_codec(compress=False), payload).values())
    token = "".join(chunks_of(make_codec(encrypt=True, compress=False), payload).values())
    assert marker in b64decode(signed_token.split(".")[5])  # the control: signing hides nothing
    assert marker not in b64decode(token.split(".")[5])
    assert "plaintext" not in token


def test_tampered_encrypted_session_is_rejected() -> None:
    token = chunks_of(make_codec(encrypt=True), '{"role":"user"}')[0]
    flipped = "A" if token[40] != "A" else "B"
    tampered = token[:40] + flipped + token[41:]
    assert decode_fresh({0: tampered}, encrypt=True).state is SessionState.INVALID


def test_encrypted_cookie_from_older_secret_verifies_as_stale() -> None:
    chunks = chunks_of(make_codec([SECRET_1], encrypt=True), '{"a":1}')
    result = decode_fresh(chunks, secrets=[SECRET_2, SECRET_1], encrypt=True)
    assert result.state is SessionState.VALID
    assert result.stale_key is True


def test_encrypted_cookie_from_removed_secret_is_invalid() -> None:
    chunks = chunks_of(make_codec([SECRET_1], encrypt=True), '{"a":1}')
    assert decode_fresh(chunks, secrets=[SECRET_2], encrypt=True).state is SessionState.INVALID


def test_signed_cookie_read_in_encrypted_mode_is_valid_but_stale() -> None:
    chunks = chunks_of(make_codec(encrypt=False), '{"a":1}')
    result = decode_fresh(chunks, encrypt=True)
    assert result.state is SessionState.VALID
    assert result.stale_key is True


# --- hostile input ------------------------------------------------------------------------


def forge_signed(payload: bytes, flag: str, secret: bytes = SECRET_1) -> dict[int, str]:
    """A correctly signed token around any body, built from the codec's own primitives."""
    key = KeyRing([secret]).newest
    body = base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")
    count = max(1, math.ceil(len(body) / 4000))
    signed = f"S1.{count}.{key.kid}.{int(T0):x}.{flag}.{body}"
    message = b"session\x00" + signed.encode("ascii")
    mac = hmac.digest(key.sign_key, message, hashlib.sha256)
    token = signed + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")
    size = math.ceil(len(token) / count)
    return {i: token[i * size : (i + 1) * size] for i in range(count)}


def test_forged_tokens_are_built_like_the_codec_builds_them() -> None:
    assert decode_fresh(forge_signed(b'{"a":1}', "-")).payload == '{"a":1}'
    assert decode_fresh(forge_signed(zlib.compress(b'{"a":1}'), "z")).payload == '{"a":1}'


@settings(max_examples=300, deadline=None)
@given(chunks=st.dictionaries(st.integers(-5, 300), st.text(max_size=200), max_size=8))
def test_garbage_chunks_are_never_valid_and_never_raise(chunks: dict[int, str]) -> None:
    assert decode_fresh(chunks).state is not SessionState.VALID


@settings(max_examples=300, deadline=None)
@given(
    head=st.sampled_from(["S1.1.", "E1.1.", "S1.2.", "S1.001.", "S1.256.", "S1.999."]),
    rest=st.text(alphabet=COOKIE_SAFE, max_size=200),
)
def test_garbage_behind_a_plausible_header_is_invalid(head: str, rest: str) -> None:
    assert decode_fresh({0: head + rest, 1: rest}).state is SessionState.INVALID


def test_signed_body_that_is_not_base64_is_invalid() -> None:
    chunks = forge_signed(b"", "-")
    kid_and_ts = ".".join(chunks[0].split(".")[2:4])
    bad = f"S1.1.{kid_and_ts}.-.A"  # one base64 character cannot encode a byte
    key = KeyRing([SECRET_1]).newest
    mac = hmac.digest(key.sign_key, b"session\x00" + bad.encode(), hashlib.sha256)
    token = bad + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    result = decode_fresh({0: token})
    assert result.state is SessionState.INVALID
    assert result.reason == "malformed encoding"


def test_signed_body_that_is_not_zlib_is_invalid() -> None:
    assert decode_fresh(forge_signed(b"certainly not zlib", "z")).state is SessionState.INVALID


def test_signed_body_with_truncated_zlib_is_invalid() -> None:
    truncated = zlib.compress(b'{"a":"' + b"x" * 500 + b'"}')[:-6]
    assert decode_fresh(forge_signed(truncated, "z")).state is SessionState.INVALID


def test_signed_payload_that_is_not_ascii_is_invalid() -> None:
    assert decode_fresh(forge_signed('{"a":"é"}'.encode(), "-")).state is SessionState.INVALID


def test_decompression_bomb_is_rejected_quickly() -> None:
    packer = zlib.compressobj(9)
    zeros = bytes(1 << 20)
    bomb = b"".join(packer.compress(zeros) for _ in range(100)) + packer.flush()  # 100 MB
    chunks = forge_signed(bomb, "z")
    started = time.perf_counter()
    result = decode_fresh(chunks)
    elapsed = time.perf_counter() - started
    assert result.state is SessionState.INVALID
    assert result.reason == "payload too large or corrupt"
    assert elapsed < 1.0


def test_payload_one_byte_over_max_json_bytes_is_rejected() -> None:
    chunks = forge_signed(zlib.compress(b'{"a":"' + b"x" * 1000 + b'"}'), "z")
    assert decode_fresh(chunks, max_json_bytes=1007).state is SessionState.INVALID
    assert decode_fresh(chunks, max_json_bytes=1008).state is SessionState.VALID


def test_megabyte_chunk_is_invalid_without_error() -> None:
    for value in ("A" * (1 << 20), "S1.2." + "A" * (1 << 20), "S1.1.x.1.z." + "." * (1 << 20)):
        assert decode_fresh({0: value, 1: value}).state is SessionState.INVALID


# --- overflow -----------------------------------------------------------------------------


def test_session_beyond_max_chunks_raises_too_large_with_size_and_limit() -> None:
    codec = make_codec(max_chunks=2)
    with pytest.raises(SessionTooLarge) as caught:
        codec.encode(random_session(5, 20_000))
    assert caught.value.limit == codec.capacity
    assert caught.value.size > caught.value.limit


def test_session_exactly_filling_max_chunks_is_encoded() -> None:
    codec = make_codec(max_chunks=2, compress=False)
    # Grow the payload until the next byte would overflow: the last fitting size must encode.
    size = 4000
    while True:
        try:
            codec.encode(json.dumps({"p": "x" * (size + 1)}))
        except SessionTooLarge:
            break
        size += 1
    assert len(codec.encode(json.dumps({"p": "x" * size})).cookies) == 2


# --- normalize_session_json ---------------------------------------------------------------


def test_session_json_is_made_compact_ascii() -> None:
    raw = '{ "name" : "Zoë",\n  "tags": [1, 2] }'
    assert normalize_session_json(raw, 1000) == '{"name":"Zo\\u00eb","tags":[1,2]}'


def test_session_json_may_be_bytes() -> None:
    assert normalize_session_json(b'{"a": 1}', 1000) == '{"a":1}'


@pytest.mark.parametrize("raw", ["{}", "null", " { } "])
def test_empty_or_null_session_json_means_clear(raw: str) -> None:
    assert normalize_session_json(raw, 1000) is None


@pytest.mark.parametrize("raw", ["[1, 2]", '"text"', "42", "true"])
def test_session_json_that_is_not_an_object_is_rejected(raw: str) -> None:
    with pytest.raises(InvalidSessionJSON):
        normalize_session_json(raw, 1000)


@pytest.mark.parametrize("raw", ['{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}'])
def test_session_json_with_nan_or_infinity_is_rejected(raw: str) -> None:
    with pytest.raises(InvalidSessionJSON):
        normalize_session_json(raw, 1000)


@pytest.mark.parametrize("raw", ["{", "{'a': 1}", b'{"a": "\xff"}', "[" * 100_000])
def test_session_text_that_is_not_json_is_rejected(raw: str | bytes) -> None:
    with pytest.raises(InvalidSessionJSON):
        normalize_session_json(raw, 1 << 20)


def test_session_json_over_max_bytes_is_too_large() -> None:
    with pytest.raises(SessionTooLarge) as caught:
        normalize_session_json(json.dumps({"a": "x" * 100}), 50)
    assert caught.value.limit == 50
    assert caught.value.size == len('{"a":""}') + 100


def test_session_json_limit_counts_compact_form_not_whitespace() -> None:
    padded = '{"a":' + " " * 60 + '"x"}'
    assert normalize_session_json(padded, 10) == '{"a":"x"}'


def test_session_text_over_eight_times_max_bytes_is_too_large_unparsed() -> None:
    with pytest.raises(SessionTooLarge):
        normalize_session_json("{" + " " * 80 + "}", 10)


# --- verified-token cache -----------------------------------------------------------------


def test_cache_hit_returns_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    chunks = chunks_of(make_codec(), random_session(1, 3000))
    decoder = make_codec()
    first = decoder.decode(chunks)

    def no_verify(*args: object) -> DecodeResult:
        raise AssertionError("a repeated token must be served from the cache")

    monkeypatch.setattr(decoder, "_verify", no_verify)
    assert decoder.decode(chunks) == first


def test_tampered_token_with_the_same_tail_does_not_hit_the_cache() -> None:
    codec = make_codec(**SMALL_CHUNKS)
    chunks = chunks_of(codec, random_session(2, 1500))  # encode() caches the token
    assert codec.decode(chunks).state is SessionState.VALID
    body_char = chunks[1][10]
    chunks[1] = chunks[1][:10] + ("A" if body_char != "A" else "B") + chunks[1][11:]
    assert codec.decode(chunks).state is SessionState.INVALID


def test_expiry_is_checked_on_a_cache_hit() -> None:
    clock = FakeClock()
    codec = make_codec(clock=clock)
    chunks = chunks_of(codec, '{"a":1}')
    assert codec.decode(chunks).state is SessionState.VALID
    clock.now += MAX_AGE + 1
    assert codec.decode(chunks).state is SessionState.EXPIRED


def test_cache_holds_at_most_cache_entries_tokens() -> None:
    codec = make_codec(cache_entries=2)
    for seed in range(5):
        codec.decode(chunks_of(make_codec(), random_session(seed, 100)))
    assert len(codec._cache) == 2


def test_cache_can_be_disabled() -> None:
    codec = make_codec(cache_entries=0)
    chunks = chunks_of(codec, '{"a":1}')
    assert codec.decode(chunks).state is SessionState.VALID
    assert len(codec._cache) == 0


def test_re_encoding_with_issued_at_keeps_the_session_age() -> None:
    codec = make_codec([SECRET_2, SECRET_1], clock=FakeClock(T0 + 100))
    cookies = codec.encode('{"a":1}', issued_at=int(T0)).cookies
    result = decode_fresh({i: c.value for i, c in enumerate(cookies)}, secrets=[SECRET_2])
    assert result.state is SessionState.VALID
    assert result.issued_at == int(T0)


def test_valid_result_reports_the_cookie_bytes_of_the_session() -> None:
    encoded = make_codec(**SMALL_CHUNKS).encode(random_session(4, 1500))
    chunks = {i: c.value for i, c in enumerate(encoded.cookies)}
    assert decode_fresh(chunks, **SMALL_CHUNKS).size == encoded.size


@pytest.mark.parametrize(
    "raw",
    [
        '{"a": 1e400}',  # Python would read Infinity
        '{"a": -1E+999}',
        '{"a": "\\ud800"}',  # a lone high surrogate
        '{"a": "\\udc00x"}',  # a lone low surrogate
        '{"\\ud83d": 1}',  # in a key
        '{"a": ["\\ude00\\ud83d"]}',  # a pair in the wrong order
        '{"a": "caf\udce9"}',  # a raw Latin-1 byte, as surrogateescape gives it
        b'{"a": "caf\xe9"}',
    ],
)
def test_session_json_other_languages_cannot_read_back_is_rejected(raw: str | bytes) -> None:
    with pytest.raises(InvalidSessionJSON):
        normalize_session_json(raw, 1 << 20)


def test_big_integers_and_escaped_pairs_pass_unchanged() -> None:
    big = "1" + "0" * 40
    raw = '{"n": ' + big + ', "e": "\\ud83d\\ude00", "u": "caf\u00e9"}'
    assert normalize_session_json(raw, 1000) == (
        '{"n":' + big + ',"e":"\\ud83d\\ude00","u":"caf\\u00e9"}'
    )
