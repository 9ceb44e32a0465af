"""WebSocket upgrades: the handshake rules that decide whether a byte tunnel may open at all.

The proxy relays a WebSocket as raw bytes once the upstream switches protocols, so whatever
opens the tunnel also decides who may bypass header hygiene from then on. Hence both sides are
checked before a single byte is relayed: the client's request must be a real RFC 6455 opening
handshake, and the upstream's ``101`` must be the answer to *that* handshake. A backend route
that merely echoes a status code (``101`` from a test endpoint, a framework that lets a handler
write any status) then cannot turn a client connection into an unfiltered pipe to the backend.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
from collections.abc import Mapping

#: RFC 6455 section 1.3: appended to the client's key before hashing.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Handshake(enum.Enum):
    """What an upgrade request turned out to be."""

    WEBSOCKET = "websocket"  # a valid opening handshake: relay it, then tunnel on a valid 101
    NOT_WEBSOCKET = "not_websocket"  # another protocol (h2c, ...): forwarded without Upgrade
    BAD_KEY = "bad_key"  # Upgrade: websocket without a valid Sec-WebSocket-Key: 400
    BAD_VERSION = "bad_version"  # a version other than 13: 426 naming 13 (section 4.4)


def _tokens(value: str) -> set[str]:
    return {t.strip().lower() for t in value.split(",")}


def classify_request(
    method: str, version: tuple[int, int], headers: Mapping[str, str]
) -> Handshake:
    """RFC 6455 section 4.1 (the client's handshake), as far as the proxy must trust it."""
    if "websocket" not in _tokens(headers.get("Upgrade", "")):
        return Handshake.NOT_WEBSOCKET
    if method != "GET" or version < (1, 1):
        return Handshake.BAD_KEY
    if not valid_key(headers.get("Sec-WebSocket-Key", "")):
        return Handshake.BAD_KEY
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        return Handshake.BAD_VERSION
    return Handshake.WEBSOCKET


def valid_key(key: str) -> bool:
    """Section 4.1 item 7: the key is a base64-encoded 16-byte value (24 characters)."""
    key = key.strip()
    if len(key) != 24:
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def accept_for(key: str) -> str:
    """Section 4.2.2 item 5.4: the Sec-WebSocket-Accept a server derives from the key."""
    digest = hashlib.sha1(key.strip().encode("ascii") + _GUID).digest()  # noqa: S324 - the RFC's
    return base64.b64encode(digest).decode("ascii")


def accepts(headers: Mapping[str, str], connection: str, key: str) -> bool:
    """Section 4.1 (the client's checks of the server's answer): a 101 opens the tunnel only
    with ``Upgrade: websocket``, ``Connection: upgrade`` and the accept derived from ``key``.

    ``connection`` is every Connection line joined, since several lines make one list."""
    return (
        "websocket" in _tokens(headers.get("Upgrade", ""))
        and "upgrade" in _tokens(connection)
        and headers.get("Sec-WebSocket-Accept", "").strip() == accept_for(key)
    )
