"""The drop-in adapters (adapters/) in real framework apps behind the real proxy (issues 9, 18).

Each adapter is installed the way its users install it, into an environment of its own, and its
example app runs on loopback behind the proxy:

- Flask, Django and ASGI (Starlette, FastAPI): a fresh venv, ``pip install`` of a copy of the
  adapter's folder (so no build/ is left in the checkout) with the framework and its server,
  and no warning from the build; the example app from a folder of its own, under gunicorn or
  uvicorn;
- Express: ``npm pack`` of adapters/express, and the tarball installed with express into a
  temporary project (a folder install would be only a symlink);
- Go: a module of its own whose go.mod is adapters/README.md's, ``require`` and ``replace``,
  built offline with its caches under the temporary directory.

The apps report in ``X-Adapter-Wrote`` which session header the adapter sent (the proxy never
passes the session headers on), so a test can check both what the adapter wrote and what the
proxy made of it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from tests.integration.backends import REPO_ROOT, free_port
from tests.integration.log_watch import WATCH
from tests.integration.processes import ManagedProcess, scratch_dir
from tests.integration.proxy_client import (
    CookieClient,
    RawConnection,
    Reply,
    chunk_cookies,
    compact,
    parse_set_cookie,
)
from tests.integration.sidecar import RunningProxy, base_config
from tests.integration.test_machine_footprint import BUILD_WARNINGS
from tests.progress import announce

pytestmark = [pytest.mark.integration, pytest.mark.system]

ADAPTERS_DIR: Final = REPO_ROOT / "adapters"
ADAPTERS: Final = ("flask", "express", "go", "django", "starlette", "fastapi")
EXPRESS_VERSION: Final = "4.21.2"
STARTUP_TIMEOUT: Final = 30.0
INSTALL_TIMEOUT: Final = 300.0
BIG: Final = 12345678901234567890
#: Long enough that a one-key patch is shorter than the whole session.
PADDING: Final = "p" * 60


@dataclass(frozen=True, slots=True)
class PythonApp:
    """A Python adapter's example: the folder pip installs, what else it needs from PyPI, the
    example's files, and the server that runs it."""

    folder: str
    requirements: tuple[str, ...]
    files: tuple[str, ...]
    server: tuple[str, ...]


def gunicorn(target: str) -> tuple[str, ...]:
    # gunicorn 27 opens a control socket under ~/.gunicorn, shared by every instance.
    return ("gunicorn", "--threads", "4", "--no-control-socket", "-b", "127.0.0.1:{port}", target)


def uvicorn(target: str) -> tuple[str, ...]:
    return ("uvicorn", "--host", "127.0.0.1", "--port", "{port}", target)


PYTHON_APPS: Final = {
    "flask": PythonApp(
        "flask", ("gunicorn>=27",), ("example_app.py",), gunicorn("example_app:app")
    ),
    "django": PythonApp(
        "django",
        ("gunicorn>=27",),
        ("example_project.py",),
        gunicorn("example_project:application"),
    ),
    "starlette": PythonApp(
        "asgi",
        ("starlette", "uvicorn", "websockets"),
        ("example_starlette.py",),
        uvicorn("example_starlette:app"),
    ),
    "fastapi": PythonApp(
        "asgi",
        ("fastapi", "uvicorn", "websockets"),
        ("example_starlette.py", "example_fastapi.py"),
        uvicorn("example_fastapi:app"),
    ),
}


# --- installing each adapter as its users do --------------------------------------------------


def install(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run an installer; fail with its output if it fails; return what it printed."""
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=INSTALL_TIMEOUT,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"`{' '.join(argv)}` failed:\n{output[-4000:]}"
    return output


def clean_env() -> dict[str, str]:
    """This environment without what points Python at this checkout or the test venv."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def python_app(adapter: str, workdir: Path) -> list[str]:
    """A fresh venv with the adapter pip-installed, the example beside it; the server's argv."""
    app = PYTHON_APPS[adapter]
    shutil.copytree(
        ADAPTERS_DIR / app.folder,
        workdir / app.folder,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "example_*"),
    )
    install([sys.executable, "-m", "venv", "venv"], workdir)
    pip = [str(workdir / "venv" / "bin" / "pip"), "install", "--disable-pip-version-check"]
    output = install([*pip, f"./{app.folder}", *app.requirements], workdir, clean_env())
    assert not BUILD_WARNINGS.search(output), output
    for name in app.files:
        shutil.copy(ADAPTERS_DIR / app.folder / name, workdir / name)
    program, *args = app.server
    return [str(workdir / "venv" / "bin" / program), *args]


def express_app(workdir: Path) -> list[str]:
    """``npm pack`` of the adapter, installed with express into a project; its example app."""
    npm = shutil.which("npm")
    node = shutil.which("node")
    assert npm and node, "npm and node are not on PATH; `make deps` installs them"
    packed = install(
        [npm, "pack", "--json", "--pack-destination", str(workdir), str(ADAPTERS_DIR / "express")],
        workdir,
    )
    (tarball,) = [entry["filename"] for entry in json.loads(packed[packed.index("[") :])]
    (workdir / "package.json").write_text('{"name": "app", "version": "1.0.0", "private": true}')
    npm_install = [
        npm,
        "install",
        "--no-audit",
        "--no-fund",
        "--prefer-offline",
        "--ignore-scripts",
    ]
    install([*npm_install, f"./{tarball}", f"express@{EXPRESS_VERSION}"], workdir)
    installed = workdir / "node_modules" / "session-sidecar-express"
    assert installed.is_dir() and not installed.is_symlink()
    shutil.copy(ADAPTERS_DIR / "express" / "example" / "app.js", workdir / "app.js")
    return [node, "app.js"]


def go_app(workdir: Path) -> list[str]:
    """A module of its own with adapters/README.md's go.mod lines, built offline."""
    go = shutil.which("go")
    assert go is not None, "go is not on PATH; `make deps` installs it"
    (workdir / "go.mod").write_text(documented_go_mod())
    shutil.copy(ADAPTERS_DIR / "go" / "example" / "main.go", workdir / "main.go")
    install([go, "build", "-o", "app", "."], workdir, go_env())
    return [str(workdir / "app")]


def documented_go_mod() -> str:
    """adapters/README.md's go.mod, with this checkout where it says where the checkout is."""
    readme = (ADAPTERS_DIR / "README.md").read_text()
    (go_mod,) = re.findall(r"```go-mod\n(.*?)```", readme, re.DOTALL)
    assert isinstance(go_mod, str) and "/path/to/session-sidecar" in go_mod
    return go_mod.replace("/path/to/session-sidecar", str(REPO_ROOT))


def go_env() -> dict[str, str]:
    """Offline, with the caches under the temporary directory: stdlib only, nothing to fetch."""
    cache = Path(tempfile.gettempdir()) / "session-sidecar-adapters-go"
    return {
        **os.environ,
        "GOCACHE": str(cache / "cache"),
        "GOPATH": str(cache / "path"),
        "GOPROXY": "off",
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
    }


def app_command(adapter: str, workdir: Path) -> list[str]:
    if adapter in PYTHON_APPS:
        return python_app(adapter, workdir)
    if adapter == "express":
        return express_app(workdir)
    return go_app(workdir)


class AdapterApp(ManagedProcess):
    def __init__(self, process: subprocess.Popen[bytes], log_path: Path, port: int) -> None:
        super().__init__(process, log_path)
        self.url = f"http://127.0.0.1:{port}"


def start_app(adapter: str, workdir: Path) -> AdapterApp:
    port = free_port()
    command = [arg.format(port=port) for arg in app_command(adapter, workdir)]
    env = {**clean_env(), "HOST": "127.0.0.1", "PORT": str(port)}
    log_path = workdir / "app.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    app = AdapterApp(process, log_path, port)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the {adapter} app exited at start:\n{app.output()}")
        try:
            with urllib.request.urlopen(f"{app.url}/healthz", timeout=1) as response:
                if response.status == 200:
                    return app
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    app.stop()
    raise AssertionError(f"the {adapter} app did not answer /healthz:\n{app.output()}")


INSTALLS: Final = {
    "flask": "pip install ./adapters/flask into a fresh venv (usually 5 to 10 s)",
    "django": "pip install ./adapters/django into a fresh venv (usually 5 to 10 s)",
    "starlette": "pip install ./adapters/asgi with Starlette into a fresh venv (usually 5 to 10 s)",
    "fastapi": "pip install ./adapters/asgi with FastAPI into a fresh venv (usually 5 to 15 s)",
    "express": "npm pack, then npm install of the tarball and express (usually 5 s)",
    "go": "a module of its own with require and replace, go build (usually 5 to 30 s)",
}


@pytest.fixture(scope="module", params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def app(adapter: str, request: pytest.FixtureRequest) -> Iterator[AdapterApp]:
    announce(request, f"adapter {adapter}: {INSTALLS[adapter]}")
    with start_app(adapter, scratch_dir(f"sidecar-adapter-{adapter}-")) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(app: AdapterApp) -> Iterator[RunningProxy]:
    with WATCH.start_proxy(base_config(app.url)) as running:
        yield running


@pytest.fixture
def client(proxy: RunningProxy) -> Iterator[CookieClient]:
    with CookieClient(proxy.url) as client:
        yield client


# --- helpers ----------------------------------------------------------------------------------


def seed(client: CookieClient, session: dict[str, Any]) -> None:
    """Give ``client`` exactly ``session``: the app writes the raw JSON itself."""
    WATCH.sensitive(compact(session))
    reply = client.request("POST", "/raw-set", data=compact(session).encode())
    assert reply.status == 200, reply.body[:300]
    assert client.live_chunk_count() >= 1


def update(client: CookieClient, **change: Any) -> str:
    """POST /update and return what the adapter wrote (``X-Adapter-Wrote``)."""
    reply = client.request(
        "POST",
        "/update",
        data=json.dumps(change).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert reply.status == 200, reply.body[:300]
    return wrote(reply)


def wrote(reply: Reply) -> str:
    value = reply.headers.get("X-Adapter-Wrote")
    assert value is not None, "the app did not report its session header"
    return value


def seen(client: CookieClient) -> dict[str, Any]:
    reply = client.get("/session")
    assert reply.status == 200, reply.body[:300]
    assert wrote(reply) == "none"
    shown: dict[str, Any] = reply.json()
    return shown


def patch_of(header: str) -> Any:
    name, _, value = header.partition(" ")
    assert name == "X-Patch-Session", header
    return json.loads(value)


# --- read -------------------------------------------------------------------------------------


def test_the_app_reads_the_session_the_proxy_verified(client: CookieClient) -> None:
    seed(client, {"user": "alice", "n": 1})
    shown = seen(client)
    assert shown["status"] == "valid"
    assert shown["session"] == {"user": "alice", "n": 1}


def test_without_a_session_the_app_reads_an_empty_one(client: CookieClient) -> None:
    shown = seen(client)
    assert shown["status"] == "absent"
    assert shown["session"] == {}


def test_a_tampered_cookie_reads_as_an_empty_invalid_session(client: CookieClient) -> None:
    seed(client, {"user": "alice"})
    name = next(n for n in client.cookies if n.startswith("session."))
    value = client.cookies[name]
    client.cookies[name] = value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB")
    shown = seen(client)
    assert (shown["status"], shown["session"]) == ("invalid", {})


def test_reading_without_a_change_writes_nothing(client: CookieClient) -> None:
    seed(client, {"user": "alice", "cart": [1, 2], "prefs": {"theme": "dark"}})
    reply = client.get("/session")
    assert wrote(reply) == "none"
    assert chunk_cookies(reply.set_cookies) == {}


def test_a_session_header_the_app_wrote_itself_is_left_alone(client: CookieClient) -> None:
    reply = client.request("POST", "/raw-set", data=b'{"user":"carol"}')
    assert wrote(reply) == 'X-Set-Session {"user":"carol"}'
    assert seen(client)["session"] == {"user": "carol"}


# --- modify -----------------------------------------------------------------------------------


def test_changing_one_key_sends_a_patch_of_that_key_only(client: CookieClient) -> None:
    seed(client, {"user": "alice", "cart": [1, 2], "pad": PADDING})
    assert patch_of(update(client, set={"user": "bob"})) == {"user": "bob"}
    assert seen(client)["session"] == {"user": "bob", "cart": [1, 2], "pad": PADDING}


def test_deleting_a_key_patches_it_as_null(client: CookieClient) -> None:
    seed(client, {"user": "alice", "cart": [1, 2], "pad": PADDING})
    assert patch_of(update(client, delete=["cart"])) == {"cart": None}
    assert seen(client)["session"] == {"user": "alice", "pad": PADDING}


def test_adding_a_key_to_a_new_session_sends_a_full_set(client: CookieClient) -> None:
    assert update(client, set={"user": "alice"}) == 'X-Set-Session {"user":"alice"}'
    shown = seen(client)
    assert (shown["status"], shown["session"]) == ("valid", {"user": "alice"})


def test_replacing_most_of_the_session_sends_a_full_set(client: CookieClient) -> None:
    seed(client, {"a": 1, "b": 2})
    header = update(client, set={"a": 3, "b": 4, "c": PADDING})
    assert header == f'X-Set-Session {{"a":3,"b":4,"c":"{PADDING}"}}'
    assert seen(client)["session"] == {"a": 3, "b": 4, "c": PADDING}


def test_setting_a_value_to_null_sends_a_full_set(client: CookieClient) -> None:
    """A merge patch cannot keep a null: ``{"user": null}`` would remove the key."""
    seed(client, {"user": "alice", "pad": PADDING})
    assert update(client, set={"user": None}).startswith("X-Set-Session ")
    assert seen(client)["session"] == {"user": None, "pad": PADDING}


# --- clear ------------------------------------------------------------------------------------


def test_clearing_sends_an_empty_set_and_the_cookies_expire(client: CookieClient) -> None:
    seed(client, {"user": "alice", "cart": [1, 2]})
    reply = client.request(
        "POST", "/update", data=b'{"clear":true}', headers={"Content-Type": "application/json"}
    )
    assert wrote(reply) == "X-Set-Session {}"
    chunks = chunk_cookies(reply.set_cookies)
    assert chunks and all(cookie.expired for cookie in chunks.values())
    shown = seen(client)
    assert (shown["status"], shown["session"]) == ("absent", {})


def test_clearing_an_empty_session_writes_nothing(client: CookieClient) -> None:
    assert update(client, clear=True) == "none"


# --- non-ASCII text ---------------------------------------------------------------------------


def test_non_ascii_text_is_written_as_ascii_escapes(client: CookieClient) -> None:
    seed(client, {"user": "alice", "pad": PADDING})
    header = update(client, set={"name": "Zoë", "city": "日本"})
    assert header.isascii()
    assert "Zo\\u00eb" in header and "\\u65e5\\u672c" in header


def test_an_emoji_is_written_as_a_surrogate_pair(client: CookieClient) -> None:
    seed(client, {"user": "alice", "pad": PADDING})
    header = update(client, set={"mood": "😀"})
    assert header == 'X-Patch-Session {"mood":"\\ud83d\\ude00"}'
    assert seen(client)["session"]["mood"] == "😀"


def test_non_ascii_text_round_trips(client: CookieClient) -> None:
    text = {"name": "Zoë", "city": "日本", "mood": "😀", "mixed": "a\u00e9\u4e2d\U0001f680z"}
    seed(client, {"user": "alice"})
    update(client, set=text)
    shown = seen(client)
    assert shown["session"] == {"user": "alice", **text}
    assert shown["raw"].isascii()
    assert "\\ud83d\\ude00" in shown["raw"]
    # Written once more unchanged, nothing is sent.
    assert update(client, set={"name": "Zoë"}) == "none"


def test_non_ascii_keys_round_trip(client: CookieClient) -> None:
    seed(client, {"user": "alice", "pad": PADDING})
    assert patch_of(update(client, set={"ключ": "значение"})) == {"ключ": "значение"}
    assert seen(client)["session"]["ключ"] == "значение"


# --- large numbers ----------------------------------------------------------------------------


def test_a_large_integer_in_an_untouched_key_survives(client: CookieClient) -> None:
    seed(client, {"big": BIG, "n": 1, "pad": PADDING})
    assert patch_of(update(client, set={"n": 2})) == {"n": 2}
    raw = seen(client)["raw"]
    assert f'"big":{BIG}' in raw
    assert json.loads(raw) == {"big": BIG, "n": 2, "pad": PADDING}


def test_a_large_integer_the_app_writes_survives_except_in_express_as_documented(
    adapter: str, client: CookieClient
) -> None:
    seed(client, {"user": "alice", "pad": PADDING})
    written = update(client, set={"big": BIG})
    if adapter == "express":
        # JSON.parse/JSON.stringify round 12345678901234567890 to a double (backends.md).
        assert patch_of(written) == {"big": 12345678901234567000}
        return
    assert patch_of(written) == {"big": BIG}
    shown = seen(client)
    assert f'"big":{BIG}' in shown["raw"]
    assert shown["session"]["big"] == BIG


# --- nested changes ---------------------------------------------------------------------------


def test_appending_to_a_list_in_place_is_detected(client: CookieClient) -> None:
    seed(client, {"user": "alice", "cart": [1], "pad": PADDING})
    assert patch_of(update(client, append={"cart": 2})) == {"cart": [1, 2]}
    assert seen(client)["session"]["cart"] == [1, 2]


def test_changing_a_nested_member_in_place_patches_only_that_member(
    client: CookieClient,
) -> None:
    seed(client, {"user": "alice", "prefs": {"theme": "dark", "lang": "en"}, "pad": PADDING})
    header = update(client, nested=[["prefs", "theme", "light"]])
    assert patch_of(header) == {"prefs": {"theme": "light"}}
    assert seen(client)["session"]["prefs"] == {"theme": "light", "lang": "en"}


def test_a_nested_member_removed_by_replacing_its_object_is_patched_as_null(
    client: CookieClient,
) -> None:
    """A merge patch merges objects: sending the new ``prefs`` whole would keep ``lang``."""
    seed(client, {"user": "alice", "prefs": {"theme": "dark", "lang": "en"}, "pad": PADDING})
    assert patch_of(update(client, set={"prefs": {"theme": "dark"}})) == {"prefs": {"lang": None}}
    assert seen(client)["session"]["prefs"] == {"theme": "dark"}


# --- Django's session API ---------------------------------------------------------------------


@pytest.mark.adapters("django")
def test_django_flush_as_logout_calls_it_clears_the_session(client: CookieClient) -> None:
    seed(client, {"user": "alice", "cart": [1]})
    assert update(client, flush=True) == "X-Set-Session {}"
    assert seen(client)["status"] == "absent"


@pytest.mark.adapters("django")
def test_django_auth_logout_clears_the_session(client: CookieClient) -> None:
    seed(client, {"user": "alice"})
    reply = client.request("POST", "/logout")
    assert (reply.status, wrote(reply)) == (200, "X-Set-Session {}")
    assert seen(client)["session"] == {}


@pytest.mark.adapters("django")
def test_django_cycle_key_as_login_calls_it_keeps_the_data(client: CookieClient) -> None:
    seed(client, {"user": "alice", "pad": PADDING})
    assert patch_of(update(client, cycle=True, set={"step": 2})) == {"step": 2}
    assert seen(client)["session"] == {"user": "alice", "pad": PADDING, "step": 2}


# --- straight to the app, as something that is not the proxy -----------------------------------


def direct(app: AdapterApp, path: str, headers: dict[str, str]) -> tuple[dict[str, Any], Any]:
    request = urllib.request.Request(f"{app.url}{path}", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read()), response.headers


@pytest.mark.parametrize("status", ["absent", "expired", "invalid", "revoked", "unheard-of"])
def test_a_status_other_than_valid_is_no_session(app: AdapterApp, status: str) -> None:
    shown, _ = direct(app, "/session", {"X-Session": '{"user":"root"}', "X-Session-Status": status})
    assert (shown["status"], shown["session"]) == (status, {})


def test_a_session_without_a_status_is_no_session(app: AdapterApp) -> None:
    shown, _ = direct(app, "/session", {"X-Session": '{"user":"root"}'})
    assert (shown["status"], shown["session"]) == ("absent", {})


# Express and Go leave Vary to the proxy, which adds it to every response with a session.
@pytest.mark.adapters("flask", "django", "starlette", "fastapi")
def test_a_response_the_session_went_into_varies_on_cookie(app: AdapterApp) -> None:
    headers = {"X-Session": '{"user":"alice"}', "X-Session-Status": "valid"}
    shown, response_headers = direct(app, "/session", headers)
    assert shown["session"] == {"user": "alice"}
    assert [v.strip() for v in ",".join(response_headers.get_all("Vary")).split(",")] == ["Cookie"]


# --- ASGI: a WebSocket's session ---------------------------------------------------------------

WEBSOCKET_HANDSHAKE: Final = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


# /ws is the ASGI examples' route.
@pytest.mark.adapters("starlette", "fastapi")
def test_asgi_a_session_set_before_a_websocket_accept_is_a_cookie_on_the_101(
    proxy: RunningProxy,
) -> None:
    with RawConnection(proxy.port) as connection:
        connection.send(WEBSOCKET_HANDSHAKE)
        head = connection.read_head()
    assert head.status == 101, head
    chunks = chunk_cookies([parse_set_cookie(v) for v in head.header_values("Set-Cookie")])
    with CookieClient(proxy.url) as client:
        client.take(list(chunks.values()))
        assert seen(client)["session"] == {"ws": "accepted"}


# --- shared caches (issue 14 finding 9) ------------------------------------------------------


def test_a_response_made_with_the_session_varies_on_cookie_once(client: CookieClient) -> None:
    seed(client, {"user": "alice"})
    assert client.get("/session").headers.getall("Vary") == ["Cookie"]


# As Flask's and Django's own session middleware do; the ASGI adapter varies only when there is
# a session, and Express and Go leave Vary to the proxy.
@pytest.mark.adapters("flask", "django")
def test_the_flask_and_django_adapters_vary_on_cookie_whenever_the_session_is_read(
    client: CookieClient,
) -> None:
    # No session: the proxy adds nothing, so the Vary is the adapter's.
    assert client.get("/session").headers.getall("Vary") == ["Cookie"]
    assert "Vary" not in client.get("/healthz").headers


# --- the adapters' own checks -----------------------------------------------------------------


def test_the_go_adapters_unit_tests_pass() -> None:
    go = shutil.which("go")
    assert go is not None, "go is not on PATH; `make deps` installs it"
    run = subprocess.run(
        [go, "test", "./..."],
        cwd=ADAPTERS_DIR / "go" / "sidecarsession",
        env=go_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
