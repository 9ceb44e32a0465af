"""The ``migrate:`` section: off unless present, Flask's settings as defaults, no owned names."""

from __future__ import annotations

import pytest

from proxy.config import Config, ConfigError, MigrateConfig, iter_summary, parse_config

SECRET = "config-test-secret-0123456789-abcdefghijkl"
FLASK_KEY = "flask-dev-key"
ENV = {"SESSION_SECRET": SECRET, "FLASK_SECRET_KEY": FLASK_KEY, "OLD_KEY": "older-flask-key"}
MINIMAL = """\
secrets:
  - ${SESSION_SECRET}
upstreams:
  - url: http://127.0.0.1:8001
"""


def parse(text: str) -> Config:
    return parse_config(text, env=ENV)


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return caught.value.errors


def migrate(*lines: str) -> str:
    return MINIMAL + "migrate:\n" + "".join(f"  {line}\n" for line in lines)


def test_migration_is_off_when_the_section_is_absent() -> None:
    assert parse(MINIMAL).migrate is None


def test_migration_takes_flasks_defaults() -> None:
    config = parse(migrate("format: flask", 'secret_keys: ["${FLASK_SECRET_KEY}"]'))
    m = config.migrate
    assert m is not None
    assert (m.format, m.cookie_name, m.max_age, m.salt, m.digest) == (
        "flask",
        "session",
        31 * 86400,
        "cookie-session",
        "sha1",
    )
    assert [k.value for k in m.secret_keys] == [FLASK_KEY.encode()]
    assert m.legacy_names() == ("session",)
    assert (m.cookie_path, m.cookie_domain) == ("/", None)  # Flask's: Path=/, host-only


def test_every_migrate_key_is_read() -> None:
    m = parse(
        migrate(
            "format: flask-chunked",
            "cookie_name: legacy",
            'secret_keys: ["${FLASK_SECRET_KEY}", {env: OLD_KEY}]',
            "max_age: 7d",
            "salt: other-salt",
            "digest: sha256",
            "cookie_path: /shop",
            "cookie_domain: .example.com",
        )
    ).migrate
    assert m == MigrateConfig(
        format="flask-chunked",
        cookie_name="legacy",
        secret_keys=m.secret_keys if m else (),
        max_age=7 * 86400,
        salt="other-salt",
        digest="sha256",
        cookie_path="/shop",
        cookie_domain=".example.com",
    )
    assert m is not None
    assert [k.value for k in m.secret_keys] == [FLASK_KEY.encode(), b"older-flask-key"]
    assert m.legacy_names() == tuple(f"legacy:{i}" for i in range(10))


def test_migrate_format_is_required() -> None:
    assert errors_of(migrate('secret_keys: ["${FLASK_SECRET_KEY}"]')) == [
        "migrate.format: expected flask (one session cookie) or flask-chunked (session:0..9), "
        "got None"
    ]


def test_migrate_needs_at_least_one_secret_key() -> None:
    assert errors_of(migrate("format: flask")) == [
        "migrate.secret_keys: at least one secret is required (newest first); list Flask's "
        "SECRET_KEY then SECRET_KEY_FALLBACKS, e.g. ['${FLASK_SECRET_KEY}']"
    ]


def test_migrate_secret_key_from_an_unset_variable_is_reported() -> None:
    errors = errors_of(migrate("format: flask", 'secret_keys: ["${NOT_SET}"]'))
    assert errors[0] == (
        "migrate.secret_keys[0]: environment variable NOT_SET is not set "
        "(set it or remove ${NOT_SET})"
    )
    assert not any(FLASK_KEY in e for e in errors)


@pytest.mark.parametrize("digest", ["md5", "sha384", "none"])
def test_migrate_digest_is_one_flask_can_use(digest: str) -> None:
    assert errors_of(migrate("format: flask", "secret_keys: [k]", f"digest: {digest}")) == [
        f"migrate.digest: expected one of sha1 | sha256 | sha512, got '{digest}'"
    ]


def test_migrate_max_age_is_a_duration() -> None:
    (error,) = errors_of(migrate("format: flask", "secret_keys: [k]", "max_age: 1w"))
    assert error.startswith("migrate.max_age: expected seconds or a duration like '14d'")


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (
            "cookie_path: shop",
            "migrate.cookie_path: expected an absolute path like '/', got 'shop'",
        ),
        (
            "cookie_path: '/a;b'",
            "migrate.cookie_path: expected an absolute path like '/', got '/a;b'",
        ),
        (
            "cookie_domain: 'example.com; Secure'",
            "migrate.cookie_domain: expected a domain like example.com, got 'example.com; Secure'",
        ),
    ],
)
def test_the_legacy_cookies_scope_is_checked_like_the_proxys(line: str, error: str) -> None:
    assert errors_of(migrate("format: flask", "secret_keys: [k]", line)) == [error]


def test_unknown_migrate_key_is_reported() -> None:
    (error,) = errors_of(migrate("format: flask", "secret_keys: [k]", "secret_key: k"))
    assert error.startswith(
        "migrate.secret_key: unknown key; known keys: cookie_domain, cookie_name, cookie_path, "
    )


@pytest.mark.parametrize("name", ["session.0", "session.11"])
def test_legacy_cookie_name_may_not_be_a_proxy_chunk(name: str) -> None:
    assert errors_of(migrate("format: flask", "secret_keys: [k]", f"cookie_name: {name}")) == [
        f"migrate.cookie_name: {name!r} is one of the proxy's own chunk cookies (session.0, "
        "session.1, ...); set it to the legacy app's SESSION_COOKIE_NAME"
    ]


def test_legacy_cookie_may_share_the_proxys_base_name() -> None:
    # The proxy owns only session.0, session.1...; Flask's bare "session" is not among them.
    m = parse(migrate("format: flask", "secret_keys: [k]")).migrate
    assert m is not None
    assert m.cookie_name == "session"


def test_summary_shows_migration_without_its_keys() -> None:
    config = parse(migrate("format: flask-chunked", 'secret_keys: ["${FLASK_SECRET_KEY}"]'))
    summary = "\n".join(iter_summary(config))
    assert "migrate       flask-chunked cookie session:0..session:9, 1 key(s)" in summary
    assert FLASK_KEY not in summary


def test_unquoted_variable_in_a_flow_list_gets_a_hint() -> None:
    # YAML reads "{" in [${VAR}] as the start of a mapping, so the list must quote it.
    (error,) = errors_of(migrate("format: flask", "secret_keys: [${FLASK_SECRET_KEY}]"))
    assert error.endswith("(in a [...] list write '${VAR}' in quotes, or use a '- ${VAR}' line)")
