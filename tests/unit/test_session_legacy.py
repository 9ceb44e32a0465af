"""LegacyReader against cookies made by real Flask and by the chunked snippet's algorithm."""

from __future__ import annotations

import hashlib
import json
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode
from markupsafe import Markup

from proxy.config_migrate import MAX_LEGACY_COOKIE_BYTES, MigrateConfig
from proxy.config_secrets import Secret
from proxy.session_codec import SessionState
from proxy.session_legacy import (
    LegacyReader,
    LegacyTagError,
    split_legacy_cookies,
    untag_flask_json,
)

KEY = "current-flask-secret"
OLD_KEY = "previous-flask-secret"
MAX_JSON = 131_072


def flask_serializer(secret_key: str = KEY, fallbacks: tuple[str, ...] = ()) -> Any:
    app = Flask(__name__)
    app.secret_key = secret_key
    app.config["SECRET_KEY_FALLBACKS"] = list(fallbacks)
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    assert serializer is not None
    return serializer


def flask_cookie(session: dict[str, Any], secret_key: str = KEY) -> str:
    value: str = flask_serializer(secret_key).dumps(session)
    return value


def reader(
    fmt: str = "flask",
    keys: tuple[str, ...] = (KEY,),
    max_age: int = 31 * 86400,
    clock: Any = time.time,
    max_json: int = MAX_JSON,
) -> LegacyReader:
    config = MigrateConfig(
        format=fmt,  # type: ignore[arg-type]
        secret_keys=tuple(Secret(k.encode(), "test") for k in keys),
        max_age=max_age,
    )
    return LegacyReader(config, max_json, clock=clock)


def read_flask(value: str, **kwargs: Any) -> Any:
    return reader(**kwargs).read({"session": value})


def snippet_cookies(value: str, count: int = 10) -> dict[str, str]:
    """The snippet's split: the signed string cut into ``count`` pieces, session:0..9."""
    size = -(-len(value) // count)
    return {f"session:{i}": value[i * size : (i + 1) * size] for i in range(count)}


# --- plain Flask -------------------------------------------------------------------------


def test_flask_session_is_valid_plain_json() -> None:
    result = read_flask(flask_cookie({"user": 42, "name": "Zoë"}))
    assert result.state is SessionState.VALID
    assert result.payload == '{"user":42,"name":"Zo\\u00eb"}'
    assert result.carried == ("session",)
    assert result.issued_at is not None and abs(result.issued_at - time.time()) < 60


def test_flask_compressed_session_is_valid() -> None:
    session = {"cart": [f"item-{i % 5}" for i in range(400)]}
    value = flask_cookie(session)
    assert value.startswith(".")  # Flask chose the zlib form
    result = read_flask(value)
    assert result.state is SessionState.VALID
    assert json.loads(result.payload) == session


def test_every_flask_tag_becomes_its_plain_json_rule() -> None:
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    moment = datetime(2026, 12, 3, 8, 47, 38, tzinfo=UTC)
    session = {
        "pair": (1, "two"),
        "raw": b"\x00\xff binary",
        "html": Markup("<b>bold</b>"),
        "id": ident,
        "when": moment,
        "tagged_key": {" t": "a dict whose key looks like a tag"},
        "_flashes": [("message", "Saved")],
        "nested": {"deep": [(b"\x01",), {"u": ident}]},
    }
    result = read_flask(flask_cookie(session))
    assert result.state is SessionState.VALID
    assert json.loads(result.payload) == {
        "pair": [1, "two"],
        "raw": "AP8gYmluYXJ5",
        "html": "<b>bold</b>",
        "id": "12345678-1234-5678-1234-567812345678",
        "when": "2026-12-03T08:47:38Z",
        "tagged_key": {" t": "a dict whose key looks like a tag"},
        "_flashes": [["message", "Saved"]],
        "nested": {"deep": [["AQ=="], {"u": "12345678-1234-5678-1234-567812345678"}]},
    }


def test_permanent_flag_passes_through_unchanged() -> None:
    result = read_flask(flask_cookie({"_permanent": True, "a": 1}))
    assert json.loads(result.payload) == {"_permanent": True, "a": 1}


def test_fallback_key_in_the_tail_still_verifies() -> None:
    # SECRET_KEY_FALLBACKS: the cookie was signed before the key was rotated.
    value = flask_cookie({"a": 1}, secret_key=OLD_KEY)
    assert flask_serializer(KEY, (OLD_KEY,)).loads(value) == {"a": 1}  # Flask agrees
    assert read_flask(value, keys=(KEY, OLD_KEY)).state is SessionState.VALID


def test_wrong_key_is_invalid() -> None:
    result = read_flask(flask_cookie({"a": 1}, secret_key="someone-else"))
    assert result.state is SessionState.INVALID
    assert result.reason == "bad signature"
    assert result.carried == ("session",)


def test_tampered_payload_is_invalid() -> None:
    value = flask_cookie({"admin": False})
    payload, rest = value.split(".", 1)
    forged = base64_encode(b'{"admin":true}').decode() + "." + rest
    assert forged != value and payload
    assert read_flask(forged).reason == "bad signature"


def test_tampered_signature_is_invalid() -> None:
    value = flask_cookie({"a": 1})
    # A middle character of the signature: the last one of an unpadded base64 HMAC-SHA1 holds
    # spare bits, so changing it may spell the same bytes (Flask accepts that spelling too).
    at = len(value) - 10
    flipped = value[:at] + ("A" if value[at] != "A" else "B") + value[at + 1 :]
    assert read_flask(flipped).state is SessionState.INVALID


def test_expired_session_is_expired_not_valid() -> None:
    value = flask_cookie({"a": 1})
    later = time.time() + 31 * 86400 + 60
    result = read_flask(value, clock=lambda: later)
    assert result.state is SessionState.EXPIRED
    assert result.payload == "{}"
    assert result.carried == ("session",)


def test_max_age_is_the_configured_lifetime() -> None:
    value = flask_cookie({"a": 1})
    soon = time.time() + 3600
    assert read_flask(value, max_age=7200, clock=lambda: soon).state is SessionState.VALID
    assert read_flask(value, max_age=1800, clock=lambda: soon).state is SessionState.EXPIRED


def test_timestamp_from_the_future_is_invalid() -> None:
    value = flask_cookie({"a": 1})
    past = time.time() - 3600
    assert read_flask(value, clock=lambda: past).reason == "timestamp in the future"


def test_signed_but_malformed_base64_is_invalid() -> None:
    signed = URLSafeTimedSerializer(
        KEY, salt="cookie-session", signer_kwargs={"key_derivation": "hmac"}
    ).make_signer("cookie-session")
    value = signed.sign("!!not*base64!!").decode()
    assert read_flask(value).state is SessionState.INVALID


def test_garbage_cookie_is_invalid_not_an_exception() -> None:
    for value in ("nodots", "a.b.c", "....", "é.é.é", "\x00", "\udce9.a.b"):
        assert read_flask(value).state is SessionState.INVALID


def sign_raw(payload_b64: str, key: str = KEY) -> str:
    """A validly signed Flask cookie around any payload text (a forger who holds the key)."""
    serializer = flask_serializer(key)
    signer = serializer.make_signer(serializer.salt)
    value: str = signer.sign(payload_b64).decode()
    return value


def test_decompression_bomb_is_bounded() -> None:
    bomb = zlib.compress(b'{"a":"' + b"x" * 2_000_000 + b'"}', 9)
    value = sign_raw("." + base64_encode(bomb).decode())
    assert len(value) < MAX_LEGACY_COOKIE_BYTES
    tracemalloc.start()
    try:
        result = read_flask(value, max_json=4096)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # the 2 MB it would inflate to is never allocated
    assert result.state is SessionState.INVALID
    assert result.reason == "payload too large or corrupt"


def test_corrupt_zlib_is_invalid() -> None:
    value = sign_raw("." + base64_encode(b"not zlib at all").decode())
    assert read_flask(value).reason == "payload too large or corrupt"


def test_unknown_tag_is_invalid_with_reason() -> None:
    value = sign_raw(base64_encode(b'{"s":{" set":[1,2]}}').decode())
    result = read_flask(value)
    assert result.state is SessionState.INVALID
    assert result.reason == "unknown tag"


def test_malformed_known_tag_is_invalid() -> None:
    value = sign_raw(base64_encode(b'{"id":{" u":"not-a-uuid"}}').decode())
    assert read_flask(value).reason == "malformed tag"


def test_non_object_top_level_is_invalid() -> None:
    for payload in (b"[1,2]", b'"text"', b'{" t":[1]}'):
        value = sign_raw(base64_encode(payload).decode())
        assert read_flask(value).reason == "payload not a JSON object"


def test_non_json_payload_is_invalid() -> None:
    value = sign_raw(base64_encode(b"{not json").decode())
    assert read_flask(value).reason == "payload not JSON"


def test_oversized_cookie_is_invalid_without_verifying() -> None:
    value = "A" * (MAX_LEGACY_COOKIE_BYTES + 1)
    assert read_flask(value).reason == "legacy cookie too large"


def test_session_larger_than_max_json_is_invalid() -> None:
    value = flask_cookie({"blob": "y" * 3000})
    assert read_flask(value, max_json=1000).reason == "payload too large or corrupt"


def test_empty_flask_session_is_absent_but_carried() -> None:
    result = read_flask(flask_cookie({}))
    assert result.state is SessionState.ABSENT
    assert result.carried == ("session",)


def test_emptied_legacy_cookie_is_absent_but_carried() -> None:
    result = read_flask("")
    assert result.state is SessionState.ABSENT
    assert result.carried == ("session",)


def test_no_legacy_cookie_is_absent() -> None:
    result = reader().read({"other": "x", "session.0": "S1..."})
    assert result.state is SessionState.ABSENT
    assert result.carried == ()


def test_conflicting_legacy_cookie_is_invalid_and_carried() -> None:
    result = reader().read({}, conflicts={"session"})
    assert result.state is SessionState.INVALID
    assert result.carried == ("session",)


def test_reason_never_holds_cookie_content() -> None:
    secret_marker = "MARKER-IN-COOKIE"
    value = sign_raw(base64_encode(b'{"' + secret_marker.encode() + b'":{" zz":1}}').decode())
    result = read_flask(value)
    assert secret_marker not in result.reason and secret_marker not in result.payload


def test_configured_digest_and_salt_are_used() -> None:
    serializer = URLSafeTimedSerializer(
        KEY,
        salt="my-salt",
        signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256},
    )
    value = serializer.dumps({"a": 1})
    config = MigrateConfig(
        format="flask",
        secret_keys=(Secret(KEY.encode(), "test"),),
        salt="my-salt",
        digest="sha256",
    )
    assert LegacyReader(config, MAX_JSON).read({"session": value}).state is SessionState.VALID
    assert read_flask(value).reason == "bad signature"  # sha1 and cookie-session do not verify


# --- the chunked snippet -------------------------------------------------------------------


def test_snippet_chunks_join_in_name_order() -> None:
    session = {"cart": list(range(300)), "user": "ann"}
    cookies = snippet_cookies(flask_cookie(session))
    shuffled: Mapping[str, str] = dict(reversed(list(cookies.items())))
    result = reader("flask-chunked").read(shuffled)
    assert result.state is SessionState.VALID
    assert json.loads(result.payload) == session
    assert result.carried == tuple(f"session:{i}" for i in range(10))


def test_snippet_with_fewer_pieces_is_valid() -> None:
    cookies = snippet_cookies(flask_cookie({"a": 1}), count=3)
    assert reader("flask-chunked").read(cookies).state is SessionState.VALID


def test_snippet_missing_piece_is_invalid() -> None:
    cookies = snippet_cookies(flask_cookie({"a": "b" * 200}))
    del cookies["session:4"]
    result = reader("flask-chunked").read(cookies)
    assert result.state is SessionState.INVALID
    assert len(result.carried) == 9


def test_snippet_ignores_plain_session_cookie() -> None:
    result = reader("flask-chunked").read({"session": flask_cookie({"a": 1})})
    assert result.state is SessionState.ABSENT


def test_snippet_oversized_piece_is_invalid() -> None:
    cookies = snippet_cookies(flask_cookie({"a": 1}))
    cookies["session:3"] = "A" * (MAX_LEGACY_COOKIE_BYTES + 1)
    assert reader("flask-chunked").read(cookies).reason == "legacy cookie too large"


# --- the cookie split ---------------------------------------------------------------------


def test_split_picks_legacy_cookies_and_keeps_the_rest() -> None:
    split = split_legacy_cookies('theme=dark; session="abc"; lang=en', ("session",))
    assert split.values == {"session": "abc"}
    assert split.others == "theme=dark; lang=en"


def test_split_drops_disguised_legacy_spellings() -> None:
    header = 'Session=x; "session"=y; a=1, session=z; SESSION:0=w; keep=1'
    split = split_legacy_cookies(header, ("session", "session:0"))
    assert split.values == {}
    assert split.others == "keep=1"


def test_split_passes_thousands_of_tiny_pairs_in_order_beside_disguised_ones() -> None:
    tiny = "; ".join(["x", "a=1", "sess=1"] * 5000)
    header = f"{tiny}; session=v; a=1, session=w; {tiny}; SESSION=u"
    split = split_legacy_cookies(header, ("session",))
    assert split.values == {"session": "v"}
    assert split.others == f"{tiny}; {tiny}"


def test_split_same_name_twice_differently_is_a_conflict() -> None:
    split = split_legacy_cookies("session=a; session=b; session=c", ("session",))
    assert split.values == {}
    assert split.conflicts == {"session"}
    assert split.others is None


def test_split_leaves_a_header_without_legacy_cookies_alone() -> None:
    assert split_legacy_cookies("a=1; b=2", ("session",)).others == "a=1; b=2"
    assert split_legacy_cookies(None, ("session",)).others is None


def test_split_does_not_take_a_longer_name() -> None:
    split = split_legacy_cookies("sessionid=1; session:10=2", ("session", "session:1"))
    assert split.values == {}
    assert split.others == "sessionid=1; session:10=2"


# --- the tag rules alone --------------------------------------------------------------------


def test_tagged_dict_restores_its_key() -> None:
    assert untag_flask_json({" di": {" t__": [1]}}) == {" t": [1]}


def test_datetime_tag_is_iso_8601_utc() -> None:
    assert untag_flask_json({" d": "Thu, 03 Dec 2026 08:47:38 GMT"}) == "2026-12-03T08:47:38Z"


def test_bytes_tag_rejects_non_base64() -> None:
    with pytest.raises(LegacyTagError, match="malformed tag"):
        untag_flask_json({" b": "***"})


# --- a real Flask app's Set-Cookie, end to end ---------------------------------------------


def test_cookie_set_by_a_real_flask_app_migrates() -> None:
    from flask import session

    app = Flask(__name__)
    app.secret_key = KEY

    @app.route("/login")
    def login() -> str:
        session.permanent = True
        session["user"] = "ann"
        session["since"] = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
        return "ok"

    response = app.test_client().get("/login")
    set_cookie = response.headers["Set-Cookie"]
    pair = set_cookie.split(";", 1)[0]
    split = split_legacy_cookies(f"theme=dark; {pair}", ("session",))
    assert split.others == "theme=dark"
    result = reader().read(split.values, split.conflicts)
    assert result.state is SessionState.VALID
    assert json.loads(result.payload) == {
        "_permanent": True,
        "user": "ann",
        "since": "2025-01-02T03:04:05Z",
    }
