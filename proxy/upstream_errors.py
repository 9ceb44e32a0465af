"""Why an upstream failed, as one word of a fixed set, and what the client is told instead.

The word (the *cause*) is the access log's ``upstream_error``, the ``kind`` label of
``session_sidecar_upstream_errors_total`` and the subject of the WARNING the process log gets:

* ``dns``: the upstream's host name does not resolve;
* ``refused``: no TCP connection (a closed port; also an unreachable host or network, which the
  log line's detail names);
* ``tls``: the TLS handshake failed (a certificate that does not verify, a peer that does not
  speak TLS);
* ``timeout``: no connection, or no response head, within the upstream's ``timeout``;
* ``reset``: the connection closed or was reset before the response ended;
* ``bad_response``: what came back is not an HTTP/1.1 response the proxy may relay;
* ``header_too_large``: the response head is over ``limits.max_header_bytes``;
* ``session_too_large``: the session is over the upstream's ``max_session_header_bytes``, so
  the request was never sent.

A detail for the log comes from the exception's class and the operating system's or OpenSSL's
own words, never from bytes a peer sent: a parser's message may quote a response line, which
may carry a cookie.
"""

from __future__ import annotations

import socket
import ssl
from typing import Final

#: The client's answer for each cause: status and the ``error`` of the JSON body. The body
#: stays coarse (``upstream_unreachable`` for dns, refused and tls alike): the cause is for
#: the operator's log and metrics, not for the client.
RESPONSES: Final[dict[str, tuple[int, str]]] = {
    "dns": (502, "upstream_unreachable"),
    "refused": (502, "upstream_unreachable"),
    "tls": (502, "upstream_unreachable"),
    "timeout": (504, "upstream_timeout"),
    "reset": (502, "upstream_connection_failed"),
    "bad_response": (502, "upstream_bad_response"),
    # The upstream's fault, not the client's: 502, never 431 (RFC 6585 section 5 speaks of
    # the request's header fields).
    "header_too_large": (502, "upstream_header_too_large"),
}
#: Every cause, in the order the documentation lists them.
CAUSES: Final = (*RESPONSES, "session_too_large")

_DETAIL_CHARS: Final = 200


def connect_failure(exc: OSError) -> str:
    """The cause of a failure to open a connection (TCP connect, then the TLS handshake)."""
    # TimeoutError and ssl.SSLError are both OSErrors: the specific classes come first.
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, ssl.SSLError):  # certificate verification failures included
        return "tls"
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        # Reset while the TLS handshake ran: the peer took the connection, then dropped it.
        return "reset"
    return "refused"


def describe(exc: BaseException | None) -> str:
    """A short, safe detail of an exception for the process log."""
    if exc is None:
        return ""
    if isinstance(exc, ssl.SSLCertVerificationError):
        text = f"certificate verify failed: {exc.verify_message}"
    elif isinstance(exc, ssl.SSLError):
        text = exc.reason or type(exc).__name__  # OpenSSL's reason code, e.g. WRONG_VERSION_NUMBER
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = type(exc).__name__
    return text[:_DETAIL_CHARS]
