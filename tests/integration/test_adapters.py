"""The drop-in adapters (adapters/) in real framework apps behind the real proxy (issue 9).

Each adapter's example app (Flask under gunicorn, Express under Node, Go's net/http) runs on
loopback behind the proxy. The apps report in ``X-Adapter-Wrote`` which session header the
adapter sent (the proxy never passes the session headers on), so a test can check both what
the adapter wrote and what the proxy made of it.

Express is installed with npm once into ``~/.cache/session-sidecar/npm/express-<version>``
(outside the repository, under a lock, with a marker file); Go builds offline with its caches
under the temporary directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from tests.integration.backends import REPO_ROOT, free_port
from tests.integration.log_watch import WATCH
from tests.integration.processes import ManagedProcess
from tests.integration.proxy_client import CookieClient, Reply, chunk_cookies, compact
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = pytest.mark.integration

ADAPTERS_DIR: Final = REPO_ROOT / "adapters"
ADAPTERS: Final = ("flask", "express", "go")
EXPRESS_VERSION: Final = "4.21.2"
NPM_PREFIX: Final = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "session-sidecar"
    / "npm"
    / f"express-{EXPRESS_VERSION}"
)
STARTUP_TIMEOUT: Final = 30.0
BIG: Final = 12345678901234567890
#: Long enough that a one-key patch is shorter than the whole session.
PADDING: Final = "p" * 60


# --- the apps ---------------------------------------------------------------------------------


class AdapterApp(ManagedProcess):
    def __init__(self, process: subprocess.Popen[bytes], log_path: Path, port: int) -> None:
        super().__init__(process, log_path)
        self.url = f"http://127.0.0.1:{port}"


def express_node_modules() -> Path:
    """Install express once per machine, outside the repository; return its node_modules."""
    marker = NPM_PREFIX / ".installed"
    if not marker.exists():
        NPM_PREFIX.mkdir(parents=True, exist_ok=True)
        with (NPM_PREFIX / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not marker.exists():
                npm = shutil.which("npm")
                assert npm is not None, "npm is not on PATH; `make deps` installs it"
                install = [npm, "install", "--prefix", str(NPM_PREFIX), "--no-audit", "--no-fund"]
                subprocess.run(
                    [*install, "--ignore-scripts", f"express@{EXPRESS_VERSION}"],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    check=True,
                    timeout=300,
                )
                marker.touch()
    return NPM_PREFIX / "node_modules"


def build_go_example(workdir: Path) -> Path:
    go = shutil.which("go")
    assert go is not None, "go is not on PATH; `make deps` installs it"
    binary = workdir / "go-example"
    build = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=ADAPTERS_DIR / "go" / "example",
        env=go_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert build.returncode == 0, f"go build of adapters/go/example failed:\n{build.stderr}"
    return binary


def app_command(adapter: str, port: int, workdir: Path) -> tuple[list[str], dict[str, str]]:
    if adapter == "flask":
        flask_dir = str(ADAPTERS_DIR / "flask")
        command = [sys.executable, "-m", "gunicorn", "--chdir", flask_dir, "--pythonpath"]
        command += [flask_dir, "-b", f"127.0.0.1:{port}", "--threads", "4"]
        # gunicorn 27 opens a control socket under ~/.gunicorn, shared by every instance.
        command += ["--no-control-socket", "example_app:app"]
        return command, {}
    if adapter == "express":
        node = shutil.which("node")
        assert node is not None, "node is not on PATH; `make deps` installs it"
        script = str(ADAPTERS_DIR / "express" / "example" / "app.js")
        return [node, script], {"NODE_PATH": str(express_node_modules())}
    return [str(build_go_example(workdir))], {}


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


def start_app(adapter: str) -> AdapterApp:
    workdir = Path(tempfile.mkdtemp(prefix=f"sidecar-adapter-{adapter}-"))
    port = free_port()
    command, extra_env = app_command(adapter, port, workdir)
    env = {**os.environ, **extra_env, "HOST": "127.0.0.1", "PORT": str(port)}
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


@pytest.fixture(scope="module", params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def proxy(adapter: str) -> Iterator[RunningProxy]:
    with start_app(adapter) as app, WATCH.start_proxy(base_config(app.url)) as running:
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


# --- shared caches (issue 14 finding 9) ------------------------------------------------------


def test_a_response_made_with_the_session_varies_on_cookie_once(client: CookieClient) -> None:
    seed(client, {"user": "alice"})
    assert client.get("/session").headers.getall("Vary") == ["Cookie"]


def test_the_flask_adapter_varies_on_cookie_whenever_the_session_is_read(
    adapter: str, client: CookieClient
) -> None:
    if adapter != "flask":
        pytest.skip("Flask's own session interface adds Vary: Cookie; the others do not")
    # No session: the proxy adds nothing, so the Vary is the adapter's, as Flask's would be.
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
