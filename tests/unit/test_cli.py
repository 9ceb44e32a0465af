"""The command line: keygen, check-config, encode, decode and their exit codes."""

from __future__ import annotations

import base64
import datetime
import io
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxy.cli import EXIT_OK, EXIT_USAGE, MAX_DECODE_INPUT, main
from proxy.config import load_config
from proxy.config_secrets import DEVELOPMENT_SECRET
from proxy.proxy_state import codec_from_config
from proxy.session_codec import SessionCodec

SECRET = "cli-test-secret-0123456789-abcdefghijklmnopq"
REPO = Path(__file__).resolve().parents[2]
CONFIG = """\
secrets:
  - ${SESSION_SECRET}
cookie:
  secure: false
upstreams:
  - url: http://127.0.0.1:8001
"""


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SESSION_SECRET", SECRET)
    path = tmp_path / "proxy.yaml"
    path.write_text(CONFIG)
    return str(path)


def utc(timestamp: int) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cookie_header_from(set_cookie_lines: str) -> str:
    """What a browser sends back after the ``Set-Cookie:`` lines ``encode`` printed."""
    pairs = []
    for line in set_cookie_lines.splitlines():
        assert line.startswith("Set-Cookie: ")
        pairs.append(line.removeprefix("Set-Cookie: ").split(";")[0])
    return "; ".join(pairs)


# --- keygen -------------------------------------------------------------------------------


def test_keygen_prints_at_least_32_random_url_safe_bytes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["keygen"]) == EXIT_OK
    key = capsys.readouterr().out.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]+", key)
    assert len(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))) >= 32


def test_keygen_prints_a_new_key_each_time(capsys: pytest.CaptureFixture[str]) -> None:
    main(["keygen"])
    main(["keygen"])
    first, second = capsys.readouterr().out.split()
    assert first != second


def test_keygen_refuses_fewer_than_32_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "--bytes", "16"]) == EXIT_USAGE
    assert "at least 32" in capsys.readouterr().err


# --- check-config -------------------------------------------------------------------------


def test_check_config_reports_ok(config_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "-c", config_file]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith(f"{config_file}: OK\n")
    assert SECRET not in out


def test_check_config_warns_about_a_literal_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "literal.yaml"
    path.write_text(CONFIG.replace("${SESSION_SECRET}", SECRET))
    assert main(["check-config", "-c", str(path)]) == EXIT_OK
    captured = capsys.readouterr()
    assert captured.err == (
        "warning: secrets[0]: the secret is written in the configuration file itself; anyone "
        "who can read the file can forge sessions. Use ${NAME}, {env: NAME} or {file: /path} "
        "instead\n"
    )
    assert SECRET not in captured.out + captured.err


def test_check_config_gives_no_warning_for_a_secret_from_the_environment(
    config_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "-c", config_file]) == EXIT_OK
    assert capsys.readouterr().err == ""


def test_check_config_warns_loudly_when_the_development_secret_signs(
    config_file: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SESSION_SECRET", DEVELOPMENT_SECRET.decode())
    assert main(["check-config", "-c", config_file]) == EXIT_OK
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith("!!! WARNING: secrets[0] (env SESSION_SECRET) is the development secret")
    assert "it signs sessions, so anyone can forge one" in line
    assert DEVELOPMENT_SECRET.decode() not in captured.out + captured.err


def test_check_config_warns_when_the_development_secret_still_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SESSION_SECRET", SECRET)
    monkeypatch.setenv("OLD_SECRET", DEVELOPMENT_SECRET.decode())
    path = tmp_path / "rotated.yaml"
    path.write_text(CONFIG.replace("${SESSION_SECRET}", "${SESSION_SECRET}\n  - ${OLD_SECRET}"))
    assert main(["check-config", "-c", str(path)]) == EXIT_OK
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("!!! WARNING: secrets[1] (env OLD_SECRET) is the development secret")
    assert "it verifies sessions" in line


def test_the_makefiles_development_secret_is_the_one_the_proxy_warns_about() -> None:
    defaults = re.findall(r"SESSION_SECRET:-([^}]*)\}", (REPO / "Makefile").read_text())
    assert defaults and set(defaults) == {DEVELOPMENT_SECRET.decode()}


def test_check_config_refuses_an_unbraced_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROD_SECRET", SECRET)
    path = tmp_path / "unbraced.yaml"
    path.write_text(CONFIG.replace("${SESSION_SECRET}", "$PROD_SECRET"))
    assert main(["check-config", "-c", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "write ${PROD_SECRET} to use environment variable PROD_SECRET" in err
    assert SECRET not in err


def test_check_config_reads_the_path_from_the_environment(
    config_file: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SESSION_SIDECAR_CONFIG", config_file)
    assert main(["check-config"]) == EXIT_OK
    assert f"{config_file}: OK" in capsys.readouterr().out


def test_check_config_lists_every_error_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SESSION_SECRET", "too-short")
    path = tmp_path / "bad.yaml"
    path.write_text(CONFIG + "colour: red\n")
    assert main(["check-config", "-c", str(path)]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.err.startswith(f"{path}: 2 configuration error(s):\n  secrets[0]: ")
    assert "\n  colour: unknown key" in captured.err
    assert "Traceback" not in captured.err
    assert "too-short" not in captured.err


def test_check_config_with_broken_yaml_exits_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("secrets: [a\nupstreams: x\n")
    assert main(["check-config", "-c", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "not valid YAML at line 2" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["serve", "check-config", "encode", "decode"])
def test_missing_config_given_with_dash_c_says_how_to_give_one_and_exits_2(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = tmp_path / "absent.yaml"
    extra = {"encode": ['{"a": 1}'], "decode": ["a=1"]}.get(command, [])
    assert main([command, "-c", str(absent), *extra]) == EXIT_USAGE
    assert capsys.readouterr().err == (
        f"{absent}: no configuration file there (given with -c). Give the file with -c FILE or "
        "SESSION_SIDECAR_CONFIG=FILE.\n"
    )


def test_missing_config_named_by_the_environment_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SESSION_SIDECAR_CONFIG", str(tmp_path / "absent.yaml"))
    assert main(["check-config"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "(from SESSION_SIDECAR_CONFIG)" in err
    assert "-c FILE or SESSION_SIDECAR_CONFIG=FILE" in err


def test_missing_default_config_says_neither_dash_c_nor_the_variable_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SESSION_SIDECAR_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no config/proxy.yaml here
    assert main(["check-config"]) == EXIT_USAGE
    assert capsys.readouterr().err.startswith(
        "config/proxy.yaml: no configuration file there (the default path: neither -c nor "
        "SESSION_SIDECAR_CONFIG is set)"
    )


def test_unreadable_config_is_a_configuration_error_not_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "-c", str(tmp_path)]) == EXIT_USAGE  # a directory
    err = capsys.readouterr().err
    assert "cannot read the configuration" in err
    assert "no configuration file there" not in err


# --- encode and decode --------------------------------------------------------------------


def test_encoded_cookies_decode_back_to_the_session(
    config_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["encode", "-c", config_file, '{"user": 7, "name": "Zoë"}']) == EXIT_OK
    header = cookie_header_from(capsys.readouterr().out)
    assert main(["decode", "-c", config_file, header]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "state: valid"
    assert json.loads(lines[-1]) == {"user": 7, "name": "Zoë"}


def test_large_session_is_encoded_over_several_cookies(
    config_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    blob = base64.b64encode(random.Random(1).randbytes(8000)).decode()
    assert main(["encode", "-c", config_file, json.dumps({"blob": blob})]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 2
    assert lines[1].startswith("Set-Cookie: session.1=")
    assert all(line.endswith("; Path=/; Max-Age=1209600; HttpOnly; SameSite=Lax") for line in lines)
    assert main(["decode", "-c", config_file, cookie_header_from("\n".join(lines))]) == EXIT_OK


@pytest.mark.parametrize(
    ("session", "message"),
    [("[1]", "cannot encode: expected a JSON object"), ("{}", "session is empty")],
)
def test_encode_refuses_what_is_not_a_session(
    config_file: str, capsys: pytest.CaptureFixture[str], session: str, message: str
) -> None:
    assert main(["encode", "-c", config_file, session]) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_decode_of_garbage_says_invalid_and_exits_2(
    config_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["decode", "-c", config_file, "session.0=garbage; other=1"]) == EXIT_USAGE
    assert capsys.readouterr().out.startswith("state: invalid")


def test_decode_without_a_session_says_absent_and_exits_2(
    config_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["decode", "-c", config_file, "other=1"]) == EXIT_USAGE
    assert capsys.readouterr().out.startswith("state: absent")


def test_decode_shows_a_legacy_flask_cookie_with_migrate_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flask import Flask
    from flask.sessions import SecureCookieSessionInterface

    monkeypatch.setenv("SESSION_SECRET", SECRET)
    monkeypatch.setenv("FLASK_SECRET_KEY", "cli-flask-key-0123456789")
    path = tmp_path / "proxy.yaml"
    path.write_text(CONFIG + "migrate:\n  format: flask\n  secret_keys: ['${FLASK_SECRET_KEY}']\n")
    app = Flask("cli")
    app.secret_key = "cli-flask-key-0123456789"
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    assert serializer is not None
    cookie = "session=" + serializer.dumps({"user": "zo\u00eb"})
    assert main(["decode", "-c", str(path), cookie]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert (
        out[0] == "state: valid (a legacy flask session: the proxy re-issues it in its own format)"
    )
    assert out[-1] == '{"user":"zo\\u00eb"}'
    assert not any(line.startswith(("key id", "expire")) for line in out)


# --- decode: what it takes and what it shows -------------------------------------------------


def codec_for(config_file: str) -> SessionCodec:
    """The codec the CLI builds from the same file."""
    return codec_from_config(load_config(config_file))


def cookie_header_of(codec: SessionCodec, session: str, issued_at: int) -> str:
    cookies = codec.encode(session, issued_at=issued_at).cookies
    return "; ".join(f"{c.name}={c.value}" for c in cookies)


def test_decode_takes_encodes_output_as_it_is(
    config_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["encode", "-c", config_file, '{"user": 7}']) == EXIT_OK
    set_cookie_lines = capsys.readouterr().out
    assert main(["decode", "-c", config_file, set_cookie_lines]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert (lines[0], lines[-1]) == ("state: valid", '{"user":7}')


def test_decode_reads_encodes_output_from_standard_input(
    config_file: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blob = base64.b64encode(random.Random(2).randbytes(6000)).decode()
    assert main(["encode", "-c", config_file, json.dumps({"blob": blob})]) == EXIT_OK
    monkeypatch.setattr(sys, "stdin", io.StringIO(capsys.readouterr().out))
    assert main(["decode", "-c", config_file]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "state: valid"
    assert json.loads(lines[-1]) == {"blob": blob}
    assert re.fullmatch(r"chunks: 3 \([0-9]+ bytes of cookie data\)", lines[-2])


@pytest.mark.parametrize("prefix", ["Cookie: ", "cookie: ", "  COOKIE:"])
def test_decode_takes_a_whole_cookie_header_pasted_from_devtools(
    config_file: str, capsys: pytest.CaptureFixture[str], prefix: str
) -> None:
    header = cookie_header_of(codec_for(config_file), '{"user":7}', int(time.time()))
    pasted = f"{prefix}theme=dark; {header}; _ga=GA1.2.3\n"
    assert main(["decode", "-c", config_file, pasted]) == EXIT_OK
    assert capsys.readouterr().out.splitlines()[-1] == '{"user":7}'


def test_decode_shows_key_id_issue_time_age_expiry_and_chunks(
    config_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    codec = codec_for(config_file)
    issued = int(time.time()) - 3600
    header = cookie_header_of(codec, '{"user":7}', issued)
    assert main(["decode", "-c", config_file, header]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    kid = codec.keys.newest.kid
    assert lines[1] == f"key id: {kid} (secrets[0], the newest: it signs new sessions)"
    assert re.fullmatch(rf"issued: {utc(issued)} \(age 1h 0m [0-9]+s\)", lines[2])
    expiry = issued + 1_209_600
    assert re.fullmatch(
        # 14 days minus the hour, less the fraction of a second the clock is past ``issued``.
        rf"expires: {utc(expiry)} \(in (13d 22h 59m [0-9]+s|13d 23h 0m 0s); "
        r"cookie.max_age 1209600s\)",
        lines[3],
    )
    assert re.fullmatch(r"chunks: 1 \([0-9]+ bytes of cookie data\)", lines[4])
    assert lines[5:] == ['{"user":7}']


def test_decode_names_an_older_secrets_key_and_says_it_is_re_issued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SESSION_SECRET", SECRET)
    monkeypatch.setenv("NEW_SECRET", SECRET[::-1])
    old_only = tmp_path / "old.yaml"
    old_only.write_text(CONFIG)
    rotated = tmp_path / "rotated.yaml"
    rotated.write_text(
        CONFIG.replace("  - ${SESSION_SECRET}", "  - ${NEW_SECRET}\n  - ${SESSION_SECRET}")
    )
    header = cookie_header_of(codec_for(str(old_only)), '{"a":1}', int(time.time()))
    assert main(["decode", "-c", str(rotated), header]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "state: valid (made with an older secret or the other mode: the proxy re-issues it)"
    )
    kid = codec_for(str(old_only)).keys.newest.kid
    assert lines[1] == f"key id: {kid} (secrets[1], an older one: verifies only)"


def test_decode_of_an_expired_session_shows_when_it_expired_and_exits_2(
    config_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    codec = codec_for(config_file)
    issued = int(time.time()) - 1_209_600 - 7200
    header = cookie_header_of(codec, '{"user":7}', issued)
    assert main(["decode", "-c", config_file, header]) == EXIT_USAGE
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "state: expired"
    assert lines[1].startswith(f"key id: {codec.keys.newest.kid} ")
    assert re.fullmatch(rf"issued: {utc(issued)} \(age 14d 2h 0m [0-9]+s\)", lines[2])
    assert re.fullmatch(
        rf"expired: {utc(issued + 1_209_600)} \(2h 0m [0-9]+s ago; cookie.max_age 1209600s\)",
        lines[3],
    )
    assert lines[4:] == ["chunks: 1 carried (session.0)"]  # no session content


def test_decode_of_an_unknown_key_lists_the_configured_key_ids(
    config_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    other = SessionCodec([b"another-secret-0123456789-abcdefghijklmnopq"])
    header = cookie_header_of(other, '{"user":7}', int(time.time()))
    assert main(["decode", "-c", config_file, header]) == EXIT_USAGE
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "state: invalid (unknown key id (secret removed?))"
    kid = codec_for(config_file).keys.newest.kid
    assert lines[1:] == [
        f"key ids in this configuration: {kid} (secrets[0])",
        "chunks: 1 carried (session.0)",
    ]


def test_decode_of_a_header_without_a_session_names_the_cookie_it_looked_for(
    config_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["decode", "-c", config_file, "Cookie: theme=dark"]) == EXIT_USAGE
    assert capsys.readouterr().out.splitlines() == [
        "state: absent",
        "chunks: none (no session.0 cookie in the input)",
    ]


def test_decode_refuses_more_input_than_any_cookie_header(
    config_file: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("a" * (MAX_DECODE_INPUT + 1)))
    assert main(["decode", "-c", config_file, "-"]) == EXIT_USAGE
    assert "more than" in capsys.readouterr().err


def test_decode_prints_no_secret(config_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    header = cookie_header_of(codec_for(config_file), '{"user":7}', int(time.time()))
    main(["decode", "-c", config_file, header])
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err


# --- help ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [[], ["serve"], ["check-config"], ["keygen"], ["encode"], ["decode"]]
)
def test_help_works_for_every_command(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main([*command, "--help"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: session-sidecar {' '.join(command)}".strip())


COMMANDS = ("serve", "check-config", "keygen", "encode", "decode")
#: Where the proxy reads its environment: ``os.environ.get("X")``, ``os.environ["X"]``, or a
#: ``X_ENV = "X"`` constant handed to one of those.
ENV_READ = re.compile(
    r"environ(?:\.get)?[(\[]\s*\"([A-Z][A-Z0-9_]*)\""
    r"|^[A-Z_]*ENV(?:_VAR)?\b[^=\n]*=\s*\"([A-Z][A-Z0-9_]*)\"",
    re.MULTILINE,
)


def help_of(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    return capsys.readouterr().out


def exit_codes_in(help_text: str) -> set[int]:
    section = help_text.split("exit codes:\n", 1)[1].split("\n\n", 1)[0]
    return {int(m) for m in re.findall(r"^  ([0-9])  ", section, re.MULTILINE)}


@pytest.mark.parametrize(
    ("command", "codes"),
    [
        ("serve", {0, 1, 2}),
        ("check-config", {0, 2}),
        ("keygen", {0, 2}),
        ("encode", {0, 2}),
        ("decode", {0, 2}),
    ],
)
def test_every_commands_help_says_what_it_does_and_lists_its_exit_codes(
    command: str, codes: set[int], capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_of(command, capsys)
    description = text.split("\n\n")[1]
    assert len(description.split()) >= 8, description  # a sentence, not a word
    assert exit_codes_in(text) == codes


@pytest.mark.parametrize("command", ["serve", "check-config", "encode", "decode"])
def test_help_of_every_command_with_a_config_names_its_variables(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_of(command, capsys)
    environment = text.split("\nenvironment:\n", 1)[1]
    assert "SESSION_SIDECAR_CONFIG" in environment
    assert "${NAME}" in environment
    assert "{file: /path}" in environment


def test_serve_help_names_every_environment_variable_the_proxy_reads(
    capsys: pytest.CaptureFixture[str],
) -> None:
    read = set()
    for module in sorted((REPO / "proxy").glob("*.py")):
        for match in ENV_READ.finditer(module.read_text()):
            read.add(match.group(1) or match.group(2))
    assert {"SESSION_SIDECAR_CONFIG", "SESSION_SIDECAR_ALLOW_PY_PARSER"} <= read  # the scan works
    environment = help_of("serve", capsys).split("\nenvironment:\n", 1)[1]
    assert sorted(name for name in read if name not in environment) == []


def test_serve_help_gives_the_signals_it_handles(capsys: pytest.CaptureFixture[str]) -> None:
    signals = help_of("serve", capsys).split("\nsignals:\n", 1)[1]
    stop, reload = signals.split("  SIGHUP\n")
    assert stop.startswith("  SIGTERM, SIGINT\n")
    assert "graceful stop" in stop
    assert "shutdown_timeout" in stop
    assert "exit 0" in stop
    assert "reload the configuration" in reload
    assert "refused" in reload


def test_keygen_help_has_no_environment(capsys: pytest.CaptureFixture[str]) -> None:
    assert "environment:" not in help_of("keygen", capsys)


def test_python_dash_m_proxy_shows_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.startswith("usage: session-sidecar")
    for command in COMMANDS:
        assert command in done.stdout
