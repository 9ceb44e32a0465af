"""Configuration: the YAML file, parsed and validated once into frozen, typed objects.

Nothing downstream reads raw dicts. Every problem is reported as a :class:`ConfigError` whose
messages name the key path and the fix; secret values never appear in any message. Each section
has its parser in a ``config_<section>.py`` module; this one holds the top level and re-exports
the section types, so callers import from ``proxy.config`` only.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from proxy.config_cookie import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, CookiePolicy, SameSite, parse_cookie
from proxy.config_migrate import MAX_LEGACY_COOKIE_BYTES, MigrateConfig, parse_migrate
from proxy.config_reader import (
    ConfigError,
    Section,
    kind,
    parse_duration,
    show,
    walk_substitute,
    without_echoes,
)
from proxy.config_readiness import DEFAULT_READINESS, Readiness, parse_readiness
from proxy.config_secrets import MIN_SECRET_BYTES, Secret, parse_secret_list
from proxy.config_session import SessionPolicy, parse_session
from proxy.config_upstreams import Upstream, parse_upstreams

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_PATH",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "MIN_SECRET_BYTES",
    "Config",
    "ConfigError",
    "CookiePolicy",
    "Limits",
    "ListenAddress",
    "LogFormat",
    "MigrateConfig",
    "Readiness",
    "SameSite",
    "Secret",
    "SessionPolicy",
    "Upstream",
    "config_path",
    "default_request_head_bytes",
    "iter_summary",
    "load_config",
    "parse_config",
    "parse_duration",
    "session_limit_problems",
]

DEFAULT_CONFIG_PATH = "config/proxy.yaml"
CONFIG_ENV_VAR = "SESSION_SIDECAR_CONFIG"

LogFormat = Literal["json", "text"]


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


#: Room in a request head beside the session's cookies: the request line and every other field
#: (nginx's large_client_header_buffers hold 4 x 8 KiB for a whole head).
HEAD_ROOM_BYTES = 32 * 1024
#: The least room a configured limits.max_request_head_bytes must leave beside a full session.
MIN_HEAD_ROOM_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int = 131_072
    max_line_bytes: int = 8190
    #: Seconds a client connection may sit with no request in flight (keep-alive, or a request
    #: head that never completes) before it is closed.
    idle_timeout: float = 75.0
    #: Seconds an upload may wait for the client's next body byte (nginx's
    #: client_body_timeout); time the proxy is not reading, held back by the upstream, is
    #: not counted. Past it: 408, or a reset once the response has begun.
    body_timeout: float = 60.0
    #: The whole request head, request line and fields, as it arrives; the default is
    #: :func:`default_request_head_bytes` of the cookie (and migrate) settings.
    max_request_head_bytes: int = 81_792
    #: Client connections one worker serves at once; 0 = derived from RLIMIT_NOFILE at start.
    max_connections: int = 0


def full_session_bytes(cookie: CookiePolicy) -> int:
    """What a full session takes in a ``Cookie`` header: every chunk, with names and "; "."""
    return cookie.chunk_size * cookie.max_chunks + 1024


def default_request_head_bytes(cookie: CookiePolicy, migrate: MigrateConfig | None) -> int:
    """A full session, the largest legacy cookies ``migrate`` reads, and HEAD_ROOM_BYTES."""
    legacy = MAX_LEGACY_COOKIE_BYTES * len(migrate.legacy_names()) if migrate else 0
    return full_session_bytes(cookie) + legacy + HEAD_ROOM_BYTES


def session_limit_problems(
    limits: Limits, cookie: CookiePolicy, session: SessionPolicy
) -> list[str]:
    """Where ``limits`` cannot carry the sessions that ``cookie`` and ``session`` allow."""
    problems = []
    need = full_session_bytes(cookie)
    shape = f"a full session of {cookie.max_chunks} chunks of {cookie.chunk_size} bytes"
    if limits.max_header_bytes < need:
        problems.append(
            f"limits.max_header_bytes: {limits.max_header_bytes} cannot carry {shape}; "
            f"raise it to at least {need}"
        )
    if limits.max_request_head_bytes < need + MIN_HEAD_ROOM_BYTES:
        problems.append(
            f"limits.max_request_head_bytes: {limits.max_request_head_bytes} cannot carry "
            f"{shape} with a request line; raise it to at least {need + MIN_HEAD_ROOM_BYTES}"
        )
    if session.max_json_bytes > limits.max_header_bytes:
        # The proxy's own parsers refuse a field longer than max_header_bytes (name and value
        # together), so a larger session could never come back as X-Set-Session.
        problems.append(
            f"session.max_json_bytes: {session.max_json_bytes} is more than "
            f"limits.max_header_bytes ({limits.max_header_bytes}), so a session that large "
            "could never pass the proxy's own header limit; lower it or raise "
            "limits.max_header_bytes"
        )
    return problems


@dataclass(frozen=True, slots=True)
class Config:
    listen: ListenAddress
    admin_listen: ListenAddress | None
    workers: int
    secrets: tuple[Secret, ...]
    cookie: CookiePolicy
    session: SessionPolicy
    upstreams: tuple[Upstream, ...]
    limits: Limits
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    shutdown_timeout: float
    log_format: LogFormat
    #: Legacy Flask sessions to read and re-issue; None = off.
    migrate: MigrateConfig | None = None
    #: Which upstreams /readyz needs (all of them unless configured).
    readiness: Readiness = DEFAULT_READINESS
    #: Problems that do not stop the proxy (a secret written in the file), for check-config.
    warnings: tuple[str, ...] = ()
    source: str = "<string>"


def _parse_listen(section: Section, name: str, default: str | None) -> ListenAddress | None:
    value = section.get(name)
    if value is None:
        value = default
    if value is None:
        return None
    text = str(value)
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", text)
    if not match:
        section.error(
            name, f"expected host:port (e.g. 0.0.0.0:8080 or [::]:8080), got {show(value)}"
        )
        return None
    host = match.group(1) or match.group(3) or "0.0.0.0"
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        section.error(name, f"port must be 1-65535, got {port}")
        return None
    return ListenAddress(host, port)


def _parse_limits(raw: Any, errors: list[str], head_bytes: int) -> Limits:
    s = Section(raw, "limits", errors)
    d = Limits()
    limits = Limits(
        max_header_bytes=s.int_("max_header_bytes", d.max_header_bytes, 8192, 16 << 20),
        max_line_bytes=s.int_("max_line_bytes", d.max_line_bytes, 1024, 1 << 20),
        idle_timeout=s.number("idle_timeout", d.idle_timeout, 0, 86400),
        body_timeout=s.number("body_timeout", d.body_timeout, 0, 86400),
        max_request_head_bytes=s.int_("max_request_head_bytes", head_bytes, 8192, 16 << 20),
        max_connections=s.int_("max_connections", d.max_connections, 0, 1 << 24),
    )
    s.check_unknown()
    return limits


def _parse_trusted(
    raw: Any, errors: list[str]
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.append(f"trusted_proxies: expected a list of CIDRs like 10.0.0.0/8, got {kind(raw)}")
        return ()
    nets = []
    for i, item in enumerate(raw):
        try:
            nets.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            errors.append(
                f"trusted_proxies[{i}]: expected a CIDR like 10.0.0.0/8, got {show(item)}"
            )
    return tuple(nets)


_SECRET_PATHS = frozenset({"secrets", "migrate.secret_keys"})


def parse_config(
    text: str,
    env: Mapping[str, str] | None = None,
    source: str = "<string>",
    base_dir: Path | None = None,
) -> Config:
    """Parse and validate a YAML configuration. Raises :class:`ConfigError` with every problem."""
    env = os.environ if env is None else env
    errors: list[str] = []
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        if mark and "got '{'" in problem and "${" in text.splitlines()[mark.line]:
            problem += " (in a [...] list write '${VAR}' in quotes, or use a '- ${VAR}' line)"
        raise ConfigError([f"{source}: not valid YAML{where}: {problem}"]) from None
    # Secrets substitute their own ${VAR}s, to tell a reference from a literal.
    raw = walk_substitute(raw, "", env, errors, skip=_SECRET_PATHS)
    warnings: list[str] = []
    top = Section(raw, "", errors)
    listen = _parse_listen(top, "listen", "0.0.0.0:8080")
    admin = _parse_listen(top, "admin_listen", None)
    workers = top.int_("workers", 1, 0, 256)
    base_dir = base_dir or Path.cwd()
    secrets = parse_secret_list(
        top.get("secrets"),
        "secrets",
        env,
        base_dir,
        errors,
        min_bytes=MIN_SECRET_BYTES,
        missing="generate one with: session-sidecar keygen",
        warnings=warnings,
    )
    cookie = parse_cookie(top.get("cookie"), errors)
    session = parse_session(top.get("session"), errors)
    upstreams = parse_upstreams(top.get("upstreams"), errors)
    migrate = parse_migrate(top.get("migrate"), cookie, env, base_dir, errors, warnings)
    readiness = parse_readiness(top.get("readiness"), upstreams, errors)
    limits = _parse_limits(top.get("limits"), errors, default_request_head_bytes(cookie, migrate))
    errors.extend(session_limit_problems(limits, cookie, session))
    trusted = _parse_trusted(top.get("trusted_proxies"), errors)
    shutdown_timeout = top.number("shutdown_timeout", 30.0, 0, 3600)
    log_format = top.choice("log_format", "text", ("json", "text"))
    if listen is not None and admin is not None and listen.port == admin.port:
        errors.append("admin_listen: must not share the proxied port with listen")
    top.check_unknown()
    if errors:
        raise ConfigError(without_echoes(errors))
    assert listen is not None
    return Config(
        listen=listen,
        admin_listen=admin,
        workers=workers,
        secrets=secrets,
        cookie=cookie,
        session=session,
        upstreams=upstreams,
        limits=limits,
        trusted_proxies=trusted,
        shutdown_timeout=shutdown_timeout,
        log_format=log_format,  # type: ignore[arg-type]
        migrate=migrate,
        readiness=readiness,
        warnings=tuple(warnings),
        source=source,
    )


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a configuration file. Raises :class:`ConfigError`."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [f"{file}: cannot read the configuration: {exc.strerror or exc}"]
        ) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{file}: the configuration is not UTF-8 text"]) from None
    return parse_config(text, env=env, source=str(file), base_dir=file.parent)


def config_path(cli_value: str | None, env: Mapping[str, str] | None = None) -> str:
    """``--config`` wins, then ``SESSION_SIDECAR_CONFIG``, then the default path."""
    env = os.environ if env is None else env
    return cli_value or env.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH


def iter_summary(config: Config) -> Iterator[str]:
    """Human summary lines for ``check-config``: shapes and counts, never secret values."""
    c = config.cookie
    yield f"listen        {config.listen}"
    yield f"admin_listen  {config.admin_listen or 'off'}"
    yield f"workers       {config.workers or 'one per CPU'}"
    yield f"secrets       {len(config.secrets)} (newest first signs; all verify)"
    yield (
        f"cookie        {c.name}.0..{c.name}.{c.max_chunks - 1}, {c.chunk_size} B each, "
        f"max_age {c.max_age}s, secure={c.secure}, same_site={c.same_site}"
    )
    mode = "encrypted (AES-256-GCM)" if config.session.encrypt else "signed (HMAC-SHA256)"
    yield f"session       {mode}"
    for up in config.upstreams:
        host = up.match_host or "*"
        route = f"{host}{up.path_prefix}"
        session = "" if up.forward_session else ", no session"
        yield f"upstream      {up.name}: {route} -> {up.url} (timeout {up.timeout:g}s{session})"
    limits = config.limits
    connections = (
        f"{limits.max_connections} connections a worker"
        if limits.max_connections
        else "connections a worker from RLIMIT_NOFILE ((limit - 64) / 2)"
    )
    yield (
        f"limits        head {limits.max_request_head_bytes} B, field "
        f"{limits.max_header_bytes} B, {connections}, idle {limits.idle_timeout:g}s"
    )
    m = config.migrate
    if m is not None:
        names = m.cookie_name if m.format == "flask" else f"{m.cookie_name}:0..{m.cookie_name}:9"
        yield (
            f"migrate       {m.format} cookie {names}, {len(m.secret_keys)} key(s), "
            f"max_age {m.max_age}s, salt {m.salt!r}, {m.digest}"
        )
