"""The access log and the process log: their formats, and what they must never contain."""

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from proxy.access_log import (
    FLUSH_SECONDS,
    LOG_LEVEL_ENV,
    AccessLog,
    OutputHandler,
    configure_logging,
    loggable_path,
)
from proxy.request_record import RequestRecord, forwarded_client

JSON_KEYS = {
    "time",
    "request_id",
    "client",
    "method",
    "path",
    "status",
    "upstream",
    "duration_ms",
    "bytes_in",
    "bytes_out",
    "session",
    "session_change",
}
COOKIE_VALUE = "eyJ1c2VyIjoiYWxpY2UifQ.ZmFrZS1zaWduYXR1cmU"
#: 2024-05-06T07:08:09.250Z
STARTED = 1714979289.25


def record(**fields: object) -> RequestRecord:
    values: dict[str, object] = {
        "request_id": "req-1",
        "client": "203.0.113.7",
        "method": "GET",
        "path": "/account/orders",
        "status": 200,
        "upstream": "app",
        "started": STARTED,
        "duration": 0.0123456,
        "bytes_in": 17,
        "bytes_out": 2048,
        "session_state": "valid",
        "session_change": "resigned",
        "session_bytes_in": 1500,
        "session_chunks_in": 1,
    }
    values.update(fields)
    return RequestRecord(**values)  # type: ignore[arg-type]


def written(log_format: str, *records: RequestRecord) -> str:
    stream = io.StringIO()
    access_log = AccessLog(log_format, stream)
    for each in records:
        access_log(each)
    return stream.getvalue()


def json_entry(rec: RequestRecord) -> dict[str, object]:
    lines = written("json", rec).splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert isinstance(entry, dict)
    return entry


# --- json ---------------------------------------------------------------------------------


def test_json_line_has_exactly_the_documented_keys() -> None:
    assert set(json_entry(record())) == JSON_KEYS


def test_json_line_carries_the_request_facts() -> None:
    entry = json_entry(record())
    assert entry == {
        "time": "2024-05-06T07:08:09.250Z",
        "request_id": "req-1",
        "client": "203.0.113.7",
        "method": "GET",
        "path": "/account/orders",
        "status": 200,
        "upstream": "app",
        "duration_ms": 12.346,
        "bytes_in": 17,
        "bytes_out": 2048,
        "session": "valid",
        "session_change": "resigned",
    }


def test_json_line_names_the_upstream_error_when_there_is_one() -> None:
    entry = json_entry(record(status=504, upstream_error="timeout"))
    assert set(entry) == JSON_KEYS | {"upstream_error"}
    assert entry["upstream_error"] == "timeout"


def test_json_upstream_is_null_when_no_upstream_was_chosen() -> None:
    assert json_entry(record(upstream="", status=404))["upstream"] is None


def test_json_line_stays_one_line_whatever_the_path_holds() -> None:
    entry = json_entry(record(path='/a"b\\c\nd\r\te\u00e9'))
    assert entry["path"] == '/a"b\\c\nd\r\te\u00e9'


def test_json_lines_are_ascii_and_end_with_a_newline() -> None:
    text = written("json", record(path="/caf\u00e9"), record())
    assert text.isascii()
    assert text.endswith("\n")
    assert len(text.splitlines()) == 2


# --- text ---------------------------------------------------------------------------------


def test_text_line_is_one_readable_line_with_the_same_facts() -> None:
    line = written("text", record())
    assert line == (
        '2024-05-06T07:08:09.250Z 203.0.113.7 "GET /account/orders" 200 upstream="app" '
        '12.346ms in=17 out=2048 session=valid change=resigned id="req-1"\n'
    )


def test_text_line_names_the_upstream_error_when_there_is_one() -> None:
    line = written("text", record(status=502, upstream_error="refused"))
    assert " upstream_error=refused " in line


def test_text_line_shows_a_dash_when_no_upstream_was_chosen() -> None:
    assert " upstream=- " in written("text", record(upstream="", status=404))


def test_text_line_cannot_be_split_by_a_newline_in_the_path() -> None:
    assert len(written("text", record(path="/a\nforged line")).splitlines()) == 1


# --- what is never logged -----------------------------------------------------------------


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_query_string_is_never_logged(log_format: str) -> None:
    text = written(log_format, record(path="/callback?code=query-token-1&state=x"))
    assert "query-token-1" not in text
    assert "?" not in text
    assert "/callback" in text


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_fragment_is_never_logged(log_format: str) -> None:
    text = written(log_format, record(path="/page#access_token=fragment-token"))
    assert "fragment-token" not in text


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_session_in_path_parameters_is_never_logged(log_format: str) -> None:
    text = written(log_format, record(path=f"/app;session={COOKIE_VALUE}/orders"))
    assert COOKIE_VALUE not in text
    assert "/app;.../orders" in text


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_cookie_value_in_a_query_is_never_logged(log_format: str) -> None:
    text = written(log_format, record(path=f"/x?session.0={COOKIE_VALUE}"))
    assert COOKIE_VALUE not in text


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_invalid_session_reason_is_not_logged(log_format: str) -> None:
    text = written(log_format, record(session_state="invalid", session_reason="bad signature"))
    assert "bad signature" not in text


def test_loggable_path_keeps_a_plain_path_unchanged() -> None:
    assert loggable_path("/a/b%20c/d.json") == "/a/b%20c/d.json"


# --- writing ------------------------------------------------------------------------------


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_outside_an_event_loop_each_line_is_one_write() -> None:
    stream = CountingStream()
    access_log = AccessLog("json", stream)
    access_log(record())
    access_log(record())
    assert stream.writes == 2


def test_in_an_event_loop_lines_are_batched_into_one_write() -> None:
    stream = CountingStream()
    access_log = AccessLog("json", stream)

    async def burst() -> None:
        for _ in range(5):
            access_log(record())
        await asyncio.sleep(FLUSH_SECONDS * 3)

    asyncio.run(burst())
    assert (stream.writes, len(stream.getvalue().splitlines())) == (1, 5)


def test_access_log_goes_to_stdout_by_default(capfd: pytest.CaptureFixture[str]) -> None:
    AccessLog("json")(record())
    captured = capfd.readouterr()
    assert json.loads(captured.out)["request_id"] == "req-1"
    assert captured.err == ""


# --- the process log ----------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access = logging.getLogger("aiohttp.access")
    access_level, access_propagate = access.level, access.propagate
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    access.setLevel(access_level)
    access.propagate = access_propagate


@pytest.mark.usefixtures("restore_logging")
def test_json_process_log_is_one_object_per_line_on_stderr(
    capfd: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json")
    logging.getLogger("session_sidecar.test").warning("upstream %s: refused", "app")
    captured = capfd.readouterr()
    entry = json.loads(captured.err)
    assert entry["level"] == "warning"
    assert entry["logger"] == "session_sidecar.test"
    assert entry["message"] == "upstream app: refused"
    assert entry["time"].endswith("Z")
    assert captured.out == ""


@pytest.mark.usefixtures("restore_logging")
def test_text_process_log_names_level_and_logger(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("text")
    logging.getLogger("session_sidecar.test").error("stopped")
    assert capfd.readouterr().err.split(" ", 1)[1] == "ERROR session_sidecar.test: stopped\n"


@pytest.mark.usefixtures("restore_logging")
def test_log_level_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(LOG_LEVEL_ENV, "warning")
    configure_logging("text")
    logging.getLogger("session_sidecar.test").info("hidden")
    assert capfd.readouterr().err == ""
    assert logging.getLogger().level == logging.WARNING


@pytest.mark.usefixtures("restore_logging")
def test_unknown_log_level_falls_back_to_the_default(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(LOG_LEVEL_ENV, "chatty")
    configure_logging("text")
    assert logging.getLogger().level == logging.INFO
    assert "is not a log level" in capfd.readouterr().err


@pytest.mark.usefixtures("restore_logging")
def test_configuring_twice_installs_one_handler(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("json")
    configure_logging("json")
    logging.getLogger("session_sidecar.test").warning("once")
    assert len(capfd.readouterr().err.splitlines()) == 1


@pytest.mark.usefixtures("restore_logging")
def test_process_log_goes_through_the_non_blocking_output() -> None:
    configure_logging("text")
    (handler,) = [h for h in logging.getLogger().handlers if isinstance(h, OutputHandler)]
    assert handler.output.name == "stderr"
    assert not any(type(h) is logging.StreamHandler for h in logging.getLogger().handlers)


@pytest.mark.usefixtures("restore_logging")
def test_aiohttp_access_logger_is_silenced(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("json")
    logging.getLogger("aiohttp.access").critical('127.0.0.1 "GET /?token=x" 200')
    assert capfd.readouterr().err == ""


TRUSTED = ("127.0.0.1", "10.0.0.5", "2001:db8::10")


def trusted(address: str) -> bool:
    return address in TRUSTED


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("192.0.2.1", ["198.51.100.7"], "192.0.2.1"),  # an untrusted peer's header is its word
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", ["198.51.100.7"], "198.51.100.7"),
        ("127.0.0.1", ["203.0.113.66, 198.51.100.7, 10.0.0.5"], "198.51.100.7"),
        ("127.0.0.1", ["203.0.113.66", "198.51.100.7"], "198.51.100.7"),  # two header lines
        ("127.0.0.1", ["10.0.0.5, 127.0.0.1"], "10.0.0.5"),  # only trusted hops: the left-most
        ("127.0.0.1", ["198.51.100.7:50123"], "198.51.100.7"),
        ("127.0.0.1", ["[2001:db8::7]:443, 2001:db8::10"], "2001:db8::7"),
        ("127.0.0.1", ["unknown"], "unknown"),  # RFC 7239 section 6: a hidden client
        ("127.0.0.1", [" , "], "127.0.0.1"),
    ],
)
def test_forwarded_client_is_the_right_most_untrusted_address(
    peer: str, forwarded_for: list[str], client: str
) -> None:
    assert forwarded_client(peer, forwarded_for, trusted) == client


def test_a_forwarded_client_is_cut_to_64_characters() -> None:
    assert len(forwarded_client("127.0.0.1", ["_" + "x" * 500], trusted)) == 64


@pytest.mark.parametrize(
    "hop",
    [
        "1.2.3.4 status=200 session=valid",
        '"quoted"',
        "x" * 500,
        "evil.example",
        "_a b",
        "%00",
        'fe80::1%x status=500 upstream="admin" id="forged"',  # a scope may hold any text
        "::1%" + "A" * 60_000,
    ],
)
def test_a_forwarded_hop_that_is_no_node_name_is_logged_as_unknown(hop: str) -> None:
    # The text access log writes the client unquoted: no hop may add fields of its own.
    assert forwarded_client("127.0.0.1", [hop], trusted) == "unknown"


def test_a_forwarded_obfuscated_node_is_kept() -> None:
    assert forwarded_client("127.0.0.1", ["_hidden-7, 10.0.0.5"], trusted) == "_hidden-7"


def test_a_forwarded_ipv6_address_is_logged_in_its_short_form() -> None:
    assert forwarded_client("127.0.0.1", ["2001:DB8:0::7"], trusted) == "2001:db8::7"
