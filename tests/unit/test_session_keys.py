"""KeyRing: keys derived per secret, newest first, looked up by a short public key id."""

from __future__ import annotations

import re

import pytest

from proxy.session_keys import KeyRing

SECRET_1 = b"first-test-secret-0123456789-abcdefghijklmnop"
SECRET_2 = b"second-test-secret-0123456789-abcdefghijklmno"


def test_newest_key_is_the_first_secret() -> None:
    ring = KeyRing([SECRET_2, SECRET_1])
    assert ring.newest is ring.keys[0]
    assert ring.newest.kid == KeyRing([SECRET_2]).newest.kid


def test_keys_are_indexed_newest_first() -> None:
    assert [k.index for k in KeyRing([SECRET_2, SECRET_1]).keys] == [0, 1]


def test_key_id_is_short_url_safe_text() -> None:
    assert re.fullmatch(r"[A-Za-z0-9_-]{8}", KeyRing([SECRET_1]).newest.kid)


def test_key_id_is_stable_for_a_secret() -> None:
    assert KeyRing([SECRET_1]).newest.kid == KeyRing([SECRET_2, SECRET_1]).keys[1].kid


def test_each_secret_has_its_own_key_id() -> None:
    ring = KeyRing([SECRET_2, SECRET_1])
    assert ring.keys[0].kid != ring.keys[1].kid
    assert set(ring.by_kid) == {ring.keys[0].kid, ring.keys[1].kid}


def test_key_id_reveals_neither_secret_nor_signing_key() -> None:
    key = KeyRing([SECRET_1]).newest
    assert key.kid.encode() not in SECRET_1
    assert key.kid.encode() not in key.sign_key


def test_signing_key_differs_from_secret_and_between_secrets() -> None:
    ring = KeyRing([SECRET_2, SECRET_1])
    assert len(ring.keys[0].sign_key) == 32
    assert ring.keys[0].sign_key not in (SECRET_1, SECRET_2)
    assert ring.keys[0].sign_key != ring.keys[1].sign_key


def test_repr_shows_no_key_material() -> None:
    key = KeyRing([SECRET_1]).newest
    assert repr(key.sign_key) not in repr(key)
    assert "aead" not in repr(key)


def test_empty_key_ring_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one secret"):
        KeyRing([])


def test_same_secret_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="same key id"):
        KeyRing([SECRET_1, SECRET_1])
