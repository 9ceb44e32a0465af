"""Secret lists (``secrets``, ``migrate.secret_keys``): strings, ``{file: path}``, ``{env: NAME}``.

No message here ever shows a secret's value, only where it came from and its length.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from proxy.config_reader import kind, substitute_env, walk_substitute

MIN_SECRET_BYTES = 32
#: What ``make run`` and ``make check-config`` put in SESSION_SECRET when it is unset (the
#: Makefile; tests/unit/test_cli.py keeps the two equal). It is published with the source, so
#: anyone can sign sessions with it.
DEVELOPMENT_SECRET: Final = b"dev-only-secret-change-me-0123456789abcdef"


@dataclass(frozen=True, slots=True)
class Secret:
    """A signing secret. ``repr`` never shows the value, so it cannot leak into a log."""

    value: bytes = field(repr=False)
    #: Where it came from ("env SESSION_SECRET", "file /run/secrets/x", "the configuration").
    origin: str
    #: Written as-is in the YAML file, so anyone who can read the file can forge sessions.
    literal: bool = False


def parse_secret_list(
    raw: Any,
    path: str,
    env: Mapping[str, str],
    base_dir: Path,
    errors: list[str],
    *,
    min_bytes: int,
    missing: str,
    warnings: list[str] | None = None,
) -> tuple[Secret, ...]:
    """Read a newest-first list of secrets; ``missing`` is the fix shown when there is none.

    ``raw`` is the list as written, before ``${VAR}`` substitution (see ``walk_substitute``'s
    ``skip``). A secret written literally in the file is accepted with a line in ``warnings``.
    """
    if raw is None or raw == []:
        errors.append(f"{path}: at least one secret is required (newest first); {missing}")
        return ()
    if not isinstance(raw, list):
        errors.append(f"{path}: expected a list of secrets (newest first), got {kind(raw)}")
        return ()
    secrets: list[Secret] = []
    for i, item in enumerate(raw):
        item_path = f"{path}[{i}]"
        secret = _read_secret(item, item_path, env, base_dir, errors)
        if secret is None:
            continue
        if len(secret.value) < min_bytes:
            # The length is not secret-bearing enough to matter; the value is never shown.
            errors.append(
                f"{item_path}: secret from {secret.origin} is {len(secret.value)} bytes, need at "
                f"least {min_bytes}; generate one with: session-sidecar keygen"
            )
            continue
        if secret.literal and warnings is not None:
            warnings.append(
                f"{item_path}: the secret is written in the configuration file itself; anyone "
                "who can read the file can forge sessions. Use ${NAME}, {env: NAME} or "
                "{file: /path} instead"
            )
        secrets.append(secret)
    values = [s.value for s in secrets]
    if len(set(values)) != len(values):
        errors.append(f"{path}: the same secret is listed twice; list each one once, newest first")
    return tuple(secrets)


def development_secret_warning(secrets: tuple[Secret, ...]) -> str | None:
    """A loud line when the development secret signs or verifies sessions, else None."""
    for index, secret in enumerate(secrets):
        if secret.value == DEVELOPMENT_SECRET:
            role = "signs" if index == 0 else "verifies"
            return (
                f"!!! WARNING: secrets[{index}] ({secret.origin}) is the development secret "
                f"that `make run` sets and this repository publishes: it {role} sessions, so "
                "anyone can forge one. For anything but a local try-out, set SESSION_SECRET to "
                "the output of `session-sidecar keygen`."
            )
    return None


def _read_secret(
    item: Any, path: str, env: Mapping[str, str], base_dir: Path, errors: list[str]
) -> Secret | None:
    if isinstance(item, str):
        return _read_string_secret(item, path, env, errors)
    before = len(errors)
    item = walk_substitute(item, path, env, errors)
    if len(errors) > before:
        return None  # an unset variable in a file path: reported once, nothing to read
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
        f"{path}: expected a string, {{file: /path}} or {{env: NAME}}, got {kind(item)}"
        " (value not shown)"
    )
    return None


#: ``$$`` (a literal ``$``), ``${NAME}``, or a ``$`` that starts something else.
_DOLLAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_{][A-Za-z0-9_]*)?")


def _read_string_secret(
    text: str, path: str, env: Mapping[str, str], errors: list[str]
) -> Secret | None:
    refs: list[str] = []
    for match in _DOLLAR.finditer(text):
        if match.group(1):
            refs.append(match.group(1))
        elif match.group(2):
            # "$PROD_SECRET" would sign with that public string. Only a bare reference is
            # named in the message: inside a longer string it may be part of a real secret.
            name = match.group(2).lstrip("{")
            bare = match.group(0) == text and name
            errors.append(
                f"{path}: write ${{{name}}} to use environment variable {name}, "
                f"not {text} (or $$ for a literal $)"
                if bare
                else f"{path}: '$' is not followed by {{NAME}}; write ${{NAME}} for an environment"
                " variable or $$ for a literal $ (value not shown)"
            )
            return None
    before = len(errors)
    value = substitute_env(text, path, env, errors)
    if len(errors) > before:
        return None  # the unset variable is already reported; an "empty secret" would repeat it
    if not value:
        errors.append(f"{path}: the secret is empty (is its environment variable empty?)")
        return None
    if not refs:
        return Secret(value.encode(), "the configuration", literal=True)
    if text == f"${{{refs[0]}}}":
        return Secret(value.encode(), f"env {refs[0]}")
    return Secret(value.encode(), f"the configuration with {', '.join(refs)}")
