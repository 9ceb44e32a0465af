"""SessionExchange: chunk cookies in, the backend's set-header out as Set-Cookie or a 502."""

from __future__ import annotations

import base64
import json
import os

from flask import Flask
from flask.sessions import SecureCookieSessionInterface

from proxy.config import Config, parse_config
from proxy.proxy_state import codec_from_config
from proxy.session_codec import SessionCodec, SessionState
from proxy.session_exchange import Change, Inbound, SessionExchange

NEW_SECRET = "exchange-new-secret-0123456789-abcdefghijkl"
OLD_SECRET = "exchange-old-secret-0123456789-abcdefghijkl"
T0 = 1_700_000_000.0
USER = '{"user":1}'


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_config(
    secrets: tuple[str, ...] = (NEW_SECRET,),
    cookie: str = "{chunk_size: 256, max_chunks: 12}",
    session: str = "{compress: false}",
    migrate: str = "",
) -> Config:
    env = {f"SECRET_{i}": s for i, s in enumerate(secrets)}
    text = "secrets:\n" + "".join(f"  - ${{SECRET_{i}}}\n" for i in range(len(secrets)))
    text += f"cookie: {cookie}\nsession: {session}\n"
    if migrate:
        text += f"migrate: {migrate}\n"
    text += "upstreams:\n  - url: http://127.0.0.1:8001\n"
    return parse_config(text, env=env)


def make_codec(config: Config, clock: FakeClock) -> SessionCodec:
    codec = codec_from_config(config)
    codec.clock = clock
    return codec


def make_exchange(config: Config | None = None, clock: FakeClock | None = None) -> SessionExchange:
    config = config or make_config()
    return SessionExchange(config, make_codec(config, clock or FakeClock()))


def cookie_header(exchange: SessionExchange, payload: str) -> str:
    """The Cookie header a browser sends back after ``payload`` was set."""
    encoded = exchange.codec.encode(payload)
    return "; ".join(f"{c.name}={c.value}" for c in encoded.cookies)


def big_session(nbytes: int) -> str:
    """Session JSON that needs several 256-byte chunks."""
    blob = base64.b64encode(os.urandom(nbytes)).decode("ascii")
    return json.dumps({"blob": blob}, separators=(",", ":"))


def set_cookie_names(set_cookies: tuple[str, ...]) -> list[str]:
    return [c.split("=", 1)[0] for c in set_cookies]


def live(set_cookies: tuple[str, ...]) -> list[str]:
    return [c.split("=", 1)[0] for c in set_cookies if "Max-Age=0" not in c]


def expired(set_cookies: tuple[str, ...]) -> list[str]:
    return [c.split("=", 1)[0] for c in set_cookies if "Max-Age=0" in c]


def reread(exchange: SessionExchange, set_cookies: tuple[str, ...]) -> Inbound:
    """What the next request carries after the client stored ``set_cookies``."""
    pairs = [c.split(";", 1)[0] for c in set_cookies if "Max-Age=0" not in c]
    return exchange.inbound("; ".join(pairs))


# --- inbound ----------------------------------------------------------------------------------


def test_request_without_cookies_is_absent() -> None:
    inbound = make_exchange().inbound(None)
    assert inbound.state is SessionState.ABSENT
    assert inbound.carried_indexes == set()


def test_request_with_a_session_is_valid_with_its_payload() -> None:
    exchange = make_exchange()
    inbound = exchange.inbound("other=1; " + cookie_header(exchange, USER))
    assert inbound.state is SessionState.VALID
    assert inbound.payload == USER
    assert inbound.issued_at == int(T0)


def test_carried_indexes_include_conflicting_duplicates() -> None:
    inbound = make_exchange().inbound("session.0=a; session.0=b; session.1=c")
    assert inbound.carried_indexes == {0, 1}


# --- no set-header ----------------------------------------------------------------------------


def test_without_set_header_a_valid_session_is_unchanged() -> None:
    exchange = make_exchange()
    inbound = exchange.inbound(cookie_header(exchange, USER))
    outbound = exchange.outbound(inbound, [], T0 + 10)
    assert outbound.change is Change.NONE
    assert outbound.set_cookies == ()


def test_without_set_header_an_absent_session_stays_absent() -> None:
    exchange = make_exchange()
    outbound = exchange.outbound(exchange.inbound(None), [], T0)
    assert outbound.change is Change.NONE
    assert outbound.set_cookies == ()


def test_invalid_cookies_are_never_expired_without_a_set_header() -> None:
    exchange = make_exchange()
    inbound = exchange.inbound("session.0=garbage; session.1=more; session.1=conflict")
    assert inbound.state is SessionState.INVALID
    outbound = exchange.outbound(inbound, [], T0)
    assert outbound.change is Change.NONE
    assert outbound.set_cookies == ()


# --- set --------------------------------------------------------------------------------------


def test_set_writes_live_cookies_that_decode_to_the_new_session() -> None:
    exchange = make_exchange()
    outbound = exchange.outbound(exchange.inbound(None), ['{ "user" : 2 }'], T0)
    assert outbound.change is Change.SET
    assert live(outbound.set_cookies) == ["session.0"]
    assert reread(exchange, outbound.set_cookies).payload == '{"user":2}'


def test_set_reports_size_and_chunks() -> None:
    exchange = make_exchange()
    outbound = exchange.outbound(exchange.inbound(None), [big_session(600)], T0)
    assert outbound.chunks == len(outbound.set_cookies) > 1
    assert outbound.size > 600


def test_set_expires_carried_chunks_beyond_the_new_count() -> None:
    exchange = make_exchange()
    inbound = exchange.inbound(cookie_header(exchange, big_session(600)))
    carried = inbound.chunk_count
    assert carried >= 3
    outbound = exchange.outbound(inbound, [USER], T0)
    assert live(outbound.set_cookies) == ["session.0"]
    assert expired(outbound.set_cookies) == [f"session.{i}" for i in range(1, carried)]


def test_set_does_not_expire_chunks_it_rewrites() -> None:
    exchange = make_exchange()
    inbound = exchange.inbound(cookie_header(exchange, USER))
    outbound = exchange.outbound(inbound, [big_session(600)], T0)
    assert expired(outbound.set_cookies) == []
    assert set_cookie_names(outbound.set_cookies) == [
        f"session.{i}" for i in range(outbound.chunks)
    ]


def test_set_expires_stray_chunks_of_an_invalid_session() -> None:
    exchange = make_exchange()
    inbound = exchange.inbound("session.0=garbage; session.5=stray")
    outbound = exchange.outbound(inbound, [USER], T0)
    assert live(outbound.set_cookies) == ["session.0"]
    assert expired(outbound.set_cookies) == ["session.5"]


# --- clear ------------------------------------------------------------------------------------


def test_empty_object_expires_every_carried_chunk() -> None:
    exchange = make_exchange()
    inbound = exchange.inbound(cookie_header(exchange, big_session(600)))
    outbound = exchange.outbound(inbound, ["{}"], T0)
    assert outbound.change is Change.CLEARED
    assert expired(outbound.set_cookies) == [f"session.{i}" for i in range(inbound.chunk_count)]
    assert live(outbound.set_cookies) == []


def test_null_expires_every_carried_chunk() -> None:
    exchange = make_exchange()
    inbound = exchange.inbound(cookie_header(exchange, USER))
    outbound = exchange.outbound(inbound, ["null"], T0)
    assert outbound.change is Change.CLEARED
    assert expired(outbound.set_cookies) == ["session.0"]


def test_clear_expires_conflicting_duplicates_too() -> None:
    exchange = make_exchange()
    inbound = exchange.inbound("session.0=a; session.0=b; session.2=c")
    outbound = exchange.outbound(inbound, ["{}"], T0)
    assert expired(outbound.set_cookies) == ["session.0", "session.2"]


def test_clear_without_a_session_writes_nothing() -> None:
    exchange = make_exchange()
    outbound = exchange.outbound(exchange.inbound(None), ["null"], T0)
    assert outbound.change is Change.CLEARED
    assert outbound.set_cookies == ()


# --- refused set-headers ----------------------------------------------------------------------


def test_set_header_sent_twice_is_refused_with_502() -> None:
    exchange = make_exchange()
    inbound = exchange.inbound(cookie_header(exchange, USER))
    outbound = exchange.outbound(inbound, [USER, USER], T0)
    assert outbound.change is Change.INVALID_HEADER
    assert outbound.error_status == 502
    assert outbound.error_body == {"error": "invalid_session_header"}
    assert outbound.set_cookies == ()


def test_set_header_that_is_not_json_is_refused_with_502() -> None:
    exchange = make_exchange()
    inbound = exchange.inbound(cookie_header(exchange, USER))
    outbound = exchange.outbound(inbound, ["{user: 1"], T0)
    assert outbound.change is Change.INVALID_HEADER
    assert outbound.error_status == 502
    assert outbound.error_body == {"error": "invalid_session_header"}
    assert outbound.set_cookies == ()


def test_set_header_that_is_not_an_object_is_refused_with_502() -> None:
    exchange = make_exchange()
    inbound = exchange.inbound(cookie_header(exchange, USER))
    outbound = exchange.outbound(inbound, ["[1, 2]"], T0)
    assert outbound.change is Change.INVALID_HEADER
    assert outbound.error_status == 502
    assert outbound.error_body == {"error": "invalid_session_header"}
    assert outbound.set_cookies == ()


def test_refused_set_header_detail_never_quotes_the_header() -> None:
    exchange = make_exchange()
    outbound = exchange.outbound(exchange.inbound(None), ['"secret-token-value"'], T0)
    assert outbound.detail
    assert "secret-token-value" not in outbound.detail


def test_session_json_over_max_json_bytes_is_refused_with_its_size() -> None:
    exchange = make_exchange(make_config(session="{compress: false, max_json_bytes: 64}"))
    payload = json.dumps({"blob": "x" * 100}, separators=(",", ":"))
    outbound = exchange.outbound(exchange.inbound(None), [payload], T0)
    assert outbound.change is Change.OVERFLOW
    assert outbound.error_status == 502
    assert outbound.error_body == {"error": "session_too_large", "bytes": len(payload), "limit": 64}
    assert outbound.set_cookies == ()


def test_session_over_the_cookie_capacity_is_refused_with_its_size() -> None:
    exchange = make_exchange(make_config(cookie="{chunk_size: 256, max_chunks: 2}"))
    inbound = exchange.inbound(cookie_header(exchange, USER))
    outbound = exchange.outbound(inbound, [big_session(600)], T0)
    assert outbound.change is Change.OVERFLOW
    assert outbound.error_status == 502
    assert outbound.error_body is not None
    assert outbound.error_body["error"] == "session_too_large"
    assert outbound.error_body["limit"] == exchange.codec.capacity
    assert isinstance(outbound.error_body["bytes"], int)
    assert outbound.error_body["bytes"] > exchange.codec.capacity
    assert outbound.set_cookies == ()


# --- re-issue ---------------------------------------------------------------------------------


def test_session_signed_with_an_older_secret_is_resigned_keeping_its_age() -> None:
    clock = FakeClock()
    old = make_exchange(make_config(secrets=(OLD_SECRET,)), clock)
    header = cookie_header(old, USER)
    clock.now = T0 + 500
    exchange = make_exchange(make_config(secrets=(NEW_SECRET, OLD_SECRET)), clock)
    inbound = exchange.inbound(header)
    assert inbound.stale_key
    outbound = exchange.outbound(inbound, [], clock.now)
    assert outbound.change is Change.RESIGNED
    fresh = make_exchange(make_config(secrets=(NEW_SECRET,)), clock)
    again = reread(fresh, outbound.set_cookies)
    assert again.state is SessionState.VALID
    assert again.payload == USER
    assert again.issued_at == int(T0)


def test_resigned_session_expires_its_surplus_chunks() -> None:
    clock = FakeClock()
    old = make_exchange(make_config(secrets=(OLD_SECRET,)), clock)
    header = cookie_header(old, USER) + "; session.3=stray"
    exchange = make_exchange(make_config(secrets=(NEW_SECRET, OLD_SECRET)), clock)
    outbound = exchange.outbound(exchange.inbound(header), [], T0)
    assert outbound.change is Change.RESIGNED
    assert expired(outbound.set_cookies) == ["session.3"]


def test_session_older_than_refresh_after_is_refreshed_with_a_new_timestamp() -> None:
    clock = FakeClock()
    exchange = make_exchange(make_config(session="{refresh_after: 60}"), clock)
    header = cookie_header(exchange, USER)
    clock.now = T0 + 61
    outbound = exchange.outbound(exchange.inbound(header), [], clock.now)
    assert outbound.change is Change.REFRESHED
    again = reread(exchange, outbound.set_cookies)
    assert again.payload == USER
    assert again.issued_at == int(T0 + 61)


def test_session_younger_than_refresh_after_is_unchanged() -> None:
    clock = FakeClock()
    exchange = make_exchange(make_config(session="{refresh_after: 60}"), clock)
    header = cookie_header(exchange, USER)
    clock.now = T0 + 59
    outbound = exchange.outbound(exchange.inbound(header), [], clock.now)
    assert outbound.change is Change.NONE
    assert outbound.set_cookies == ()


def test_set_header_wins_over_a_due_refresh() -> None:
    clock = FakeClock()
    exchange = make_exchange(make_config(session="{refresh_after: 60}"), clock)
    header = cookie_header(exchange, USER)
    clock.now = T0 + 61
    outbound = exchange.outbound(exchange.inbound(header), ['{"user":2}'], clock.now)
    assert outbound.change is Change.SET
    assert reread(exchange, outbound.set_cookies).payload == '{"user":2}'


# --- X-Patch-Session (RFC 7396) -----------------------------------------------------------


def session_of(exchange: SessionExchange, set_cookies: tuple[str, ...]) -> Inbound:
    header = "; ".join(c.split(";", 1)[0] for c in set_cookies if "Max-Age=0" not in c)
    return exchange.inbound(header)


def test_a_merge_patch_changes_only_its_keys() -> None:
    exchange = make_exchange()
    inbound = exchange.inbound(cookie_header(exchange, '{"user":1,"cart":[1],"theme":"dark"}'))
    outbound = exchange.outbound(inbound, [], T0, ['{"cart":[1,2],"theme":null}'])
    assert outbound.change is Change.PATCHED
    assert json.loads(session_of(exchange, outbound.set_cookies).payload) == {
        "user": 1,
        "cart": [1, 2],
    }


def test_a_merge_patch_without_a_session_applies_to_an_empty_one() -> None:
    exchange = make_exchange()
    outbound = exchange.outbound(exchange.inbound("session.0=forged"), [], T0, ['{"a":{"b":1}}'])
    assert outbound.change is Change.PATCHED
    assert session_of(exchange, outbound.set_cookies).payload == '{"a":{"b":1}}'


def test_a_merge_patch_that_empties_the_session_clears_it() -> None:
    exchange = make_exchange()
    inbound = exchange.inbound(cookie_header(exchange, USER))
    outbound = exchange.outbound(inbound, [], T0, ['{"user":null}'])
    assert outbound.change is Change.CLEARED
    assert all("Max-Age=0" in c for c in outbound.set_cookies)


def test_set_and_patch_together_or_a_patch_twice_are_refused() -> None:
    exchange = make_exchange()
    inbound = exchange.inbound(cookie_header(exchange, USER))
    for sets, patches in (([USER], ['{"a":1}']), ([], ['{"a":1}', '{"b":1}'])):
        outbound = exchange.outbound(inbound, sets, T0, patches)
        assert outbound.change is Change.INVALID_HEADER
        assert outbound.error_status == 502
        assert outbound.set_cookies == ()


def test_a_patch_that_is_not_an_object_or_not_portable_json_is_refused() -> None:
    exchange = make_exchange()
    inbound = exchange.inbound(cookie_header(exchange, USER))
    for patch in ("[1]", '"x"', '{"a":1e400}', '{"a":"\\ud800"}', "{"):
        outbound = exchange.outbound(inbound, [], T0, [patch])
        assert outbound.change is Change.INVALID_HEADER, patch
        assert outbound.set_cookies == ()


def test_a_patched_session_past_the_limit_overflows_with_the_old_one_kept() -> None:
    exchange = make_exchange(make_config(session="{compress: false, max_json_bytes: 100}"))
    inbound = exchange.inbound(cookie_header(exchange, USER))
    outbound = exchange.outbound(inbound, [], T0, [json.dumps({"blob": "x" * 200})])
    assert outbound.change is Change.OVERFLOW
    assert outbound.set_cookies == ()


# --- duplicated chunks ------------------------------------------------------------------------


def test_chunk_0_sent_twice_with_different_values_is_invalid_not_absent() -> None:
    exchange = make_exchange()
    inbound = exchange.inbound("session.0=junk; " + cookie_header(exchange, USER))
    assert inbound.state is SessionState.INVALID
    assert inbound.payload == "{}"


def test_a_conflict_at_any_chunk_index_is_invalid_even_past_the_sessions_count() -> None:
    exchange = make_exchange()
    inbound = exchange.inbound(cookie_header(exchange, USER) + "; session.5=a; session.5=b")
    assert inbound.state is SessionState.INVALID


def test_the_same_chunk_value_twice_is_not_a_conflict() -> None:
    exchange = make_exchange()
    header = cookie_header(exchange, USER)
    inbound = exchange.inbound(f"{header}; {header}")
    assert (inbound.state, inbound.payload) == (SessionState.VALID, USER)


def test_the_conflict_reason_quotes_no_cookie_content() -> None:
    inbound = make_exchange().inbound("session.0=secretvalue; session.0=othervalue")
    assert inbound.reason == "a chunk cookie sent twice with different values"


# --- migration --------------------------------------------------------------------------------

FLASK_KEY = "exchange-flask-secret-key"
MIGRATE = f"{{format: flask, secret_keys: [{FLASK_KEY}]}}"
EXPIRY = "Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; Secure; SameSite=Lax"


def flask_cookie(session: dict[str, object]) -> str:
    app = Flask(__name__)
    app.secret_key = FLASK_KEY
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    assert serializer is not None
    value: str = serializer.dumps(session)
    return value


def migrating_exchange(migrate: str = MIGRATE) -> SessionExchange:
    return make_exchange(make_config(migrate=migrate))


def test_a_legacy_session_migrates_when_no_chunk_cookie_came() -> None:
    inbound = migrating_exchange().inbound("session=" + flask_cookie({"user": 9}))
    assert (inbound.state, inbound.payload, inbound.migrated) == (
        SessionState.VALID,
        '{"user":9}',
        "flask",
    )
    assert inbound.legacy_names == ("session",)


def test_a_legacy_session_never_fills_the_gap_a_conflicting_chunk_0_leaves() -> None:
    exchange = migrating_exchange()
    header = f"session.0=junk; session={flask_cookie({'user': 'attacker'})}; "
    inbound = exchange.inbound(header + cookie_header(exchange, USER))
    assert (inbound.state, inbound.migrated) == (SessionState.INVALID, "")
    assert inbound.legacy_names == ("session",)  # still expired by the response


def test_an_emptied_chunk_0_alone_counts_as_no_session_of_the_proxys_own() -> None:
    inbound = migrating_exchange().inbound("session.0=; session=" + flask_cookie({"user": 9}))
    assert (inbound.state, inbound.migrated) == (SessionState.VALID, "flask")


def test_emptied_chunks_with_chunk_0_among_them_count_as_none_too() -> None:
    cookie = "session.0=; session.1=; session=" + flask_cookie({"user": 9})
    inbound = migrating_exchange().inbound(cookie)
    assert (inbound.state, inbound.migrated) == (SessionState.VALID, "flask")


def test_a_chunk_with_a_value_beside_an_emptied_chunk_0_blocks_migration() -> None:
    cookie = "session.0=; session.1=x; session=" + flask_cookie({"user": 9})
    inbound = migrating_exchange().inbound(cookie)
    assert (inbound.state, inbound.migrated, inbound.payload) == (SessionState.ABSENT, "", "{}")
    assert inbound.legacy_names == ("session",)


def test_the_proxys_own_valid_session_wins_over_a_legacy_one() -> None:
    exchange = migrating_exchange()
    inbound = exchange.inbound(cookie_header(exchange, USER) + "; session=" + flask_cookie({}))
    assert (inbound.state, inbound.payload, inbound.migrated) == (SessionState.VALID, USER, "")
    assert inbound.legacy_names == ("session",)


def test_a_migrated_session_is_reissued_and_its_legacy_cookie_expired() -> None:
    exchange = migrating_exchange()
    inbound = exchange.inbound("session=" + flask_cookie({"user": 9}))
    outbound = exchange.outbound(inbound, [], T0)
    assert outbound.change is Change.MIGRATED
    assert set_cookie_names(outbound.set_cookies) == ["session.0", "session"]
    assert reread(exchange, outbound.set_cookies).payload == '{"user":9}'


def test_an_upstream_without_the_session_neither_migrates_nor_expires_a_legacy_cookie() -> None:
    exchange = migrating_exchange()
    inbound = exchange.inbound("a=1; session=" + flask_cookie({"user": 9}), decode=False)
    assert (inbound.state, inbound.migrated, inbound.legacy_names) == (SessionState.ABSENT, "", ())
    assert inbound.cookies.others == "a=1"  # still never forwarded
    assert exchange.outbound(inbound, [], T0).set_cookies == ()


def test_every_legacy_cookie_carried_is_expired_whatever_became_of_the_session() -> None:
    exchange = migrating_exchange()
    for cookie in ("session=garbage", "session=", "session=" + flask_cookie({"user": 9})):
        outbound = exchange.outbound(exchange.inbound(cookie), [], T0)
        assert outbound.set_cookies[-1] == f"session=; Path=/; {EXPIRY}", cookie


def test_the_legacy_cookie_is_expired_in_flasks_scope_not_the_proxys() -> None:
    config = make_config(cookie="{path: /app, domain: example.com}", migrate=MIGRATE)
    exchange = make_exchange(config)
    outbound = exchange.outbound(exchange.inbound("session=garbage"), [], T0)
    assert outbound.set_cookies == (f"session=; Path=/; {EXPIRY}",)


def test_the_legacy_cookie_is_expired_where_migrate_says_it_lives() -> None:
    migrate = f"{{format: flask, secret_keys: [{FLASK_KEY}], cookie_path: /shop,"
    migrate += " cookie_domain: example.com}"
    exchange = migrating_exchange(migrate)
    outbound = exchange.outbound(exchange.inbound("session=garbage"), [], T0)
    assert outbound.set_cookies == (f"session=; Path=/shop; Domain=example.com; {EXPIRY}",)


def test_a_non_permanent_flask_session_still_gets_max_age_for_now() -> None:
    # Known and documented (docs/migration.md, "Non-permanent sessions become persistent
    # cookies"): keeping it a browser-session cookie needs a flag in the token.
    exchange = migrating_exchange()
    outbound = exchange.outbound(exchange.inbound("session=" + flask_cookie({"user": 9})), [], T0)
    (live_cookie,) = [c for c in outbound.set_cookies if c.startswith("session.0=")]
    assert "; Max-Age=1209600;" in live_cookie
