"""Every pyproject.toml in the repository builds without setuptools' deprecation banners.

setuptools deprecates ``project.license`` as a TOML table (builds "will no longer be supported"
after 2027-02-18); PEP 639's SPDX string replaces it, from setuptools 77 on (issue 18). The
builds themselves, and that they print no warning, are in tests/integration/test_packages.py.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Final

import pytest
from packaging.licenses import canonicalize_license_expression
from packaging.requirements import Requirement
from packaging.version import Version

REPO: Final = Path(__file__).resolve().parents[2]
SKIPPED_DIRS: Final = {".git", ".venv", ".venv-run", "node_modules", "build", "dist"}


def pyprojects() -> list[Path]:
    found = []
    for path in REPO.rglob("pyproject.toml"):
        if not SKIPPED_DIRS & set(path.relative_to(REPO).parts):
            found.append(path)
    return sorted(found)


def read(path: Path) -> dict[str, Any]:
    with path.open("rb") as file:
        return tomllib.load(file)


def test_the_adapters_have_their_own_pyprojects() -> None:
    assert REPO / "pyproject.toml" in pyprojects()
    assert REPO / "adapters" / "flask" / "pyproject.toml" in pyprojects()


@pytest.mark.parametrize("path", pyprojects(), ids=lambda p: str(p.relative_to(REPO)))
def test_license_is_an_spdx_expression(path: Path) -> None:
    license_ = read(path)["project"]["license"]
    assert isinstance(license_, str), f"{path}: project.license must be an SPDX string"
    assert canonicalize_license_expression(license_) == license_


@pytest.mark.parametrize("path", pyprojects(), ids=lambda p: str(p.relative_to(REPO)))
def test_the_build_asks_for_a_setuptools_that_reads_spdx_licenses(path: Path) -> None:
    system = read(path)["build-system"]
    assert system["build-backend"] == "setuptools.build_meta"
    (setuptools,) = [
        Requirement(r) for r in system["requires"] if Requirement(r).name == "setuptools"
    ]
    assert not setuptools.specifier.contains(Version("76.99")), setuptools
    assert setuptools.specifier.contains(Version("77.0.0")), setuptools
