"""Configuration: the YAML file, parsed and validated once into frozen, typed objects.

Nothing downstream reads raw dicts. Every problem is reported as a :class:`ConfigError` whose
messages name the key path and the fix; secret values never appear in any message.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

DEFAULT_CONFIG_PATH = "config/proxy.yaml"
CONFIG_ENV_VAR = "SESSION_SIDECAR_CONFIG"

MIN_SECRET_BYTES = 32
#: RFC 6265 section 6.1: browsers store at least 4096 bytes per cookie, counting name, value
#: and the "=" sign. Chromium and Firefox count name+value (4096), Safari is a little stricter,
#: so name=value is kept to 4093 to stay clear of every implementation's rounding.
MAX_CHUNK_SIZE = 4093
MIN_CHUNK_SIZE = 256

SameSite = Literal["lax", "strict", "none"]
LogFormat = Literal["json", "text"]


class ConfigError(Exception):
    """The configuration is unusable. ``errors`` lists every problem, one per key path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Secret:
    """A signing secret. ``repr`` never shows the value, so it cannot leak into a log."""

    value: bytes = field(repr=False)
    #: Where it came from ("env SESSION_SECRET", "file /run/secrets/x", "inline"), for messages.
    origin: str


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    name: str = "session"
    path: str = "/"
    domain: str | None = None
    secure: bool = True
    http_only: bool = True
    same_site: SameSite = "lax"
    #: Seconds. Both the cookie's Max-Age and the server-side expiry of the signed timestamp.
    max_age: int = 1_209_600
    chunk_size: int = 4000
    max_chunks: int = 12


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    header: str = "X-Session"
    set_header: str = "X-Set-Session"
    status_header: str = "X-Session-Status"
    encrypt: bool = False
    #: Compress with zlib when that makes the cookie shorter.
    compress: bool = True
    #: Re-issue a valid cookie older than this many seconds (sliding expiry); None = never.
    refresh_after: int | None = None
    #: Largest session JSON accepted from a backend and largest decompressed payload accepted
    #: from a cookie (the decompression-bomb cap).
    max_json_bytes: int = 131_072


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    url: str
    scheme: str
    host: str
    port: int
    #: Path of the upstream URL without a trailing slash ("" for none), prepended on forwarding.
    base_path: str
    path_prefix: str = "/"
    match_host: str | None = None
    strip_prefix: bool = False
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int = 131_072
    max_line_bytes: int = 8190
    #: Seconds a client connection may sit with no request in flight (keep-alive, or a request
    #: head that never completes) before it is closed.
    idle_timeout: float = 75.0


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
    source: str = "<string>"


# --- environment substitution -------------------------------------------------------------

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _substitute_env(value: str, path: str, env: Mapping[str, str], errors: list[str]) -> str:
    """Replace ``${VAR}`` with the environment's value; ``$$`` is a literal ``$``."""

    def repl(match: re.Match[str]) -> str:
        var = match.group(1)
        if var is None:
            return "$"
        if var not in env:
            errors.append(
                f"{path}: environment variable {var} is not set (set it or remove ${{{var}}})"
            )
            return ""
        return env[var]

    return _ENV_REF.sub(repl, value)


def _walk_substitute(node: Any, path: str, env: Mapping[str, str], errors: list[str]) -> Any:
    # Substituted after YAML parsing, so a value with ':' or '#' cannot change the structure.
    if isinstance(node, str):
        return _substitute_env(node, path, env, errors)
    if isinstance(node, dict):
        return {k: _walk_substitute(v, _join(path, str(k)), env, errors) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk_substitute(v, f"{path}[{i}]", env, errors) for i, v in enumerate(node)]
    return node


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- typed readers ------------------------------------------------------------------------


class _Section:
    """A mapping being read: tracks the key path and reports unknown keys."""

    def __init__(self, raw: Any, path: str, errors: list[str]) -> None:
        self.path = path
        self.errors = errors
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            errors.append(f"{path or 'config'}: expected a mapping, got {_kind(raw)}")
            raw = {}
        self.raw: dict[str, Any] = raw
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return _join(self.path, name)

    def get(self, name: str) -> Any:
        self.seen.add(name)
        return self.raw.get(name)

    def error(self, name: str, message: str) -> None:
        self.errors.append(f"{self.key(name)}: {message}")

    def str_(self, name: str, default: str, pattern: re.Pattern[str] | None = None) -> str:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            self.error(name, f"expected a non-empty string, got {_show(value)}")
            return default
        if pattern is not None and not pattern.fullmatch(value):
            self.error(name, f"{_show(value)} is not allowed here")
            return default
        return value

    def opt_str(self, name: str) -> str | None:
        value = self.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.error(name, f"expected a non-empty string or null, got {_show(value)}")
            return None
        return value

    def bool_(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(name, f"expected true or false, got {_show(value)}")
            return default
        return value

    def int_(self, name: str, default: int, low: int, high: int) -> int:
        value = self.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(name, f"expected an integer, got {_show(value)}")
            return default
        if not low <= value <= high:
            self.error(name, f"must be between {low} and {high}, got {value}")
            return default
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(name, f"expected a number of seconds, got {_show(value)}")
            return default
        if not low < value <= high:
            self.error(name, f"must be more than {low:g} and at most {high:g}, got {value:g}")
            return default
        return float(value)

    def duration(self, name: str, default: int | None) -> int | None:
        value = self.get(name)
        if value is None:
            return default
        seconds = parse_duration(value)
        if seconds is None or seconds <= 0:
            self.error(
                name,
                "expected seconds or a duration like '14d', '12h', '30m', '45s', "
                f"got {_show(value)}",
            )
            return default
        return seconds

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> str:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, str) or value.lower() not in options:
            self.error(name, f"expected one of {' | '.join(options)}, got {_show(value)}")
            return default
        return value.lower()

    def check_unknown(self) -> None:
        for name in self.raw:
            if name not in self.seen:
                hint = f"; known keys: {', '.join(sorted(self.seen))}" if self.seen else ""
                self.errors.append(f"{self.key(str(name))}: unknown key{hint}")


_DURATION = re.compile(r"\s*(\d+)\s*([smhd]?)\s*")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> int | None:
    """``1209600``, ``"14d"``, ``"12h"``, ``"30m"``, ``"45s"`` -> seconds; None if malformed."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match:
            return int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    return None


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else type(value).__name__


def _show(value: object) -> str:
    if isinstance(value, dict | list):
        return _kind(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- sections -----------------------------------------------------------------------------

#: RFC 9110 section 5.1: a field name is a token.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: RFC 6265 section 4.1.1: cookie-name is a token; chunk suffixes add ".N".
_COOKIE_NAME = re.compile(r"[!#$%&'*+^_`|~0-9A-Za-z-]+")
_HOST_PATTERN = re.compile(
    r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)


def _parse_listen(section: _Section, name: str, default: str | None) -> ListenAddress | None:
    value = section.get(name)
    if value is None:
        value = default
    if value is None:
        return None
    text = str(value)
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", text)
    if not match:
        section.error(
            name, f"expected host:port (e.g. 0.0.0.0:8080 or [::]:8080), got {_show(value)}"
        )
        return None
    host = match.group(1) or match.group(3) or "0.0.0.0"
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        section.error(name, f"port must be 1-65535, got {port}")
        return None
    return ListenAddress(host, port)


def _parse_secrets(
    raw: Any, env: Mapping[str, str], base_dir: Path, errors: list[str]
) -> tuple[Secret, ...]:
    if raw is None or raw == []:
        errors.append(
            "secrets: at least one secret is required (newest first); "
            "generate one with: session-sidecar keygen"
        )
        return ()
    if not isinstance(raw, list):
        errors.append(f"secrets: expected a list of secrets (newest first), got {_kind(raw)}")
        return ()
    secrets: list[Secret] = []
    for i, item in enumerate(raw):
        path = f"secrets[{i}]"
        secret = _read_secret(item, path, env, base_dir, errors)
        if secret is None:
            continue
        if len(secret.value) < MIN_SECRET_BYTES:
            # The length is not secret-bearing enough to matter; the value is never shown.
            errors.append(
                f"{path}: secret from {secret.origin} is {len(secret.value)} bytes, need at least "
                f"{MIN_SECRET_BYTES}; generate one with: session-sidecar keygen"
            )
            continue
        secrets.append(secret)
    values = [s.value for s in secrets]
    if len(set(values)) != len(values):
        errors.append("secrets: the same secret is listed twice; list each one once, newest first")
    return tuple(secrets)


def _read_secret(
    item: Any, path: str, env: Mapping[str, str], base_dir: Path, errors: list[str]
) -> Secret | None:
    if isinstance(item, str):
        if not item:
            errors.append(f"{path}: the secret is empty (is its environment variable empty?)")
            return None
        return Secret(item.encode(), "the configuration")
    if isinstance(item, dict) and set(item) == {"file"} and isinstance(item["file"], str):
        file = Path(item["file"])
        if not file.is_absolute():
            file = base_dir / file
        try:
            data = file.read_bytes()
        except OSError as exc:
            errors.append(f"{path}.file: cannot read {file}: {exc.strerror or exc}")
            return None
        # Docker and Kubernetes secret files usually end with a newline that is not the secret.
        return Secret(data.rstrip(b"\r\n"), f"file {file}")
    if isinstance(item, dict) and set(item) == {"env"} and isinstance(item["env"], str):
        var = item["env"]
        if var not in env:
            errors.append(f"{path}.env: environment variable {var} is not set")
            return None
        return Secret(env[var].encode(), f"env {var}")
    errors.append(
        f"{path}: expected a string, {{file: /path}} or {{env: NAME}}, got {_kind(item)}"
        " (value not shown)"
    )
    return None


def _parse_cookie(raw: Any, errors: list[str]) -> CookiePolicy:
    s = _Section(raw, "cookie", errors)
    d = CookiePolicy()
    name = s.str_("name", d.name)
    if not _COOKIE_NAME.fullmatch(name):
        s.error("name", f"{name!r} is not a valid cookie name (letters, digits, -_ and no '.')")
    path = s.str_("path", d.path)
    if not path.startswith("/") or any(c in path for c in ";, \t\r\n"):
        s.error("path", f"expected an absolute path like '/', got {_show(path)}")
    domain = s.opt_str("domain")
    if domain is not None and not _HOST_PATTERN.fullmatch(domain.lstrip(".")):
        s.error("domain", f"expected a domain like example.com, got {_show(domain)}")
    secure = s.bool_("secure", d.secure)
    same_site = s.choice("same_site", d.same_site, ("lax", "strict", "none"))
    if same_site == "none" and not secure:
        # Browsers reject SameSite=None cookies that are not Secure (RFC 6265bis section 5.4.7).
        s.error("same_site", "'none' requires secure: true (browsers drop such cookies otherwise)")
    max_age = s.duration("max_age", d.max_age)
    chunk_size = s.int_("chunk_size", d.chunk_size, MIN_CHUNK_SIZE, 1 << 30)
    if chunk_size > MAX_CHUNK_SIZE:
        s.error(
            "chunk_size",
            f"{chunk_size} is more than browsers accept for name=value; "
            f"use at most {MAX_CHUNK_SIZE}",
        )
        chunk_size = d.chunk_size
    max_chunks = s.int_("max_chunks", d.max_chunks, 1, 64)
    http_only = s.bool_("http_only", d.http_only)
    s.check_unknown()
    return CookiePolicy(
        name=name,
        path=path,
        domain=domain,
        secure=secure,
        http_only=http_only,
        same_site=same_site,  # type: ignore[arg-type]
        max_age=max_age or d.max_age,
        chunk_size=chunk_size,
        max_chunks=max_chunks,
    )


def _parse_session(raw: Any, errors: list[str]) -> SessionPolicy:
    s = _Section(raw, "session", errors)
    d = SessionPolicy()
    header = s.str_("header", d.header, _TOKEN)
    set_header = s.str_("set_header", d.set_header, _TOKEN)
    status_header = s.str_("status_header", d.status_header, _TOKEN)
    names = [_canonical_header(h) for h in (header, set_header, status_header)]
    if len(set(names)) != 3:
        s.errors.append(
            "session: header, set_header and status_header must be three different names"
        )
    policy = SessionPolicy(
        header=header,
        set_header=set_header,
        status_header=status_header,
        encrypt=s.bool_("encrypt", d.encrypt),
        compress=s.bool_("compress", d.compress),
        refresh_after=s.duration("refresh_after", None),
        max_json_bytes=s.int_("max_json_bytes", d.max_json_bytes, 2, 16 << 20),
    )
    s.check_unknown()
    return policy


def _canonical_header(name: str) -> str:
    return name.lower().replace("_", "-")


def _parse_upstreams(raw: Any, errors: list[str]) -> tuple[Upstream, ...]:
    if raw is None or raw == []:
        errors.append(
            "upstreams: at least one upstream is required, e.g. [{url: http://127.0.0.1:8000}]"
        )
        return ()
    if not isinstance(raw, list):
        errors.append(f"upstreams: expected a list of upstreams, got {_kind(raw)}")
        return ()
    # Keyed by position in the file, so messages name the right entry even after a bad one.
    parsed: dict[int, Upstream] = {}
    for i, item in enumerate(raw):
        upstream = _parse_upstream(item, f"upstreams[{i}]", errors)
        if upstream is not None:
            parsed[i] = upstream
    names: dict[str, int] = {}
    routes: dict[tuple[str | None, str], int] = {}
    for i, up in parsed.items():
        if up.name in names:
            errors.append(f"upstreams[{i}].name: {up.name!r} is already used; names must be unique")
        names.setdefault(up.name, i)
        route = (up.match_host, up.path_prefix)
        if route in routes:
            errors.append(
                f"upstreams[{i}]: same host and path_prefix as upstreams[{routes[route]}];"
                " it could never be chosen"
            )
        routes.setdefault(route, i)
    return tuple(parsed.values())


def _parse_upstream(raw: Any, path: str, errors: list[str]) -> Upstream | None:
    s = _Section(raw, path, errors)
    before = len(errors)
    url = s.get("url")
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:  # e.g. an unclosed IPv6 bracket
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        s.error("url", f"expected http:// or https:// URL, got {_show(url)}")
        parts = None
    elif parts.query or parts.fragment or parts.username:
        s.error("url", f"expected a URL without query, fragment or credentials, got {_show(url)}")
        parts = None
    port: int | None = None
    if parts is not None:
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            s.error("url", f"bad port in {_show(url)}")
    prefix = s.str_("path_prefix", "/")
    if not prefix.startswith("/"):
        s.error("path_prefix", f"must start with '/', got {_show(prefix)}")
    prefix = "/" + prefix.strip("/")
    match_host = s.opt_str("host")
    if match_host is not None:
        if not _HOST_PATTERN.fullmatch(match_host):
            s.error("host", f"expected an exact host or *.example.com, got {_show(match_host)}")
        match_host = match_host.lower()
    default_name = f"{parts.hostname}:{port}" if parts is not None and port else f"upstream{path}"
    name = s.str_("name", default_name)
    strip_prefix = s.bool_("strip_prefix", False)
    timeout = s.number("timeout", 30.0, 0, 3600)
    s.check_unknown()
    if parts is None or port is None or len(errors) > before:
        return None
    assert parts.hostname is not None
    return Upstream(
        name=name,
        url=str(url),
        scheme=parts.scheme,
        host=parts.hostname,
        port=port,
        base_path=parts.path.rstrip("/"),
        path_prefix=prefix,
        match_host=match_host,
        strip_prefix=strip_prefix,
        timeout=timeout,
    )


def _parse_limits(raw: Any, errors: list[str]) -> Limits:
    s = _Section(raw, "limits", errors)
    d = Limits()
    limits = Limits(
        max_header_bytes=s.int_("max_header_bytes", d.max_header_bytes, 8192, 16 << 20),
        max_line_bytes=s.int_("max_line_bytes", d.max_line_bytes, 1024, 1 << 20),
        idle_timeout=s.number("idle_timeout", d.idle_timeout, 0, 86400),
    )
    s.check_unknown()
    return limits


def _parse_trusted(
    raw: Any, errors: list[str]
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.append(
            f"trusted_proxies: expected a list of CIDRs like 10.0.0.0/8, got {_kind(raw)}"
        )
        return ()
    nets = []
    for i, item in enumerate(raw):
        try:
            nets.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            errors.append(
                f"trusted_proxies[{i}]: expected a CIDR like 10.0.0.0/8, got {_show(item)}"
            )
    return tuple(nets)


_TOP_KEYS = (
    "listen",
    "admin_listen",
    "workers",
    "secrets",
    "cookie",
    "session",
    "upstreams",
    "limits",
    "trusted_proxies",
    "shutdown_timeout",
    "log_format",
)


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
        raise ConfigError([f"{source}: not valid YAML{where}: {problem}"]) from None
    raw = _walk_substitute(raw, "", env, errors)
    top = _Section(raw, "", errors)
    listen = _parse_listen(top, "listen", "0.0.0.0:8080")
    admin = _parse_listen(top, "admin_listen", None)
    workers = top.int_("workers", 1, 0, 256)
    secrets = _parse_secrets(top.get("secrets"), env, base_dir or Path.cwd(), errors)
    cookie = _parse_cookie(top.get("cookie"), errors)
    session = _parse_session(top.get("session"), errors)
    upstreams = _parse_upstreams(top.get("upstreams"), errors)
    limits = _parse_limits(top.get("limits"), errors)
    if limits.max_header_bytes < cookie.chunk_size * cookie.max_chunks + 1024:
        errors.append(
            f"limits.max_header_bytes: {limits.max_header_bytes} cannot carry a full session of "
            f"{cookie.max_chunks} chunks of {cookie.chunk_size} bytes; raise it to at least "
            f"{cookie.chunk_size * cookie.max_chunks + 1024}"
        )
    trusted = _parse_trusted(top.get("trusted_proxies"), errors)
    shutdown_timeout = top.number("shutdown_timeout", 30.0, 0, 3600)
    log_format = top.choice("log_format", "text", ("json", "text"))
    if listen is not None and admin is not None and listen.port == admin.port:
        errors.append("admin_listen: must not share the proxied port with listen")
    top.check_unknown()
    if errors:
        raise ConfigError(errors)
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
        yield f"upstream      {up.name}: {route} -> {up.url} (timeout {up.timeout:g}s)"
