"""Command line: ``session-sidecar serve | check-config | keygen | encode | decode``.

Exit codes: 0 success, 2 bad configuration or bad input (or, for ``decode``, a session that is
not valid), 1 anything else. Configuration errors print one line per problem and never a
traceback or a secret. Every command's ``--help`` lists its exit codes, the environment
variables it reads and, for ``serve``, the signals it handles.
"""

from __future__ import annotations

import argparse
import datetime
import os
import secrets
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from proxy import __version__
from proxy.config import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    config_path,
    iter_summary,
    load_config,
)
from proxy.config_secrets import development_secret_warning
from proxy.proxy_state import codec_from_config
from proxy.session_codec import SessionCodec, SessionError, SessionState, normalize_session_json
from proxy.session_cookies import SetCookieWriter
from proxy.session_exchange import Inbound, SessionExchange

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: More than any Cookie header a proxy accepts (limits.max_header_bytes is at most 16 MB, but
#: a pasted session is at most max_chunks * chunk_size); bounds a read from a pipe.
MAX_DECODE_INPUT = 1 << 20

# --- help texts ------------------------------------------------------------------------------
# The environment variable names below are the constants of proxy/config.py, server.py,
# access_log.py and metrics.py; tests/unit/test_cli.py checks that serve's help names each one.

_CONFIG_ENV = f"""\
  {CONFIG_ENV_VAR}
      the configuration file when -c is not given (default: {DEFAULT_CONFIG_PATH})
  ${{NAME}} in the file
      any string value may name an environment variable, e.g. "- ${{SESSION_SECRET}}" under
      secrets: (also {{env: NAME}}, or {{file: /path}} for a mounted secret); an unset one is
      an error. $$ is a literal $."""

_SERVE_ENV = """\
  SESSION_SIDECAR_LOG_LEVEL
      process log level (DEBUG, INFO, WARNING, ERROR; default INFO)
  SESSION_SIDECAR_ALLOW_PY_PARSER=1
      start even without aiohttp's C HTTP parser (slow); without it serve refuses (exit 1)
  AIOHTTP_NO_EXTENSIONS
      aiohttp's own switch: set, it disables the C parser (see above)
  PROMETHEUS_MULTIPROC_DIR
      workers > 1: a writable directory for the workers' metrics files, whose *.db files
      from an earlier run are deleted at start (default: a new one under $TMPDIR or /tmp,
      removed at exit)
  SESSION_SIDECAR_WORKER, SESSION_SIDECAR_LISTEN_FD, SESSION_SIDECAR_SUPERVISOR_PID
      set by the supervisor for its workers (workers > 1); never set them yourself"""

_SERVE_SIGNALS = """\
signals:
  SIGTERM, SIGINT
      graceful stop: stop accepting, let in-flight requests finish for up to
      shutdown_timeout seconds (default 30), then exit 0. With workers > 1 the supervisor
      passes the signal on and kills a worker still running after shutdown_timeout + 5 s.
  SIGHUP
      reload the configuration file and every secret it names; an invalid new configuration
      is refused with a log line and the running one keeps serving. listen, limits,
      admin_listen and workers take effect only after a restart."""


def _epilog(exit_codes: str, environment: str | None, extra: str = "") -> str:
    text = f"exit codes:\n{exit_codes}\n"
    if environment:
        text += f"\nenvironment:\n{environment}\n"
    if extra:
        text += f"\n{extra}\n"
    return text


_HELP: dict[str, tuple[str, str, str]] = {
    # command: (one-line help, description, epilog)
    "serve": (
        "run the proxy",
        "Run the proxy on the configuration's listen address, with /healthz, /readyz and "
        "/metrics on admin_listen. The access log goes to stdout, the process log to stderr.",
        _epilog(
            "  0  stopped by SIGTERM or SIGINT after the in-flight requests finished\n"
            "  1  could not start or run: the port is in use, aiohttp's C parser is missing,\n"
            "     or a worker did not stop cleanly\n"
            "  2  the configuration is invalid or unreadable: one line per problem, nothing\n"
            "     started",
            f"{_CONFIG_ENV}\n{_SERVE_ENV}",
            _SERVE_SIGNALS,
        ),
    ),
    "check-config": (
        "validate a configuration, secrets included",
        "Read and validate the configuration as serve would, every secret it names included, "
        "and print a summary (never a secret). Warnings go to stderr and do not fail.",
        _epilog(
            "  0  the configuration is valid (warnings, if any, on stderr)\n"
            "  2  it is not: one line per problem on stderr",
            _CONFIG_ENV,
        ),
    ),
    "keygen": (
        "print a new random url-safe secret",
        "Print a new random secret, url-safe base64, for the secrets: list.",
        _epilog("  0  printed\n  2  --bytes below 32", None),
    ),
    "encode": (
        "print Set-Cookie lines for a session",
        "Sign (or encrypt) a session with the configuration's newest secret and print the "
        "Set-Cookie lines the proxy would send. decode reads them back as they are.",
        _epilog(
            "  0  printed\n"
            "  2  the configuration is invalid, or the session is not a JSON object, is empty\n"
            "     or does not fit in cookie.max_chunks chunks",
            _CONFIG_ENV,
        ),
    ),
    "decode": (
        "verify a Cookie header's session and show its age, key and expiry",
        "Verify the session in a Cookie header as the proxy would, and show its state, key id, "
        "issue time and age, expiry and chunk count, then the session JSON when it is valid. "
        "The input may be a Cookie header value ('session.0=...; other=1'), a whole header "
        "pasted from the browser's devtools ('Cookie: ...'), or encode's Set-Cookie lines as "
        "they are. It prints the session's content: treat the output as the cookie itself.",
        _epilog(
            "  0  the session is valid\n"
            "  2  it is absent, expired or invalid (the first line says which, and why), or\n"
            "     the configuration or the input is bad",
            _CONFIG_ENV,
        ),
    ),
}

# --- configuration ---------------------------------------------------------------------------


def _load(path_arg: str | None) -> Config | None:
    path = config_path(path_arg)
    try:
        return load_config(path)
    except ConfigError as exc:
        if not Path(path).exists():
            _say_where_the_config_is(path, path_arg)
            return None
        print(f"{path}: {len(exc.errors)} configuration error(s):", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return None


def _say_where_the_config_is(path: str, path_arg: str | None) -> None:
    # The order config_path() follows: -c, then the variable (if not empty), then the default.
    if path_arg:
        origin = "given with -c"
    elif os.environ.get(CONFIG_ENV_VAR):
        origin = f"from {CONFIG_ENV_VAR}"
    else:
        origin = f"the default path: neither -c nor {CONFIG_ENV_VAR} is set"
    print(
        f"{path}: no configuration file there ({origin}). Give the file with -c FILE or "
        f"{CONFIG_ENV_VAR}=FILE.",
        file=sys.stderr,
    )


# --- commands --------------------------------------------------------------------------------


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    print(f"{config.source}: OK")
    for line in iter_summary(config):
        print(f"  {line}")
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    loud = development_secret_warning(config.secrets)
    if loud:
        print(loud, file=sys.stderr)
    return EXIT_OK


def _cmd_keygen(args: argparse.Namespace) -> int:
    if args.bytes < 32:
        print("keygen: --bytes must be at least 32", file=sys.stderr)
        return EXIT_USAGE
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
    text = _decode_input(args.cookie)
    if text is None:
        return EXIT_USAGE
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    codec = codec_from_config(config)
    # The request path's own reading, legacy (migrate:) cookies included.
    inbound = SessionExchange(config, codec).inbound(cookie_header_from_paste(text))
    for line in describe_session(inbound, codec, config.cookie.name):
        print(line)
    return EXIT_OK if inbound.state is SessionState.VALID else EXIT_USAGE


def _decode_input(argument: str) -> str | None:
    if argument != "-":
        return argument
    if sys.stdin.isatty():
        print("decode: give the Cookie header as an argument, or pipe it in", file=sys.stderr)
        return None
    text = sys.stdin.read(MAX_DECODE_INPUT + 1)
    if len(text) > MAX_DECODE_INPUT:
        print(f"decode: more than {MAX_DECODE_INPUT} bytes of input", file=sys.stderr)
        return None
    return text


def cookie_header_from_paste(text: str) -> str:
    """One ``Cookie`` header value from what an operator pastes: a header value, a whole
    ``Cookie:`` header line (devtools, curl -v, HTTP/2's lowercase ``cookie:``), or
    ``Set-Cookie:`` lines, of which only each cookie's ``name=value`` counts (RFC 6265
    section 4.1.1: the attributes follow the first ``;``)."""
    pairs: list[str] = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        name, colon, rest = line.partition(":")
        field = name.strip().lower() if colon else ""
        if field == "set-cookie":
            pairs.append(rest.split(";", 1)[0].strip())
        elif field == "cookie":
            pairs.append(rest.strip())
        elif line:
            pairs.append(line)
    return "; ".join(p for p in pairs if p)


def describe_session(inbound: Inbound, codec: SessionCodec, cookie_name: str) -> list[str]:
    """What ``decode`` prints: the state, then key id, issue time and age, expiry, chunks, and
    the session JSON last (only when valid). Key ids are public; no secret is shown."""
    result = inbound.result
    state = f"state: {result.state.value}"
    if result.reason:
        state += f" ({result.reason})"
    if result.stale_key:
        state += " (made with an older secret or the other mode: the proxy re-issues it)"
    if inbound.migrated:
        state += f" (a legacy {inbound.migrated} session: the proxy re-issues it in its own format)"
    lines = [state, *_key_lines(inbound, codec), *_time_lines(inbound, codec)]
    lines.append(_chunks_line(inbound, cookie_name))
    if result.state is SessionState.VALID:
        lines.append(result.payload)
    return lines


def _key_lines(inbound: Inbound, codec: SessionCodec) -> list[str]:
    ring = codec.keys
    if inbound.result.key_id:
        index = ring.by_kid[inbound.result.key_id].index
        role = "the newest: it signs new sessions" if index == 0 else "an older one: verifies only"
        return [f"key id: {inbound.result.key_id} (secrets[{index}], {role})"]
    if inbound.state is SessionState.INVALID and inbound.carried_indexes:
        # An unknown key id is the usual invalid session after a rotation went wrong.
        listed = ", ".join(f"{k.kid} (secrets[{k.index}])" for k in ring.keys)
        return [f"key ids in this configuration: {listed}"]
    return []


def _time_lines(inbound: Inbound, codec: SessionCodec) -> list[str]:
    issued = inbound.issued_at
    if issued is None:
        return []
    now = codec.clock()  # the clock the codec judged expiry with
    lines = [f"issued: {_utc(issued)} (age {_span(now - issued)})"]
    if not inbound.migrated:  # a legacy session's lifetime was its framework's, not ours
        expires = codec.expires_at(issued)
        if expires >= now:
            when = f"expires: {_utc(expires)} (in {_span(expires - now)}"
        else:
            when = f"expired: {_utc(expires)} ({_span(now - expires)} ago"
        lines.append(f"{when}; cookie.max_age {codec.max_age}s)")
    return lines


def _chunks_line(inbound: Inbound, cookie_name: str) -> str:
    if inbound.chunk_count:
        return f"chunks: {inbound.chunk_count} ({inbound.result.size} bytes of cookie data)"
    if inbound.carried_indexes:
        carried = sorted(inbound.carried_indexes)
        names = ", ".join(f"{cookie_name}.{i}" for i in carried)
        return f"chunks: {len(carried)} carried ({names})"
    if inbound.legacy_names:
        return f"legacy cookies: {', '.join(inbound.legacy_names)} (migrate: is on)"
    return f"chunks: none (no {cookie_name}.0 cookie in the input)"


def _utc(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(int(timestamp), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _span(seconds: float) -> str:
    """``3d 4h 5m 6s``, without the leading zero units; ``0s`` for less than a second."""
    left = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, left = divmod(left, size)
        if count or parts:
            parts.append(f"{count}{unit}")
    return " ".join(parts) or "0s"


def _cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    from proxy.server import serve  # imported late: the other commands need no event loop

    return serve(config, config_path(args.config))


# --- the parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="session-sidecar",
        description="Reverse proxy that gives any backend large, signed client-side sessions.",
        epilog="Run 'session-sidecar COMMAND --help' for a command's exit codes, environment "
        "and signals. Exit codes: 0 success, 2 bad configuration or input, 1 anything else.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, with_config: bool = True) -> argparse.ArgumentParser:
        summary, description, epilog = _HELP[name]
        p = sub.add_parser(
            name,
            help=summary,
            description=textwrap.fill(description, 80),  # the epilog is laid out by hand
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if with_config:
            p.add_argument(
                "-c",
                "--config",
                metavar="FILE",
                help=f"YAML configuration (default: ${CONFIG_ENV_VAR} or {DEFAULT_CONFIG_PATH})",
            )
        return p

    command("serve").set_defaults(func=_cmd_serve)
    command("check-config").set_defaults(func=_cmd_check_config)
    keygen = command("keygen", with_config=False)
    keygen.add_argument("--bytes", type=int, default=48, help="random bytes (default 48, min 32)")
    keygen.set_defaults(func=_cmd_keygen)
    encode = command("encode")
    encode.add_argument("json", help="the session as a JSON object, e.g. '{\"user\": 1}'")
    encode.set_defaults(func=_cmd_encode)
    decode = command("decode")
    decode.add_argument(
        "cookie",
        nargs="?",
        default="-",
        help="a Cookie header ('session.0=...', 'Cookie: ...') or encode's Set-Cookie lines; "
        "'-' or nothing reads standard input",
    )
    decode.set_defaults(func=_cmd_decode)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return EXIT_FAILURE
    return code
