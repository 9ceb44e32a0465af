"""What ``make test`` does to the machine, as the README tells a newcomer (issue 18).

``make deps`` (scripts/install-system-deps.sh) runs against stand-in ``apt-get``,
``dpkg-query`` and ``id`` commands on PATH, which record what they are asked and play a small
install, so the script's own lines are checked without touching the machine's packages.
``make distclean``'s script (scripts/distclean.sh) runs on directories of the test's own, named
by the same variables as the real ones. The README's package list is the installer's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

from tests.integration.backends import REPO_ROOT

pytestmark = pytest.mark.integration

INSTALLER: Final = REPO_ROOT / "scripts" / "install-system-deps.sh"
DISTCLEAN: Final = REPO_ROOT / "scripts" / "distclean.sh"
README: Final = REPO_ROOT / "README.md"
TIMEOUT: Final = 60.0

#: dpkg-query prints the state file: what is installed, as "ii name=version".
FAKE_DPKG_QUERY: Final = """#!/bin/sh
sed 's/^/ii /' "$FAKE_STATE"
"""
#: apt-get records its arguments; `install` adds each package and upgrades base-files.
FAKE_APT_GET: Final = """#!/bin/sh
echo "$*" >>"$FAKE_CALLS"
echo "apt's own chatter that the script keeps in its log"
[ "$1" = install ] || exit 0
[ -z "$FAKE_APT_FAILS" ] || { echo "E: Unable to locate package $FAKE_APT_FAILS" >&2; exit 100; }
for arg in "$@"; do
  case "$arg" in -*|install) ;; *) echo "$arg=1.0" >>"$FAKE_STATE" ;; esac
done
echo "libfake-dependency=2.0" >>"$FAKE_STATE"
sed -i 's/^base-files=12.4$/base-files=12.5/' "$FAKE_STATE"
"""
FAKE_ID: Final = """#!/bin/sh
[ "$1" = -u ] && { echo 0; exit 0; }
exec /usr/bin/id "$@"
"""


def stand_ins(tmp_path: Path) -> dict[str, str]:
    """PATH with the stand-ins first, and the files they share."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (
        ("apt-get", FAKE_APT_GET),
        ("dpkg-query", FAKE_DPKG_QUERY),
        ("id", FAKE_ID),
    ):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    state = tmp_path / "dpkg-state"
    state.write_text("base-files=12.4\nbash=5.2\n")
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_STATE": str(state),
        "FAKE_CALLS": str(tmp_path / "apt-calls"),
        "TMPDIR": str(tmp_path),
        # Not a command anywhere: the one package the installer is sure to need.
        "SIDECAR_EXTRA_DEBS": "sidecar-test-only-tool",
    }


def run_installer(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALLER)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


# --- make deps --------------------------------------------------------------------------------


def test_make_deps_says_what_each_apt_phase_does_and_how_long_it_usually_takes(
    tmp_path: Path,
) -> None:
    done = run_installer(stand_ins(tmp_path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    phases = [line for line in lines if line.startswith("[make deps] apt-get ")]
    assert len(phases) == 2, done.stdout
    update, install = phases
    assert update.startswith("[make deps] apt-get update:")
    assert "sidecar-test-only-tool" in install
    for phase in phases:
        assert re.search(r"\(usually .*\d+ (s|min)", phase), phase
    assert "apt's own chatter" not in done.stdout + done.stderr
    # Each phase ends with how long it took.
    assert sum(bool(re.fullmatch(r" +done in \d+ s", line)) for line in lines) == 2


def test_make_deps_counts_what_apt_installed_and_upgraded_and_says_how_to_remove_it(
    tmp_path: Path,
) -> None:
    done = run_installer(stand_ins(tmp_path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # What it asked for: the test's own package, and any tool this machine lacks.
    (install,) = [line for line in lines if line.startswith("[make deps] apt-get install ")]
    asked = install.removeprefix("[make deps] apt-get install ").split(",")[0].split()
    assert "sidecar-test-only-tool" in asked
    # The stand-in apt adds each package asked for and one dependency, and upgrades base-files.
    assert (
        f"[make deps] apt installed {len(asked) + 1} packages and upgraded 1 (each listed in "
        "/var/log/apt/history.log)"
    ) in lines
    assert (
        f"[make deps] to remove them: apt-get remove --purge {' '.join(sorted(asked))} "
        "&& apt-get autoremove --purge"
    ) in lines


def test_make_deps_shows_apts_output_when_apt_fails(tmp_path: Path) -> None:
    env = {**stand_ins(tmp_path), "FAKE_APT_FAILS": "sidecar-test-only-tool"}
    done = run_installer(env)
    assert done.returncode == 1
    assert "E: Unable to locate package sidecar-test-only-tool" in done.stderr
    assert "apt-get install -y -q" in done.stderr and "failed" in done.stderr


def test_make_deps_as_another_user_names_the_subset_target(tmp_path: Path) -> None:
    env = stand_ins(tmp_path)
    (tmp_path / "bin" / "id").write_text("#!/bin/sh\necho 1000\n")
    done = run_installer(env)
    assert done.returncode == 0
    assert "!!! WARNING: missing system tools: " in done.stderr
    assert "make test-subset" in done.stderr
    assert not (tmp_path / "apt-calls").exists()


def test_the_readme_lists_every_package_make_deps_may_install() -> None:
    script = INSTALLER.read_text()
    installed = {
        package
        for group in re.findall(r"\|\| need\+=\(([^)]*)\)", script)
        for package in group.split()
    }
    section = readme_section("What `make test` does to this machine")
    listed = set(re.findall(r"`([a-z0-9][a-z0-9.+-]*)`", section))
    assert installed and installed <= listed, sorted(installed - listed)


def readme_section(heading: str) -> str:
    text = README.read_text()
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


# --- pip install ------------------------------------------------------------------------------

#: What setuptools prints when a pyproject uses what it deprecates.
BUILD_WARNINGS: Final = re.compile(r"BuildBackendWarning|SetuptoolsDeprecationWarning|deprecated")


def test_building_the_project_prints_no_deprecation_warning(tmp_path: Path) -> None:
    """What ``pip install -e .`` (make venv, make run) builds with, on a copy of the project:
    setuptools' license banners were four per install (the adapters' builds are checked in
    test_adapters.py as they are installed)."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    shutil.copytree(
        REPO_ROOT / "proxy", tmp_path / "proxy", ignore=shutil.ignore_patterns("__pycache__")
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--disable-pip-version-check",
            "-w",
            str(tmp_path / "wheels"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert not BUILD_WARNINGS.search(output), output


# --- make distclean ---------------------------------------------------------------------------


def distclean_env(tmp_path: Path) -> tuple[dict[str, str], list[Path]]:
    """The variables distclean reads, each naming a directory under ``tmp_path``."""
    root = tmp_path / "session-sidecar-machine"
    places = {
        "SIDECAR_DOCKER_DATA_ROOT": root / "var-lib-session-sidecar-docker",
        "SIDECAR_DOCKER_EXEC_ROOT": root / "run-session-sidecar-docker",
        "SIDECAR_CACHE_DIR": root / "var-cache-session-sidecar",
        "XDG_CACHE_HOME": root / "home-cache",
        "TMPDIR": root / "tmp",
    }
    made = [
        places["SIDECAR_DOCKER_DATA_ROOT"] / "image" / "overlay2",
        places["SIDECAR_DOCKER_EXEC_ROOT"],
        places["SIDECAR_CACHE_DIR"] / "debs",
        places["XDG_CACHE_HOME"] / "session-sidecar" / "venv-run-0123456789ab",
        places["TMPDIR"] / "session-sidecar-adapters-go" / "cache",
    ]
    for path in made:
        path.mkdir(parents=True)
        (path / "file").write_bytes(b"x" * 1000)
    env = {**os.environ, **{name: str(path) for name, path in places.items()}}
    env["SIDECAR_DOCKER_SOCKET"] = str(root / "docker.sock")
    return env, made


def test_distclean_removes_what_make_test_leaves_outside_the_repository(tmp_path: Path) -> None:
    env, made = distclean_env(tmp_path)
    (tmp_path / "calls").write_text("")
    done = subprocess.run(
        ["bash", str(DISTCLEAN)],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not any(path.exists() for path in made)
    assert (Path(env["XDG_CACHE_HOME"])).exists()  # only its session-sidecar folder goes
    removed = [line for line in done.stdout.splitlines() if line.startswith("removed: ")]
    assert len(removed) == 5, done.stdout
    assert "installed packages are left as they are" in done.stdout


def test_distclean_never_touches_a_package(tmp_path: Path) -> None:
    """apt-get, dpkg and their kin, if called, would leave a mark."""
    env, _ = distclean_env(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marks = tmp_path / "package-tool-calls"
    for tool in ("apt", "apt-get", "dpkg", "dpkg-query", "aptitude"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho {tool} "$@" >>{marks}\n')
        (bin_dir / tool).chmod(0o755)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    done = subprocess.run(
        ["bash", str(DISTCLEAN)], env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    assert not marks.exists(), marks.read_text()


def test_distclean_leaves_a_directory_whose_path_is_not_the_projects(tmp_path: Path) -> None:
    env, _ = distclean_env(tmp_path)
    elsewhere = tmp_path / "precious"
    elsewhere.mkdir()
    env["SIDECAR_CACHE_DIR"] = str(elsewhere)
    done = subprocess.run(
        ["bash", str(DISTCLEAN)], env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 1
    assert elsewhere.exists()
    assert f"not removing {elsewhere}" in done.stderr


def make_dry_run(target: str) -> str:
    """What ``make -n TARGET`` would run, outside any enclosing make."""
    return subprocess.run(
        ["make", "--no-print-directory", "-n", target],
        cwd=REPO_ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("MAKE")},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    ).stdout


def test_make_distclean_runs_make_clean_and_the_script() -> None:
    dry = make_dry_run("distclean")
    assert dry.splitlines()[-1] == "bash scripts/distclean.sh"
    assert "rm -rf .venv .venv-run" in dry


# --- make test-subset -------------------------------------------------------------------------


def test_make_test_subset_says_at_both_ends_that_it_is_a_subset() -> None:
    dry = make_dry_run("test-subset")
    banner = [line for line in dry.splitlines() if "!!! SUBSET" in line]
    assert len(banner) == 2, dry
    assert '-m "not system"' in dry
    assert "install-system-deps" not in dry  # no `deps`: it installs nothing


SYSTEM_TOOL_USES: Final = re.compile(
    r"start_backend\(\s*\"(node|go|hostile-node)\"|\bany_proxy\b|\bhostile: |real_backends"
    r"|integration\.front_proxies import|backend_servers|integration\.docker_engine import"
    r"|BACKEND_KINDS|playwright"
    r"|shutil\.which\(|require_tool\("
)


def test_every_module_that_drives_a_system_tool_is_marked_system() -> None:
    """The subset must pass with none of ``make deps``'s packages: a module that starts Node,
    Go, a front proxy, Docker or Chromium carries the ``system`` mark."""
    unmarked = []
    for module in sorted((REPO_ROOT / "tests").rglob("test_*.py")):
        if module == Path(__file__):
            continue  # this module names them all
        text = module.read_text()
        if SYSTEM_TOOL_USES.search(text) and "pytest.mark.system" not in text:
            unmarked.append(str(module.relative_to(REPO_ROOT)))
    assert unmarked == [], f"uses a tool from `make deps` but is not marked system: {unmarked}"


# --- progress lines ---------------------------------------------------------------------------

QUIET_FIXTURE: Final = """
import time
import pytest
from tests.progress import announce

def test_before(): pass

@pytest.fixture(scope="module")
def slow(request):
    announce(request, "building something slow (usually 1 s)")
    print("captured, never shown")
    time.sleep(0.1)

def test_one(slow):
    pass

def test_two(slow):
    pass
"""


def test_a_slow_phase_is_announced_on_a_line_of_its_own_under_pytest_q(tmp_path: Path) -> None:
    module = tmp_path / "test_quiet.py"
    module.write_text(QUIET_FIXTURE)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    assert lines[0] == "."  # the dot of the test before it, on a line of its own
    assert lines[1] == "[make test] building something slow (usually 1 s)"
    assert "captured, never shown" not in done.stdout
