"""Reading raw YAML values: key paths, typed getters, ``${VAR}`` substitution, durations.

Shared by every ``config_*`` section parser. Problems are appended to an ``errors`` list as
``key.path: problem + fix``, so one run reports all of them; no value here is ever a secret's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


class ConfigError(Exception):
    """The configuration is unusable. ``errors`` lists every problem, one per key path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# --- environment substitution -------------------------------------------------------------

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: In every message about an unset variable, right after the key path.
_UNSET = ": environment variable "


def substitute_env(value: str, path: str, env: Mapping[str, str], errors: list[str]) -> str:
    """Replace ``${VAR}`` with the environment's value; ``$$`` is a literal ``$``."""

    def repl(match: re.Match[str]) -> str:
        var = match.group(1)
        if var is None:
            return "$"
        if var not in env:
            errors.append(f"{path}{_UNSET}{var} is not set (set it or remove ${{{var}}})")
            return ""
        return env[var]

    return _ENV_REF.sub(repl, value)


def walk_substitute(
    node: Any,
    path: str,
    env: Mapping[str, str],
    errors: list[str],
    skip: frozenset[str] = frozenset(),
) -> Any:
    """Substitute ``${VAR}`` in every string value of a parsed YAML tree (never in keys).

    Key paths in ``skip`` are left as written, for a parser that must see the ``${...}`` itself
    (secrets: to tell a reference from a literal).
    """
    # Substituted after YAML parsing, so a value with ':' or '#' cannot change the structure.
    if path in skip:
        return node
    if isinstance(node, str):
        return substitute_env(node, path, env, errors)
    if isinstance(node, dict):
        return {
            k: walk_substitute(v, join(path, str(k)), env, errors, skip) for k, v in node.items()
        }
    if isinstance(node, list):
        return [walk_substitute(v, f"{path}[{i}]", env, errors, skip) for i, v in enumerate(node)]
    return node


def without_echoes(errors: list[str]) -> list[str]:
    """``errors`` minus those an unset variable caused at its own key path (an empty
    ``listen`` after ``${LISTEN}``, say): the unset variable is the one problem to report."""
    unset = {e.partition(": ")[0] for e in errors if _UNSET in e}
    return [e for e in errors if _UNSET in e or e.partition(": ")[0] not in unset]


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- typed readers ------------------------------------------------------------------------


class Section:
    """A mapping being read: tracks the key path and reports unknown keys."""

    def __init__(self, raw: Any, path: str, errors: list[str]) -> None:
        self.path = path
        self.errors = errors
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            errors.append(f"{path or 'config'}: expected a mapping, got {kind(raw)}")
            raw = {}
        self.raw: dict[str, Any] = raw
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return join(self.path, name)

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
            self.error(name, f"expected a non-empty string, got {show(value)}")
            return default
        if pattern is not None and not pattern.fullmatch(value):
            self.error(name, f"{show(value)} is not allowed here")
            return default
        return value

    def opt_str(self, name: str) -> str | None:
        value = self.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.error(name, f"expected a non-empty string or null, got {show(value)}")
            return None
        return value

    def bool_(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(name, f"expected true or false, got {show(value)}")
            return default
        return value

    def int_(self, name: str, default: int, low: int, high: int) -> int:
        value = self.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(name, f"expected an integer, got {show(value)}")
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
            self.error(name, f"expected a number of seconds, got {show(value)}")
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
                f"got {show(value)}",
            )
            return default
        return seconds

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> str:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, str) or value.lower() not in options:
            self.error(name, f"expected one of {' | '.join(options)}, got {show(value)}")
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


def kind(value: object) -> str:
    """What a YAML value is, in words, for a message that must not show it."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else type(value).__name__


def show(value: object) -> str:
    """A short repr of a (non-secret) value for a message."""
    if isinstance(value, dict | list):
        return kind(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


#: RFC 9110 section 5.1: a field name is a token.
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: RFC 6265 section 4.1.1: cookie-name is a token; chunk suffixes add ".N".
COOKIE_NAME = re.compile(r"[!#$%&'*+^_`|~0-9A-Za-z-]+")
HOST_PATTERN = re.compile(
    r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
