"""Secret lists (``secrets``, ``migrate.secret_keys``): strings, ``{file: path}``, ``{env: NAME}``.

No message here ever shows a secret's value, only where it came from and its length.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.config_reader import kind

MIN_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class Secret:
    """A signing secret. ``repr`` never shows the value, so it cannot leak into a log."""

    value: bytes = field(repr=False)
    #: Where it came from ("env SESSION_SECRET", "file /run/secrets/x", "inline"), for messages.
    origin: str


def parse_secret_list(
    raw: Any,
    path: str,
    env: Mapping[str, str],
    base_dir: Path,
    errors: list[str],
    *,
    min_bytes: int,
    missing: str,
) -> tuple[Secret, ...]:
    """Read a newest-first list of secrets; ``missing`` is the fix shown when there is none."""
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
        secrets.append(secret)
    values = [s.value for s in secrets]
    if len(set(values)) != len(values):
        errors.append(f"{path}: the same secret is listed twice; list each one once, newest first")
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
        f"{path}: expected a string, {{file: /path}} or {{env: NAME}}, got {kind(item)}"
        " (value not shown)"
    )
    return None
