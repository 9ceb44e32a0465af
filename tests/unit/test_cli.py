"""The command line: keygen, check-config, encode, decode and their exit codes."""

from __future__ import annotations

import base64
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.cli import EXIT_OK, EXIT_USAGE, main

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


def test_check_config_with_missing_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "-c", str(tmp_path / "absent.yaml")]) == EXIT_USAGE
    assert "cannot read the configuration" in capsys.readouterr().err


# --- encode and decode --------------------------------------------------------------------


def test_encoded_cookies_decode_back_to_the_session(
    config_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["encode", "-c", config_file, '{"user": 7, "name": "Zoë"}']) == EXIT_OK
    header = cookie_header_from(capsys.readouterr().out)
    assert main(["decode", "-c", config_file, header]) == EXIT_OK
    state, payload = capsys.readouterr().out.splitlines()
    assert state == "state: valid"
    assert json.loads(payload) == {"user": 7, "name": "Zoë"}


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
    assert out[1] == '{"user":"zo\\u00eb"}'


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
    for command in ("serve", "check-config", "keygen", "encode", "decode"):
        assert command in done.stdout
