"""The README's commands as a newcomer pastes them (issue 18).

``tests/integration/test_make_run.py`` runs the encode and decode block against ``make run``;
here, the rules every command in the README follows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from proxy.config_secrets import DEVELOPMENT_SECRET

README: Final = Path(__file__).resolve().parents[2] / "README.md"
COMMANDS: Final = ("serve", "check-config", "keygen", "encode", "decode", "COMMAND")
#: ``session-sidecar <command>`` not reached through a path: only on PATH inside the image.
BARE: Final = re.compile(rf"(?<![/\w.-])session-sidecar (?:{'|'.join(COMMANDS)})\b")


def code_in(markdown: str) -> list[str]:
    """Every fenced block and every inline code span, in order."""
    fenced = re.findall(r"```[a-z]*\n(.*?)```", markdown, re.DOTALL)
    prose = re.sub(r"```[a-z]*\n.*?```", "", markdown, flags=re.DOTALL)
    return fenced + re.findall(r"`([^`\n]+)`", prose)


def test_no_readme_command_runs_a_bare_session_sidecar() -> None:
    """``make run`` installs it in .venv-run/bin, which is not on PATH."""
    bare = [code for code in code_in(README.read_text()) if BARE.search(code)]
    assert bare == [], bare


def test_the_readme_gives_the_development_secret_make_run_sets() -> None:
    secret = DEVELOPMENT_SECRET.decode()  # the Makefile's (tests/unit/test_cli.py)
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.DOTALL)
    (block,) = [b for b in blocks if "session-sidecar encode" in b]
    assert f'export SESSION_SECRET="${{SESSION_SECRET:-{secret}}}"' in block
