"""Chunk cookies on the wire: splitting a Cookie header, writing Set-Cookie values."""

from __future__ import annotations

import base64
import random

import pytest

from proxy.config import CookiePolicy
from proxy.session_codec import ChunkCookie, SessionCodec, SessionState
from proxy.session_cookies import SetCookieWriter, split_cookie_header

SECRET = b"cookie-test-secret-0123456789-abcdefghijklmn"


def incompressible_session(size: int) -> str:
    blob = base64.b64encode(random.Random(size).randbytes(size)).decode("ascii")
    return '{"blob":"' + blob + '"}'


# --- split_cookie_header ------------------------------------------------------------------


def test_chunk_cookies_are_collected_by_index() -> None:
    split = split_cookie_header("session.1=b; session.0=a", "session")
    assert split.chunks == {0: "a", 1: "b"}


def test_other_cookies_are_kept_unchanged_and_in_order() -> None:
    header = "theme=dark; session.0=a; lang=en-GB; session.1=b; csrf=x=y"
    assert split_cookie_header(header, "session").others == "theme=dark; lang=en-GB; csrf=x=y"


def test_header_without_chunks_passes_through_unchanged() -> None:
    split = split_cookie_header("theme=dark;lang=en", "session")
    assert split.chunks == {}
    assert split.others == "theme=dark;lang=en"


def test_thousands_of_tiny_pairs_pass_in_order_beside_disguised_chunks() -> None:
    tiny = "; ".join(["x", "a=1", "s.0=1"] * 5000)
    header = f"{tiny}; session.0=v; a=1, session.1=w; {tiny}; SESSION.2=u"
    split = split_cookie_header(header, "session")
    assert split.chunks == {0: "v"}
    assert split.others == f"{tiny}; {tiny}"


def test_others_is_none_when_only_chunks_were_sent() -> None:
    assert split_cookie_header("session.0=a; session.1=b", "session").others is None


@pytest.mark.parametrize("header", [None, ""])
def test_missing_header_has_no_chunks_and_no_others(header: str | None) -> None:
    split = split_cookie_header(header, "session")
    assert (split.chunks, split.conflicts, split.others) == ({}, set(), None)


@pytest.mark.parametrize(
    "cookie",
    [
        "session.x=v",
        "session.+1=v",
        "session.-1=v",
        "session.1_0=v",
        "session.\u0663=v",  # ARABIC-INDIC DIGIT THREE: isdigit() but not ASCII
        "session.=v",
        "session.1.2=v",
    ],
)
def test_non_canonical_index_is_not_a_chunk(cookie: str) -> None:
    split = split_cookie_header(f"{cookie}; session.0=a", "session")
    assert split.chunks == {0: "a"}
    assert split.others == cookie


def test_cookie_names_that_merely_start_like_the_session_are_not_chunks() -> None:
    header = "sessionid=1; mysession.0=2; tracking=session.1234"
    split = split_cookie_header(header, "session")
    assert split.chunks == {}
    assert split.others == header


@pytest.mark.parametrize(
    "pair",
    [
        "session.01=v",  # a lenient int() reads chunk 1
        "session.1000=v",
        "Session.0=v",  # a case-folding parser
        "SESSION.3=v",
        "a=1, session.0=v",  # RFC 2965 commas: some parsers split on them
        "a=1,session.0=v",
        '"session.0"=v',  # a quoted name
        "'session.0'=v",
        "a=x session.0=v",
        "a=1, session.0",  # a nameless cookie's bare value
    ],
)
def test_a_pair_a_lenient_parser_reads_as_a_chunk_is_never_forwarded(pair: str) -> None:
    split = split_cookie_header(f"keep=1; {pair}; session.0=a; other=2", "session")
    assert split.chunks == {0: "a"}
    assert split.others == "keep=1; other=2"


def test_conflicting_duplicate_chunk_is_dropped_and_recorded() -> None:
    split = split_cookie_header("session.0=a; session.1=b; session.1=c", "session")
    assert split.chunks == {0: "a"}
    assert split.conflicts == {1}


def test_conflict_stays_when_the_first_value_comes_again() -> None:
    split = split_cookie_header("session.1=b; session.1=c; session.1=b", "session")
    assert 1 not in split.chunks
    assert split.conflicts == {1}


def test_identical_duplicate_chunk_is_kept() -> None:
    split = split_cookie_header("session.0=a; session.0=a", "session")
    assert split.chunks == {0: "a"}
    assert split.conflicts == set()


def test_conflicting_chunk_makes_the_session_invalid() -> None:
    codec = SessionCodec([SECRET], chunk_size=256)
    cookies = codec.encode(incompressible_session(400)).cookies
    assert len(cookies) >= 2
    header = "; ".join(f"{c.name}={c.value}" for c in cookies) + "; session.1=other-path"
    result = SessionCodec([SECRET], chunk_size=256).decode(
        split_cookie_header(header, "session").chunks
    )
    assert result.state is SessionState.INVALID


def test_quoted_value_is_unquoted() -> None:
    assert split_cookie_header('session.0="abc"', "session").chunks == {0: "abc"}


def test_whitespace_around_pairs_and_equals_is_ignored() -> None:
    split = split_cookie_header("  session.0 = abc ;a=1 ;  ", "session")
    assert split.chunks == {0: "abc"}
    assert split.others == "a=1"


def test_chunk_indexes_past_nine_are_numbers_not_text() -> None:
    codec = SessionCodec([SECRET], max_chunks=16)
    payload = incompressible_session(38_000)
    cookies = codec.encode(payload).cookies
    assert len(cookies) >= 11
    header = "; ".join(f"{c.name}={c.value}" for c in sorted(cookies, key=lambda c: c.name))
    assert header.index("session.10=") < header.index("session.2=")
    result = SessionCodec([SECRET], max_chunks=16).decode(
        split_cookie_header(header, "session").chunks
    )
    assert result.state is SessionState.VALID
    assert result.payload == payload


def test_thousands_of_cookies_are_split_and_decoded_without_error() -> None:
    others = [f"c{i}=v{i}" for i in range(10_000)]
    chunks = [f"session.{i}=S1.999.x" for i in range(1000)]
    split = split_cookie_header("; ".join(others + chunks), "session")
    assert split.others is not None
    assert len(split.others.split("; ")) == 10_000
    assert len(split.chunks) == 1000
    assert SessionCodec([SECRET]).decode(split.chunks).state is SessionState.INVALID


def test_megabyte_cookie_header_is_split_and_decoded_without_error() -> None:
    for header in (
        "session.0=" + "A" * (1 << 20),
        "session.0=S1.2.x.1.z." + "A" * (1 << 20) + "; session.1=" + "B" * (1 << 20),
        "x=1;" * (1 << 18),
        "session.0=" + ";" * (1 << 20),
    ):
        split = split_cookie_header(header, "session")
        assert SessionCodec([SECRET]).decode(split.chunks).state is not SessionState.VALID


# --- SetCookieWriter ----------------------------------------------------------------------


def test_live_cookie_carries_every_policy_attribute() -> None:
    writer = SetCookieWriter(CookiePolicy())
    assert writer.live(ChunkCookie("session.0", "abc")) == (
        "session.0=abc; Path=/; Max-Age=1209600; HttpOnly; Secure; SameSite=Lax"
    )


def test_expired_cookie_has_empty_value_zero_max_age_and_past_expires() -> None:
    writer = SetCookieWriter(CookiePolicy())
    assert writer.expired(3) == (
        "session.3=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; "
        "HttpOnly; Secure; SameSite=Lax"
    )


def test_expired_cookie_has_the_same_path_and_domain_as_the_live_one() -> None:
    writer = SetCookieWriter(CookiePolicy(name="sid", path="/app", domain="example.com"))
    live = writer.live(ChunkCookie("sid.1", "v"))
    expired = writer.expired(1)
    assert "; Path=/app; Domain=example.com; " in live
    assert "; Path=/app; Domain=example.com; " in expired
    assert expired.startswith("sid.1=;")


def test_insecure_policy_writes_neither_secure_nor_http_only() -> None:
    policy = CookiePolicy(secure=False, http_only=False, same_site="strict", max_age=60)
    writer = SetCookieWriter(policy)
    assert writer.live(ChunkCookie("session.0", "v")) == (
        "session.0=v; Path=/; Max-Age=60; SameSite=Strict"
    )
    assert "Secure" not in writer.expired(0)
    assert "HttpOnly" not in writer.expired(0)


def test_same_site_none_is_written_as_none() -> None:
    writer = SetCookieWriter(CookiePolicy(same_site="none"))
    assert writer.live(ChunkCookie("session.0", "v")).endswith("; Secure; SameSite=None")
    assert writer.expired(0).endswith("; Secure; SameSite=None")
