"""Command line: ``session-sidecar serve | check-config | keygen | encode | decode``.

Exit codes: 0 success, 2 bad configuration or bad input, 1 anything else. Configuration errors
print one line per problem and never a traceback or a secret.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Sequence

from proxy import __version__
from proxy.config import Config, ConfigError, config_path, iter_summary, load_config
from proxy.proxy_state import codec_from_config
from proxy.session_codec import SessionError, normalize_session_json
from proxy.session_cookies import SetCookieWriter
from proxy.session_exchange import SessionExchange

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _load(path_arg: str | None) -> Config | None:
    path = config_path(path_arg)
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.errors)} configuration error(s):", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return None


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    print(f"{config.source}: OK")
    for line in iter_summary(config):
        print(f"  {line}")
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return EXIT_OK


def _cmd_keygen(args: argparse.Namespace) -> int:
    print(secrets.token_urlsafe(args.bytes))
    return EXIT_OK


def _cmd_encode(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    codec = codec_from_config(config)
    try:
        payload = normalize_session_json(args.json, config.session.max_json_bytes)
        if payload is None:
            print("session is empty: nothing to encode", file=sys.stderr)
            return EXIT_USAGE
        encoded = codec.encode(payload)
    except SessionError as exc:
        print(f"cannot encode: {exc}", file=sys.stderr)
        return EXIT_USAGE
    writer = SetCookieWriter(config.cookie)
    for cookie in encoded.cookies:
        print(f"Set-Cookie: {writer.live(cookie)}")
    return EXIT_OK


def _cmd_decode(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    # The request path's own reading, legacy (migrate:) cookies included.
    inbound = SessionExchange(config, codec_from_config(config)).inbound(args.cookie_header)
    result = inbound.result
    line = f"state: {result.state.value}"
    if result.reason:
        line += f" ({result.reason})"
    if result.stale_key:
        line += " (made with an older secret or the other mode: the proxy re-issues it)"
    if inbound.migrated:
        line += f" (a legacy {inbound.migrated} session: the proxy re-issues it in its own format)"
    print(line)
    print(result.payload)
    return EXIT_OK if result.state.value == "valid" else EXIT_USAGE


def _cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    from proxy.server import serve  # imported late: the other commands need no event loop

    return serve(config, config_path(args.config))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="session-sidecar",
        description="Reverse proxy that gives any backend large, signed client-side sessions.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "-c",
            "--config",
            metavar="FILE",
            help="YAML configuration (default: $SESSION_SIDECAR_CONFIG or config/proxy.yaml)",
        )
        return p

    serve = with_config(sub.add_parser("serve", help="run the proxy"))
    serve.set_defaults(func=_cmd_serve)
    check = with_config(
        sub.add_parser("check-config", help="validate a configuration, secrets included")
    )
    check.set_defaults(func=_cmd_check_config)
    keygen = sub.add_parser("keygen", help="print a new random url-safe secret")
    keygen.add_argument("--bytes", type=int, default=48, help="random bytes (default 48)")
    keygen.set_defaults(func=_cmd_keygen)
    encode = with_config(sub.add_parser("encode", help="print Set-Cookie lines for a session"))
    encode.add_argument("json", help="the session as a JSON object, e.g. '{\"user\": 1}'")
    encode.set_defaults(func=_cmd_encode)
    decode = with_config(sub.add_parser("decode", help="verify a Cookie header's session"))
    decode.add_argument("cookie_header", help="the Cookie header value, e.g. 'session.0=...'")
    decode.set_defaults(func=_cmd_decode)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "bytes", 48) < 32:
        print("keygen: --bytes must be at least 32", file=sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return EXIT_FAILURE
    return code
