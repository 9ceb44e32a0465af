"""Keys derived from the configured secrets: one HMAC key and one AES key per secret.

The secrets are listed newest first. The newest signs and encrypts; every one verifies and
decrypts. Each key gets a short public key id that travels in the cookie, so verification goes
straight to the right key instead of trying them all.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from itsdangerous.encoding import base64_encode

_SIGN_INFO = b"session-sidecar v1 hmac-sha256"
_ENCRYPT_INFO = b"session-sidecar v1 aes-256-gcm"
_KID_INFO = b"session-sidecar v1 key-id"


def _hkdf(secret: bytes, info: bytes) -> bytes:
    # RFC 5869: HKDF turns a secret of any length into independent keys for each purpose, so
    # the signing key and the encryption key never coincide.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


@dataclass(frozen=True, slots=True)
class SessionKey:
    """Keys derived from one secret. ``index`` 0 is the newest."""

    index: int
    kid: str
    sign_key: bytes = field(repr=False)
    aead: AESGCM = field(repr=False)


class KeyRing:
    """The derived keys, newest first, with lookup by key id."""

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets:
            raise ValueError("at least one secret is required")
        keys: list[SessionKey] = []
        for index, secret in enumerate(secrets):
            kid_digest = hmac.digest(_hkdf(secret, _KID_INFO), b"kid", hashlib.sha256)
            keys.append(
                SessionKey(
                    index=index,
                    kid=base64_encode(kid_digest[:6]).decode("ascii"),
                    sign_key=_hkdf(secret, _SIGN_INFO),
                    aead=AESGCM(_hkdf(secret, _ENCRYPT_INFO)),
                )
            )
        self.keys: tuple[SessionKey, ...] = tuple(keys)
        self.by_kid: dict[str, SessionKey] = {k.kid: k for k in keys}
        if len(self.by_kid) != len(keys):
            raise ValueError("two secrets derive the same key id; list each secret once")

    @property
    def newest(self) -> SessionKey:
        return self.keys[0]
