"""Configuration: YAML in, frozen typed objects out, one message per problem naming key and fix."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.config import (
    Config,
    ConfigError,
    Limits,
    ListenAddress,
    config_path,
    iter_summary,
    load_config,
    parse_config,
)

SECRET = "config-test-secret-0123456789-abcdefghijkl"
ENV = {"SESSION_SECRET": SECRET}
REPO = Path(__file__).resolve().parents[2]
MINIMAL = """\
secrets:
  - ${SESSION_SECRET}
upstreams:
  - url: http://127.0.0.1:8001
"""


def parse(text: str, env: dict[str, str] | None = None, base_dir: Path | None = None) -> Config:
    return parse_config(text, env=ENV if env is None else env, base_dir=base_dir)


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, env)
    return caught.value.errors


def with_upstreams(*items: str) -> str:
    return "secrets:\n  - ${SESSION_SECRET}\nupstreams:\n" + "".join(f"  - {i}\n" for i in items)


# --- a good configuration -----------------------------------------------------------------


def test_minimal_config_takes_the_defaults() -> None:
    config = parse(MINIMAL)
    assert config.listen == ListenAddress("0.0.0.0", 8080)
    assert config.admin_listen is None
    assert config.secrets[0].value == SECRET.encode()
    assert config.cookie.name == "session"
    assert config.cookie.max_age == 14 * 86400
    assert config.session.encrypt is False
    assert (
        config.upstreams[0].name == "127.0.0.1:8001"
    )  # host:port, so two upstreams on one host differ


def test_default_config_file_parses_with_session_secret_set() -> None:
    config = load_config(REPO / "config" / "proxy.yaml", env=ENV)
    assert config.secrets[0].value == SECRET.encode()
    assert config.upstreams[0].name == "app"


def test_upstream_url_is_split_into_its_parts() -> None:
    upstream = parse(with_upstreams("{url: 'https://api.example.com/v1/', path_prefix: /api/}"))
    (up,) = upstream.upstreams
    assert (up.scheme, up.host, up.port, up.base_path) == ("https", "api.example.com", 443, "/v1")
    assert up.path_prefix == "/api"


def test_summary_shows_shapes_and_never_the_secret() -> None:
    summary = "\n".join(iter_summary(parse(MINIMAL)))
    assert "secrets       1 " in summary
    assert SECRET not in summary


def test_config_repr_never_shows_the_secret() -> None:
    assert SECRET not in repr(parse(MINIMAL))


# --- unknown keys and wrong types ---------------------------------------------------------


def test_unknown_top_level_key_is_reported_with_the_known_keys() -> None:
    assert errors_of(MINIMAL + "colour: red\n") == [
        "colour: unknown key; known keys: admin_listen, cookie, limits, listen, log_format, "
        "migrate, readiness, secrets, session, shutdown_timeout, trusted_proxies, upstreams, "
        "workers"
    ]


def test_unknown_nested_key_is_reported_with_its_path() -> None:
    assert errors_of(MINIMAL + "cookie:\n  nmae: sid\n") == [
        "cookie.nmae: unknown key; known keys: chunk_size, domain, http_only, max_age, "
        "max_chunks, name, path, same_site, secure"
    ]


def test_unknown_upstream_key_is_reported_with_its_index() -> None:
    errors = errors_of(with_upstreams("{url: 'http://a'}", "{url: 'http://b', prefix: /b}"))
    assert len(errors) == 1
    assert errors[0].startswith("upstreams[1].prefix: unknown key; known keys: ")


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("workers: two\n", "workers: expected an integer, got 'two'"),
        ("cookie:\n  secure: 'yes'\n", "cookie.secure: expected true or false, got 'yes'"),
        ("cookie:\n  max_chunks: '3'\n", "cookie.max_chunks: expected an integer, got '3'"),
        ("cookie:\n  path: 7\n", "cookie.path: expected a non-empty string, got 7"),
        ("shutdown_timeout: soon\n", "shutdown_timeout: expected a number of seconds, got 'soon'"),
        ("log_format: xml\n", "log_format: expected one of json | text, got 'xml'"),
    ],
)
def test_wrong_type_is_reported_with_the_expected_type(snippet: str, message: str) -> None:
    assert errors_of(MINIMAL + snippet) == [message]


def test_section_that_is_not_a_mapping_is_reported() -> None:
    assert errors_of(MINIMAL + "cookie: [1, 2]\n") == ["cookie: expected a mapping, got a list"]


def test_whole_file_that_is_not_a_mapping_is_reported() -> None:
    assert "config: expected a mapping, got a list" in errors_of("- 1\n- 2\n")


def test_number_out_of_range_is_reported_with_the_range() -> None:
    assert errors_of(MINIMAL + "cookie:\n  max_chunks: 65\n") == [
        "cookie.max_chunks: must be between 1 and 64, got 65"
    ]


def test_every_problem_is_reported_at_once() -> None:
    errors = errors_of("workers: -1\ncookie:\n  secure: 1\n")
    assert [e.split(":")[0] for e in errors] == ["workers", "secrets", "cookie.secure", "upstreams"]


# --- upstreams ----------------------------------------------------------------------------


def test_upstream_url_must_be_http_or_https() -> None:
    errors = errors_of(with_upstreams("{url: 'http://a'}", "{url: 'ftp://x'}"))
    assert errors == ["upstreams[1].url: expected http:// or https:// URL, got 'ftp://x'"]


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1",
        "http://",
        "127.0.0.1:8001",
        "http://a:99999",
        f"http://{'a' * 64}.example",  # a DNS label is 1 to 63 octets (RFC 1035 section 2.3.4)
        "http://a..example",
    ],
)
def test_malformed_upstream_url_is_a_config_error(url: str) -> None:
    errors = errors_of(with_upstreams(f"{{url: '{url}'}}"))
    assert len(errors) == 1
    assert errors[0].startswith("upstreams[0].url: ")


def test_upstream_host_names_and_literals_that_resolve_are_accepted() -> None:
    urls = [
        "http://a.example",
        f"http://{'a' * 63}.example",
        "http://[::1]:8001",
        "http://xn--bcher-kva.example",
    ]
    items = (f"{{url: '{u}', path_prefix: /p{i}}}" for i, u in enumerate(urls))
    config = parse(with_upstreams(*items))
    hosts = ["a.example", f"{'a' * 63}.example", "::1", "xn--bcher-kva.example"]
    assert [up.host for up in config.upstreams] == hosts


def test_upstream_url_with_credentials_is_rejected() -> None:
    assert errors_of(with_upstreams("{url: 'http://user:pw@a'}")) == [
        "upstreams[0].url: expected a URL without query, fragment or credentials, "
        "got 'http://user:pw@a'"
    ]


def test_missing_upstreams_are_reported() -> None:
    assert errors_of("secrets:\n  - ${SESSION_SECRET}\n") == [
        "upstreams: at least one upstream is required, e.g. [{url: http://127.0.0.1:8000}]"
    ]


def test_two_unnamed_upstreams_on_one_backend_are_valid() -> None:
    config = parse(
        with_upstreams(
            "{url: 'http://127.0.0.1:8000', path_prefix: /api, strip_prefix: true}",
            "{url: 'http://127.0.0.1:8000'}",
        )
    )
    assert [up.name for up in config.upstreams] == ["127.0.0.1:8000/api", "127.0.0.1:8000"]


def test_default_name_carries_the_host_it_matches() -> None:
    config = parse(
        with_upstreams(
            "{url: 'http://10.0.0.5:8080', host: Admin.Example.com}",
            "{url: 'http://10.0.0.5:8080', host: '*.example.com', path_prefix: /v2}",
        )
    )
    assert [up.name for up in config.upstreams] == [
        "10.0.0.5:8080@admin.example.com",
        "10.0.0.5:8080@*.example.com/v2",
    ]


def test_default_name_steps_aside_for_a_written_one() -> None:
    config = parse(
        with_upstreams(
            "{url: 'http://127.0.0.1:8000', path_prefix: /a}",
            "{url: 'http://b', name: '127.0.0.1:8000/a', host: b}",
        )
    )
    assert [up.name for up in config.upstreams] == ["127.0.0.1:8000/a#2", "127.0.0.1:8000/a"]


def test_duplicate_upstream_names_are_reported() -> None:
    errors = errors_of(
        with_upstreams("{url: 'http://a', name: app}", "{url: 'http://b', name: app, host: b}")
    )
    assert errors == ["upstreams[1].name: 'app' is already used; names must be unique"]


def test_duplicate_upstream_name_is_reported_at_its_own_index() -> None:
    errors = errors_of(
        with_upstreams(
            "{url: 'ftp://x'}",
            "{url: 'http://a', name: app}",
            "{url: 'http://b', name: app, host: b}",
        )
    )
    assert "upstreams[2].name: 'app' is already used; names must be unique" in errors


def test_upstreams_forward_the_session_unless_told_not_to() -> None:
    config = parse(
        with_upstreams(
            "{url: 'http://a'}", "{url: 'http://b', path_prefix: /s, forward_session: false}"
        )
    )
    assert [up.forward_session for up in config.upstreams] == [True, False]


def test_forward_session_must_be_a_boolean() -> None:
    assert errors_of(with_upstreams("{url: 'http://a', forward_session: 'no'}")) == [
        "upstreams[0].forward_session: expected true or false, got 'no'"
    ]


def test_upstream_that_can_never_be_chosen_is_reported() -> None:
    errors = errors_of(with_upstreams("{url: 'http://a'}", "{url: 'http://b', path_prefix: /}"))
    assert errors == [
        "upstreams[1]: same host and path_prefix as upstreams[0]; it could never be chosen"
    ]


# --- secrets ------------------------------------------------------------------------------


def test_missing_secrets_are_reported() -> None:
    assert errors_of("upstreams:\n  - url: http://a\n") == [
        "secrets: at least one secret is required (newest first); "
        "generate one with: session-sidecar keygen"
    ]


def test_short_secret_is_rejected_without_showing_it() -> None:
    short = "short-secret-31-bytes-long-1234"
    errors = errors_of(MINIMAL, env={"SESSION_SECRET": short})
    assert errors == [
        "secrets[0]: secret from env SESSION_SECRET is 31 bytes, need at least 32; "
        "generate one with: session-sidecar keygen"
    ]
    assert short not in errors[0]


def test_secret_of_exactly_32_bytes_is_accepted() -> None:
    assert len(parse(MINIMAL, env={"SESSION_SECRET": "x" * 32}).secrets) == 1


def test_same_secret_listed_twice_is_reported() -> None:
    text = "secrets:\n  - ${SESSION_SECRET}\n  - ${SESSION_SECRET}\nupstreams:\n  - url: http://a\n"
    assert errors_of(text) == [
        "secrets: the same secret is listed twice; list each one once, newest first"
    ]


def test_unset_environment_variable_is_named() -> None:
    errors = errors_of(MINIMAL, env={})
    assert errors[0] == (
        "secrets[0]: environment variable SESSION_SECRET is not set "
        "(set it or remove ${SESSION_SECRET})"
    )


def test_unset_environment_variable_is_reported_once() -> None:
    assert errors_of(MINIMAL, env={}) == [
        "secrets[0]: environment variable SESSION_SECRET is not set "
        "(set it or remove ${SESSION_SECRET})"
    ]


def test_empty_environment_variable_is_reported_as_an_empty_secret() -> None:
    assert errors_of(MINIMAL, env={"SESSION_SECRET": ""}) == [
        "secrets[0]: the secret is empty (is its environment variable empty?)"
    ]


def test_unbraced_dollar_name_is_refused_with_the_braced_spelling() -> None:
    text = "secrets:\n  - $PROD_SECRET\nupstreams:\n  - url: http://a\n"
    assert errors_of(text, env={"PROD_SECRET": SECRET}) == [
        "secrets[0]: write ${PROD_SECRET} to use environment variable PROD_SECRET, "
        "not $PROD_SECRET (or $$ for a literal $)"
    ]


def test_unbraced_dollar_inside_a_longer_secret_is_refused_without_showing_it() -> None:
    inline = "0123456789abcdefghij$partOfTheSecret0123456789"
    errors = errors_of(with_upstreams("{url: 'http://a'}").replace("${SESSION_SECRET}", inline))
    assert errors == [
        "secrets[0]: '$' is not followed by {NAME}; write ${NAME} for an environment variable "
        "or $$ for a literal $ (value not shown)"
    ]


def test_unbraced_dollar_in_a_migrate_key_is_refused() -> None:
    text = MINIMAL + "migrate:\n  format: flask\n  secret_keys:\n    - $FLASK_KEY\n"
    assert errors_of(text) == [
        "migrate.secret_keys[0]: write ${FLASK_KEY} to use environment variable FLASK_KEY, "
        "not $FLASK_KEY (or $$ for a literal $)"
    ]


def test_dollar_not_followed_by_a_name_is_kept() -> None:
    text = "secrets:\n  - 0123456789-0123456789-0123456789-$1$-\nupstreams:\n  - url: http://a\n"
    assert parse(text, env={}).secrets[0].value == b"0123456789-0123456789-0123456789-$1$-"


def test_literal_secret_is_accepted_with_a_warning() -> None:
    config = parse(with_upstreams("{url: 'http://a'}").replace("${SESSION_SECRET}", "x" * 40))
    assert config.warnings == (
        "secrets[0]: the secret is written in the configuration file itself; anyone who can "
        "read the file can forge sessions. Use ${NAME}, {env: NAME} or {file: /path} instead",
    )


def test_literal_migrate_key_is_accepted_with_a_warning() -> None:
    config = parse(MINIMAL + "migrate:\n  format: flask\n  secret_keys: [dev]\n")
    assert [w.split(":")[0] for w in config.warnings] == ["migrate.secret_keys[0]"]


def test_secrets_from_the_environment_or_a_file_give_no_warning(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("z" * 32)
    text = f"secrets:\n  - ${{SESSION_SECRET}}\n  - env: OTHER\n  - file: {tmp_path / 'k'}\n"
    config = parse(text + "upstreams:\n  - url: http://a\n", env={**ENV, "OTHER": "y" * 32})
    assert config.warnings == ()
    assert [s.origin for s in config.secrets] == [
        "env SESSION_SECRET",
        "env OTHER",
        f"file {tmp_path / 'k'}",
    ]


def test_secret_file_path_takes_environment_variables(tmp_path: Path) -> None:
    (tmp_path / "k").write_text(SECRET)
    text = "secrets:\n  - file: ${DIR}/k\nupstreams:\n  - url: http://a\n"
    assert parse(text, env={"DIR": str(tmp_path)}).secrets[0].value == SECRET.encode()


def test_unset_variable_in_a_secret_file_path_is_reported_once() -> None:
    text = "secrets:\n  - file: ${DIR}/k\nupstreams:\n  - url: http://a\n"
    assert errors_of(text, env={}) == [
        "secrets[0].file: environment variable DIR is not set (set it or remove ${DIR})"
    ]


@pytest.mark.parametrize(
    ("snippet", "path"),
    [("listen: ${LISTEN}\n", "listen"), ("admin_listen: ${ADMIN}\n", "admin_listen")],
)
def test_unset_variable_anywhere_is_reported_once(snippet: str, path: str) -> None:
    (error,) = errors_of(MINIMAL + snippet)
    assert error.startswith(f"{path}: environment variable ")


def test_unset_variable_in_an_upstream_url_is_reported_once() -> None:
    assert errors_of(with_upstreams("{url: '${APP_URL}'}")) == [
        "upstreams[0].url: environment variable APP_URL is not set (set it or remove ${APP_URL})"
    ]


def test_double_dollar_is_a_literal_dollar() -> None:
    text = "secrets:\n  - $${NOT_A_VAR}-0123456789-0123456789-abc\nupstreams:\n  - url: http://a\n"
    assert parse(text, env={}).secrets[0].value == b"${NOT_A_VAR}-0123456789-0123456789-abc"


def test_environment_value_cannot_change_the_yaml_structure() -> None:
    tricky = SECRET + "\nworkers: 9 # ]"
    config = parse(MINIMAL, env={"SESSION_SECRET": tricky})
    assert config.secrets[0].value == tricky.encode()
    assert config.workers == 1


def test_file_secret_has_its_trailing_newline_stripped(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET + "\n")
    text = f"secrets:\n  - file: {tmp_path / 'secret'}\nupstreams:\n  - url: http://a\n"
    assert parse(text).secrets[0].value == SECRET.encode()


def test_relative_secret_file_is_read_beside_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET)
    (tmp_path / "proxy.yaml").write_text(
        "secrets:\n  - file: secret\nupstreams:\n  - url: http://a\n"
    )
    assert load_config(tmp_path / "proxy.yaml", env={}).secrets[0].value == SECRET.encode()


def test_unreadable_secret_file_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    text = f"secrets:\n  - file: {missing}\nupstreams:\n  - url: http://a\n"
    assert errors_of(text) == [f"secrets[0].file: cannot read {missing}: No such file or directory"]


def test_env_secret_reads_the_named_variable() -> None:
    text = "secrets:\n  - env: MY_SECRET\nupstreams:\n  - url: http://a\n"
    assert parse(text, env={"MY_SECRET": SECRET}).secrets[0].value == SECRET.encode()


def test_env_secret_with_unset_variable_is_reported() -> None:
    text = "secrets:\n  - env: MY_SECRET\nupstreams:\n  - url: http://a\n"
    assert errors_of(text, env={}) == ["secrets[0].env: environment variable MY_SECRET is not set"]


SECRET_LEAK_CASES = [
    "secrets:\n  - ${SESSION_SECRET}\nupstreams:\n  - url: ftp://x\ncolour: red\nworkers: x\n",
    "secrets:\n  - ${SESSION_SECRET}\n  - ${SESSION_SECRET}\nupstreams:\n  - url: http://a\n",
    "secrets: ${SESSION_SECRET}\nupstreams:\n  - url: http://a\n",
    "secrets:\n  k: ${SESSION_SECRET}\nupstreams:\n  - url: http://a\n",
    "secrets:\n  - {value: '${SESSION_SECRET}'}\nupstreams:\n  - url: http://a\n",
    "secrets:\n  - {file: x, env: '${SESSION_SECRET}'}\nupstreams:\n  - url: http://a\n",
    "secrets:\n  - env: SESSION_SECRET\n  - env: SESSION_SECRET\nupstreams: 1\n",
    "secrets:\n  - ${SESSION_SECRET}\ncookie:\n  secret: ${SESSION_SECRET}\n",
]


@pytest.mark.parametrize("text", SECRET_LEAK_CASES)
@settings(max_examples=20, deadline=None)
@given(secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=16, max_size=64))
def test_secret_never_appears_in_any_error(text: str, secret: str) -> None:
    # Stronger than "not a substring": the messages are the same for any secret of that length.
    with pytest.raises(ConfigError) as caught:
        parse(text, env={"SESSION_SECRET": secret})
    with pytest.raises(ConfigError) as placeholder:
        parse(text, env={"SESSION_SECRET": "#" * len(secret)})
    assert str(caught.value) == str(placeholder.value)


def test_short_inline_secret_never_appears_in_the_error() -> None:
    inline = "inline-but-too-short-0123"
    assert inline not in "\n".join(
        errors_of(with_upstreams("{url: 'http://a'}").replace("${SESSION_SECRET}", inline))
    )


# --- cookie and session -------------------------------------------------------------------


def test_same_site_none_requires_secure() -> None:
    assert errors_of(MINIMAL + "cookie:\n  same_site: none\n  secure: false\n") == [
        "cookie.same_site: 'none' requires secure: true (browsers drop such cookies otherwise)"
    ]


#: RFC 6265bis section 4.1.3, in check-config's words.
PREFIX_WHY = "browsers drop it otherwise (RFC 6265bis 4.1.3)"


@pytest.mark.parametrize("name", ["__Host-session", "__host-session", "__HOST-s"])
def test_a_host_prefixed_name_requires_secure(name: str) -> None:
    assert errors_of(MINIMAL + f"cookie:\n  name: {name}\n  secure: false\n") == [
        f"cookie.secure: must be true for the __Host- cookie name {name!r}: {PREFIX_WHY}"
    ]


def test_a_host_prefixed_name_refuses_a_domain() -> None:
    assert errors_of(MINIMAL + "cookie:\n  name: __Host-s\n  domain: example.com\n") == [
        f"cookie.domain: must be unset for the __Host- cookie name '__Host-s': {PREFIX_WHY}"
    ]


def test_a_host_prefixed_name_requires_the_root_path() -> None:
    assert errors_of(MINIMAL + "cookie:\n  name: __hOsT-s\n  path: /app\n") == [
        "cookie.path: got '/app'; must be '/' for the __Host- cookie name '__hOsT-s': " + PREFIX_WHY
    ]


@pytest.mark.parametrize("name", ["__Secure-session", "__secure-session", "__SECURE-s"])
def test_a_secure_prefixed_name_requires_secure(name: str) -> None:
    assert errors_of(MINIMAL + f"cookie:\n  name: {name}\n  secure: false\n") == [
        f"cookie.secure: must be true for the __Secure- cookie name {name!r}: {PREFIX_WHY}"
    ]


def test_a_secure_prefixed_name_may_have_a_domain_and_a_path() -> None:
    text = "cookie:\n  name: __Secure-s\n  domain: example.com\n  path: /app\n"
    cookie = parse(MINIMAL + text).cookie
    assert (cookie.name, cookie.domain, cookie.path) == ("__Secure-s", "example.com", "/app")


def test_a_host_prefixed_name_with_its_defaults_is_accepted() -> None:
    cookie = parse(MINIMAL + "cookie:\n  name: __Host-session\n").cookie
    assert (cookie.secure, cookie.domain, cookie.path) == (True, None, "/")


def test_a_name_that_only_resembles_a_prefix_is_not_checked() -> None:
    for name in ("_Host-s", "__Hosts", "Host-s", "x__Host-s"):
        assert parse(MINIMAL + f"cookie:\n  name: {name}\n  secure: false\n").cookie.name == name


def test_chunk_size_over_the_browser_limit_is_rejected() -> None:
    assert errors_of(MINIMAL + "cookie:\n  chunk_size: 4094\n") == [
        "cookie.chunk_size: 4094 is more than browsers accept for name=value; use at most 4093"
    ]


def test_chunk_size_at_the_browser_limit_is_accepted() -> None:
    assert parse(MINIMAL + "cookie:\n  chunk_size: 4093\n").cookie.chunk_size == 4093


def test_cookie_name_with_a_dot_is_rejected() -> None:
    assert errors_of(MINIMAL + "cookie:\n  name: a.b\n") == [
        "cookie.name: 'a.b' is not a valid cookie name (letters, digits, -_ and no '.')"
    ]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("14d", 1_209_600), ("12h", 43_200), ("30m", 1_800), ("45s", 45), ("600", 600), (90, 90)],
)
def test_durations_accept_days_hours_minutes_and_seconds(value: str | int, seconds: int) -> None:
    assert parse(MINIMAL + f"cookie:\n  max_age: {value}\n").cookie.max_age == seconds


@pytest.mark.parametrize("value", ["2w", "1.5h", "-5", "0", "h"])
def test_malformed_duration_is_reported(value: str) -> None:
    (error,) = errors_of(MINIMAL + f"session:\n  refresh_after: '{value}'\n")
    assert error == (
        "session.refresh_after: expected seconds or a duration like '14d', '12h', '30m', '45s', "
        f"got '{value}'"
    )


def test_session_header_names_must_differ() -> None:
    assert errors_of(MINIMAL + "session:\n  header: X-A\n  set_header: x_a\n") == [
        "session: header, set_header, status_header and patch_header must be four different"
        " names once case and every character other than letters and digits are ignored"
    ]


def test_patch_header_defaults_to_x_patch_session() -> None:
    assert parse(MINIMAL).session.patch_header == "X-Patch-Session"
    assert parse(MINIMAL + "session:\n  patch_header: X-Merge\n").session.patch_header == "X-Merge"


@pytest.mark.parametrize("spelling", ["X.Session", "x_set_session", "X-SESSION-STATUS"])
def test_patch_header_must_differ_from_the_other_names_once_folded(spelling: str) -> None:
    assert errors_of(MINIMAL + f"session:\n  patch_header: {spelling}\n") == [
        "session: header, set_header, status_header and patch_header must be four different"
        " names once case and every character other than letters and digits are ignored"
    ]


def test_header_limit_must_carry_a_full_session() -> None:
    text = MINIMAL + "session:\n  max_json_bytes: 8192\nlimits:\n  max_header_bytes: 10000\n"
    assert errors_of(text) == [
        "limits.max_header_bytes: 10000 cannot carry a full session of 12 chunks of 4000 bytes; "
        "raise it to at least 49024"
    ]


def test_session_json_cap_above_the_header_limit_is_reported() -> None:
    text = MINIMAL + "limits:\n  max_header_bytes: 65536\n"
    assert errors_of(text) == [
        "session.max_json_bytes: 131072 is more than limits.max_header_bytes (65536), so a "
        "session that large could never pass the proxy's own header limit; lower it or raise "
        "limits.max_header_bytes"
    ]


def test_session_json_cap_equal_to_the_header_limit_is_valid() -> None:
    config = parse(
        MINIMAL + "session:\n  max_json_bytes: 65536\nlimits:\n  max_header_bytes: 65536\n"
    )
    assert config.session.max_json_bytes == config.limits.max_header_bytes == 65536


def test_request_head_limit_defaults_to_a_full_session_and_32_kib_more() -> None:
    limits = parse(MINIMAL).limits
    assert limits.max_request_head_bytes == 12 * 4000 + 1024 + 32 * 1024 == 81_792
    assert Limits().max_request_head_bytes == limits.max_request_head_bytes


def test_request_head_limit_default_follows_the_cookie_settings() -> None:
    config = parse(MINIMAL + "cookie:\n  chunk_size: 3000\n  max_chunks: 20\n")
    assert config.limits.max_request_head_bytes == 20 * 3000 + 1024 + 32 * 1024


@pytest.mark.parametrize(("fmt", "legacy"), [("flask", 4096), ("flask-chunked", 10 * 4096)])
def test_request_head_limit_default_makes_room_for_the_legacy_cookies(
    fmt: str, legacy: int
) -> None:
    migrate = f"migrate:\n  format: {fmt}\n  secret_keys: ['{'k' * 32}']\n"
    config = parse(MINIMAL + migrate)
    assert config.limits.max_request_head_bytes == 81_792 + legacy


def test_request_head_limit_must_carry_a_full_session_and_a_request_line() -> None:
    text = MINIMAL + "limits:\n  max_request_head_bytes: 50000\n"
    assert errors_of(text) == [
        "limits.max_request_head_bytes: 50000 cannot carry a full session of 12 chunks of 4000 "
        "bytes with a request line; raise it to at least 53120"
    ]
    assert parse(MINIMAL + "limits:\n  max_request_head_bytes: 53120\n").limits == Limits(
        max_request_head_bytes=53_120
    )


def test_request_head_limit_out_of_range_is_reported() -> None:
    assert errors_of(MINIMAL + "limits:\n  max_request_head_bytes: 4096\n") == [
        "limits.max_request_head_bytes: must be between 8192 and 16777216, got 4096"
    ]


def test_max_connections_defaults_to_0_derived_from_the_fd_limit_at_start() -> None:
    assert parse(MINIMAL).limits.max_connections == 0
    assert parse(MINIMAL + "limits:\n  max_connections: 50\n").limits.max_connections == 50


@pytest.mark.parametrize("value", ["-1", "yes", "1.5"])
def test_max_connections_that_is_not_a_count_is_reported(value: str) -> None:
    errors = errors_of(MINIMAL + f"limits:\n  max_connections: {value}\n")
    assert len(errors) == 1
    assert errors[0].startswith("limits.max_connections: ")


def test_summary_shows_the_limits_in_force() -> None:
    summary = "\n".join(iter_summary(parse(MINIMAL + "limits:\n  max_connections: 50\n")))
    assert "head 81792 B" in summary
    assert "50 connections a worker" in summary
    default = "\n".join(iter_summary(parse(MINIMAL)))
    assert "connections a worker from RLIMIT_NOFILE" in default


def test_trusted_proxy_that_is_not_a_cidr_is_reported() -> None:
    assert errors_of(MINIMAL + "trusted_proxies: [10.0.0.0/33]\n") == [
        "trusted_proxies[0]: expected a CIDR like 10.0.0.0/8, got '10.0.0.0/33'"
    ]


def test_trusted_proxies_are_networks() -> None:
    config = parse(MINIMAL + "trusted_proxies: [10.0.0.0/8, '::1']\n")
    assert config.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )


# --- listen addresses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("'[::]:8080'", "::", 8080),
        ("'[::1]:9000'", "::1", 9000),
        ("':8080'", "0.0.0.0", 8080),
        ("localhost:80", "localhost", 80),
    ],
)
def test_listen_address_is_parsed(text: str, host: str, port: int) -> None:
    assert parse(MINIMAL + f"listen: {text}\n").listen == ListenAddress(host, port)


def test_ipv6_listen_address_is_shown_in_brackets() -> None:
    assert str(ListenAddress("::1", 9000)) == "[::1]:9000"
    assert str(ListenAddress("127.0.0.1", 9000)) == "127.0.0.1:9000"


@pytest.mark.parametrize("text", ["localhost", "8080", "'::1:80'", "'[::1]'"])
def test_listen_address_without_host_and_port_is_reported(text: str) -> None:
    (error,) = errors_of(MINIMAL + f"listen: {text}\n")
    assert error.startswith("listen: expected host:port (e.g. 0.0.0.0:8080 or [::]:8080), got ")


@pytest.mark.parametrize("port", [0, 65536])
def test_listen_port_out_of_range_is_reported(port: int) -> None:
    assert errors_of(MINIMAL + f"listen: 127.0.0.1:{port}\n") == [
        f"listen: port must be 1-65535, got {port}"
    ]


def test_admin_listen_must_not_share_the_proxied_port() -> None:
    assert errors_of(MINIMAL + "listen: 0.0.0.0:8080\nadmin_listen: 127.0.0.1:8080\n") == [
        "admin_listen: must not share the proxied port with listen"
    ]


# --- files and YAML -----------------------------------------------------------------------


def test_yaml_syntax_error_names_the_line_without_a_chained_traceback() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("secrets:\n  - a\nupstreams: [x\nworkers: 1\n", source="proxy.yaml")
    (error,) = caught.value.errors
    assert error.startswith("proxy.yaml: not valid YAML at line 4, column ")
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml")
    assert caught.value.errors == [
        f"{tmp_path / 'absent.yaml'}: cannot read the configuration: No such file or directory"
    ]


def test_config_path_prefers_flag_then_environment_then_default() -> None:
    env = {"SESSION_SIDECAR_CONFIG": "/etc/env.yaml"}
    assert config_path("/flag.yaml", env) == "/flag.yaml"
    assert config_path(None, env) == "/etc/env.yaml"
    assert config_path(None, {}) == "config/proxy.yaml"


# --- readiness ----------------------------------------------------------------------------

TWO_UPSTREAMS = with_upstreams(
    "{url: http://127.0.0.1:8001, name: app}",
    "{url: http://127.0.0.1:8002, name: static, path_prefix: /static}",
)


def test_readiness_requires_every_upstream_by_default() -> None:
    config = parse(TWO_UPSTREAMS)
    assert config.readiness.require == "all"
    assert [up.name for up in config.readiness.probed(config.upstreams)] == ["app", "static"]
    assert not config.readiness.ready(probed=2, unreachable=1)


def test_readiness_any_is_ready_while_one_upstream_answers() -> None:
    config = parse(TWO_UPSTREAMS + "readiness: {require: ANY}\n")
    assert config.readiness.require == "any"
    assert config.readiness.ready(probed=2, unreachable=1)
    assert not config.readiness.ready(probed=2, unreachable=2)


def test_readiness_can_name_the_upstreams_it_needs() -> None:
    config = parse(TWO_UPSTREAMS + "readiness: {require: [app]}\n")
    assert config.readiness.require == ("app",)
    assert [up.name for up in config.readiness.probed(config.upstreams)] == ["app"]


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("{require: some}", "readiness.require: expected all, any or a list of upstream names"),
        ("{require: []}", "readiness.require: expected all, any or a list of upstream names"),
        ("{require: [api]}", "readiness.require[0]: 'api' names no upstream; upstream names:"),
        ("{require: [app, app]}", "readiness.require[1]: 'app' is listed twice"),
        ("{need: all}", "readiness.need: unknown key"),
    ],
)
def test_bad_readiness_is_reported_with_its_path(snippet: str, message: str) -> None:
    errors = errors_of(TWO_UPSTREAMS + f"readiness: {snippet}\n")
    assert len(errors) == 1
    assert errors[0].startswith(message), errors


def test_body_timeout_defaults_to_nginx_client_body_timeout() -> None:
    assert parse(MINIMAL).limits.body_timeout == 60.0


def test_body_timeout_takes_fractional_seconds() -> None:
    assert parse(MINIMAL + "limits:\n  body_timeout: 2.5\n").limits.body_timeout == 2.5


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("0", "must be more than 0 and at most 86400, got 0"),
        ("-1", "must be more than 0 and at most 86400, got -1"),
        ("86401", "must be more than 0 and at most 86400, got 86401"),
        ("1m", "expected a number of seconds, got '1m'"),
        ("true", "expected a number of seconds, got True"),
    ],
)
def test_body_timeout_out_of_range_is_refused(value: str, error: str) -> None:
    assert errors_of(MINIMAL + f"limits:\n  body_timeout: {value}\n") == [
        f"limits.body_timeout: {error}"
    ]
