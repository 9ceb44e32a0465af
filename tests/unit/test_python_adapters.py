"""The three Python adapters repeat one set of rules, so that each installs alone (issue 18).

Flask's, Django's and the ASGI adapter each carry the merge-patch rules in their one file
rather than depend on a shared package (a sibling folder is no dependency pip can install from
``pip install ./adapters/django``). These tests keep the copies the same, read as source: no
framework is imported here.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

import pytest

ADAPTERS: Final = Path(__file__).resolve().parents[2] / "adapters"
MODULES: Final = {
    "flask": ADAPTERS / "flask" / "session_sidecar_flask.py",
    "django": ADAPTERS / "django" / "session_sidecar_django.py",
    "asgi": ADAPTERS / "asgi" / "session_sidecar_asgi.py",
}
#: The rules each adapter must carry word for word, and the header names they use.
SHARED: Final = (
    "dump_json",
    "read_session",
    "session_header",
    "merge_patch_diff",
    "_holds_member_null",
)
HEADERS: Final = ("SESSION_HEADER", "STATUS_HEADER", "SET_HEADER", "PATCH_HEADER")


def definitions(path: Path) -> dict[str, str]:
    """Each top-level function and constant of ``path``, as a dump of its syntax tree."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = ast.dump(node)
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            found[node.targets[0].id] = ast.dump(node.value)
    return found


@pytest.mark.parametrize("name", [*SHARED, *HEADERS])
@pytest.mark.parametrize("adapter", ["django", "asgi"])
def test_the_adapter_carries_flasks_rule_word_for_word(adapter: str, name: str) -> None:
    flask = definitions(MODULES["flask"])
    assert name in flask, f"session_sidecar_flask.py has no {name}"
    assert definitions(MODULES[adapter]).get(name) == flask[name]
