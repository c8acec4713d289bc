"""mailgate.config.load_settings: defaults, validation messages, env overrides, files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mailgate.config import load_settings
from mailgate.exceptions import ConfigError

# Any readable files will do: the config checks that they exist, not their contents.
CERT = __file__
KEY = str(Path(__file__).with_name("test_units.py"))

MAILDIR = {"name": "capture", "kind": "maildir", "path": "/tmp/mailgate-test-maildir"}


def data_with(**sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"providers": [dict(MAILDIR)]}
    data.update(sections)
    return data


def config_error(
    data: dict[str, Any], environ: dict[str, str] | None = None, *, runtime: bool = False
) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(data=data, environ=environ or {}, runtime=runtime)
    return str(info.value)


# ---------------------------------------------------------------- defaults


def test_defaults() -> None:
    s = load_settings(data=data_with(), environ={})
    assert s.source == "<config>"
    assert s.server.data_dir == Path("data")
    assert s.server.log_level == "info"
    assert s.server.hostname  # socket.getfqdn(): whatever this machine says, never empty
    assert s.database.url == ""
    assert s.smtp.listen == ["0.0.0.0:587"]
    assert s.smtp.implicit_tls_listen == []
    assert s.smtp.tls_cert is None
    assert s.smtp.tls_key is None
    assert s.smtp.require_auth is True
    assert s.smtp.trusted_networks == ["127.0.0.0/8", "::1/128"]
    assert s.smtp.max_message_size == 25_000_000
    assert s.smtp.max_recipients == 100
    assert s.smtp.max_received_headers == 50
    assert s.smtp.idle_timeout == 300.0
    assert s.smtp.auth_failure_delay == 1.0
    assert s.smtp.auth_plaintext_loopback is True
    assert s.retry.min_backoff == 300.0
    assert s.retry.max_backoff == 14_400.0
    assert s.retry.max_age == 432_000.0
    assert s.retry.jitter == 0.2
    assert s.delivery.enabled is True
    assert s.delivery.concurrency == 200
    assert s.delivery.claim_batch == 200
    assert s.delivery.lease == 900.0
    assert s.delivery.shutdown_grace == 20.0
    assert s.domains == []
    assert s.domain_names() == frozenset()
    assert [str(n) for n in s.smtp.networks()] == ["127.0.0.0/8", "::1/128"]
    (provider,) = s.providers
    assert provider.name == "capture"
    assert provider.kind == "maildir"
    assert provider.path == Path("/tmp/mailgate-test-maildir")
    assert provider.priority == 10
    assert provider.weight == 1
    assert provider.tls == "starttls"
    assert provider.max_connections == 10
    assert provider.connect_timeout == 30.0
    assert provider.command_timeout == 300.0
    assert provider.data_timeout == 600.0


def test_units_are_parsed_in_sections() -> None:
    s = load_settings(
        data=data_with(
            smtp={"max_message_size": "10MiB", "idle_timeout": "5m", "auth_failure_delay": "10ms"},
            retry={"min_backoff": "30s", "max_backoff": "1h30m", "max_age": "2d", "jitter": 0},
            delivery={"lease": 60},
        ),
        environ={},
    )
    assert s.smtp.max_message_size == 10_485_760
    assert s.smtp.idle_timeout == 300.0
    assert s.smtp.auth_failure_delay == pytest.approx(0.01)
    assert (s.retry.min_backoff, s.retry.max_backoff, s.retry.max_age) == (30.0, 5400.0, 172_800.0)
    assert s.retry.jitter == 0.0
    assert s.delivery.lease == 60.0


def test_domains_are_normalised() -> None:
    s = load_settings(
        data=data_with(domains=[{"name": " Example.COM. "}, {"name": "example.org"}]), environ={}
    )
    assert [d.name for d in s.domains] == ["example.com", "example.org"]
    assert s.domain_names() == frozenset({"example.com", "example.org"})


def test_domain_names_follow_a_copy_with_other_domains() -> None:
    s = load_settings(data=data_with(domains=[{"name": "example.com"}]), environ={})
    assert s.domain_names() == frozenset({"example.com"})
    other = s.model_copy(
        update={"domains": [*s.domains, s.domains[0].model_copy(update={"name": "example.org"})]}
    )
    assert other.domain_names() == frozenset({"example.com", "example.org"})
    assert s.domain_names() == frozenset({"example.com"})


def test_delivery_disabled_needs_no_provider() -> None:
    s = load_settings(data={"delivery": {"enabled": False}}, environ={})
    assert s.providers == []


@pytest.mark.parametrize(
    ("provider", "port"),
    [
        ({"tls": "starttls"}, 587),
        ({"tls": "none"}, 587),
        ({"tls": "implicit"}, 465),
        ({"tls": "implicit", "port": 2465}, 2465),
        ({"port": 25}, 25),
    ],
)
def test_provider_resolved_port(provider: dict[str, Any], port: int) -> None:
    up = {"name": "up", "kind": "smtp", "host": "smtp.example.net", **provider}
    s = load_settings(data={"providers": [up]}, environ={})
    assert s.providers[0].resolved_port() == port


def test_provider_resolved_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILGATE_TEST_UP_PASSWORD", "s3cret")
    providers = [
        {"name": "a", "kind": "smtp", "host": "h", "password": "inline"},
        {"name": "b", "kind": "smtp", "host": "h", "password_env": "MAILGATE_TEST_UP_PASSWORD"},
    ]
    s = load_settings(data={"providers": providers}, environ={})
    assert [p.resolved_password() for p in s.providers] == ["inline", "s3cret"]


# ---------------------------------------------------------------- frozen


def test_default_inflight_cap_holds_one_largest_message() -> None:
    huge = load_settings(data=data_with(smtp={"max_message_size": "900GB"}))
    assert huge.max_inflight_bytes == 900 * 1000**3
    set_ = load_settings(data=data_with(server={"max_inflight_bytes": "30MB"}))
    assert set_.max_inflight_bytes == 30_000_000


def test_settings_are_frozen() -> None:
    s = load_settings(data=data_with(), environ={})
    with pytest.raises(ValidationError, match="frozen"):
        s.source = "other.toml"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        s.smtp.max_recipients = 5  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        s.providers[0].host = "evil.example"  # type: ignore[misc]
    assert s.source == "<config>"
    assert s.smtp.max_recipients == 100


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # unknown keys
        (data_with(smtp={"bogus": 1}), "<config>: [smtp] bogus: unknown key"),
        (data_with(retry={"max_tries": 3}), "<config>: [retry] max_tries: unknown key"),
        (data_with(bogus={}), "<config>: bogus: unknown key"),
        (data_with(source="x.toml"), "<config>: source: unknown key"),
        # wrong types and ranges
        (
            data_with(smtp={"max_recipients": "lots"}),
            "<config>: [smtp] max_recipients: Input should be a valid integer, "
            "unable to parse string as an integer",
        ),
        (
            data_with(smtp={"max_recipients": 0}),
            "<config>: [smtp] max_recipients: Input should be greater than or equal to 1",
        ),
        (
            data_with(smtp={"require_auth": "maybe"}),
            "<config>: [smtp] require_auth: Input should be a valid boolean, "
            "unable to interpret input",
        ),
        (data_with(smtp={"listen": 5}), "<config>: [smtp] listen: Input should be a valid list"),
        (
            data_with(smtp={"listen": [5]}),
            "<config>: [smtp] listen.0: Input should be a valid string",
        ),
        (
            data_with(server={"log_level": "verbose"}),
            "<config>: [server] log_level: Input should be 'debug', 'info', 'warning' or 'error'",
        ),
        (
            data_with(retry={"jitter": 2}),
            "<config>: [retry] jitter: Input should be less than or equal to 1",
        ),
        # sizes and durations
        (
            data_with(smtp={"max_message_size": "25XB"}),
            "<config>: [smtp] max_message_size: invalid size '25XB' "
            "(use e.g. 25MB, 512KiB or a byte count)",
        ),
        (
            data_with(smtp={"max_message_size": "1TB"}),
            "<config>: [smtp] max_message_size: invalid size unit in '1TB' "
            "(use B, KB, MB, GB, KiB, MiB, GiB)",
        ),
        (
            data_with(smtp={"max_message_size": -1}),
            "<config>: [smtp] max_message_size: size must not be negative",
        ),
        (
            data_with(smtp={"idle_timeout": "5x"}),
            "<config>: [smtp] idle_timeout: invalid duration '5x' "
            "(use e.g. 30s, 5m, 4h, 5d or 1h30m)",
        ),
        (
            data_with(retry={"min_backoff": "2h", "max_backoff": "1h"}),
            "<config>: [retry]: min_backoff must not exceed max_backoff",
        ),
        (
            data_with(server={"max_inflight_bytes": "10MB"}, smtp={"max_message_size": "20MB"}),
            "<config>: (top level): [server] max_inflight_bytes (10000000 bytes) is smaller "
            "than [smtp] max_message_size (20000000 bytes): a message that big could never "
            "be accepted (its clients would be told to retry for ever)",
        ),
        # listen addresses and networks
        (
            data_with(smtp={"listen": ["::1:25"]}),
            "<config>: [smtp] listen: invalid address '::1:25': "
            "write IPv6 addresses as [addr]:port",
        ),
        (
            data_with(smtp={"listen": ["localhost"]}),
            "<config>: [smtp] listen: missing port in 'localhost' (use host:port)",
        ),
        (
            data_with(smtp={"trusted_networks": ["10.0.0.0/8", "bogus"]}),
            "<config>: [smtp] trusted_networks: 'bogus' is not a network (use e.g. 10.0.0.0/8)",
        ),
        # TLS
        (
            data_with(smtp={"tls_cert": CERT}),
            "<config>: [smtp]: tls_cert and tls_key must be set together",
        ),
        (
            data_with(smtp={"tls_key": KEY}),
            "<config>: [smtp]: tls_cert and tls_key must be set together",
        ),
        (
            data_with(smtp={"implicit_tls_listen": ["0.0.0.0:465"]}),
            "<config>: [smtp]: implicit_tls_listen needs tls_cert and tls_key",
        ),
        # database
        (
            data_with(database={"url": "mysql://db/mail"}),
            "<config>: [database] url: must start with sqlite:/// or postgresql://",
        ),
        (
            data_with(database={"url": "sqlite:///:memory:"}),
            "<config>: [database] url: SQLite needs a file path (sqlite:///path/to/mailgate.db)",
        ),
        # domains
        (
            data_with(domains=[{"name": "a@b"}]),
            '<config>: [[domains]] #1 (name = "a@b") name: must be a domain name such as '
            "example.com",
        ),
    ],
)
def test_errors_name_section_and_key(data: dict[str, Any], message: str) -> None:
    assert config_error(data) == message


@pytest.mark.parametrize(
    ("providers", "message"),
    [
        (
            [{"name": "x", "kind": "smtp", "host": "h", "port": "abc"}],
            '<config>: [[providers]] #1 (name = "x") port: Input should be a valid integer, '
            "unable to parse string as an integer",
        ),
        (
            [{"name": "x", "kind": "smtp", "host": "h", "port": 70000}],
            '<config>: [[providers]] #1 (name = "x") port: Input should be less than or equal '
            "to 65535",
        ),
        (
            [{"name": "x", "kind": "smtp", "host": "h", "bogus": 1}],
            '<config>: [[providers]] #1 (name = "x") bogus: unknown key',
        ),
        (
            [{"name": "x", "kind": "smtp", "host": "h", "connect_timeout": "soon"}],
            '<config>: [[providers]] #1 (name = "x") connect_timeout: invalid duration '
            "'soon' (use e.g. 30s, 5m, 4h, 5d or 1h30m)",
        ),
        (
            [{"name": "x", "kind": "carrier-pigeon"}],
            '<config>: [[providers]] #1 (name = "x") kind: '
            "Input should be 'smtp', 'maildir' or 'mx'",
        ),
        (
            [{"name": "x", "kind": "smtp"}],
            '<config>: [[providers]] #1 (name = "x"): an smtp provider needs host',
        ),
        (
            [MAILDIR, {"name": "y", "kind": "maildir"}],
            '<config>: [[providers]] #2 (name = "y"): a maildir provider needs path',
        ),
        (
            [{"name": "x", "kind": "smtp", "host": "h", "password": "a", "password_env": "B"}],
            '<config>: [[providers]] #1 (name = "x"): set password or password_env, not both',
        ),
        (
            [{"kind": "maildir", "path": "/tmp/m"}],
            "<config>: [[providers]] #1 name: Field required",
        ),
        (
            ["capture"],
            "<config>: [[providers]] #1: Input should be a valid dictionary or instance of "
            "ProviderSettings",
        ),
        (
            [MAILDIR, dict(MAILDIR)],
            "<config>: (top level): provider names must be unique",
        ),
        (
            [],
            '<config>: (top level): no [[providers]]: add one (kind = "maildir" for development)',
        ),
    ],
)
def test_provider_errors(providers: list[Any], message: str) -> None:
    assert config_error({"providers": providers}) == message


def test_missing_providers_when_delivery_enabled() -> None:
    message = '<config>: (top level): no [[providers]]: add one (kind = "maildir" for development)'
    assert config_error({}) == message
    assert config_error({"delivery": {"enabled": True}}) == message


@pytest.mark.parametrize(
    ("smtp", "suffix"),
    [
        ({"max_recipients": "x", "bogus": 1}, " (and 1 more problem)"),
        ({"max_recipients": "x", "bogus": 1, "other": 2}, " (and 2 more problems)"),
    ],
)
def test_more_problems_are_counted(smtp: dict[str, Any], suffix: str) -> None:
    message = config_error(data_with(smtp=smtp))
    assert message.startswith("<config>: [smtp] ")
    assert message.endswith(suffix)


def test_tls_pair_is_accepted(tls_files: dict[str, Any]) -> None:
    cert, key = tls_files["cert"], tls_files["key"]
    s = load_settings(
        data=data_with(
            smtp={
                "tls_cert": cert,
                "tls_key": key,
                "implicit_tls_listen": ["0.0.0.0:465", "[::]:465"],
            }
        ),
        environ={},
    )
    assert s.smtp.tls_cert == Path(cert)
    assert s.smtp.tls_key == Path(key)
    assert s.smtp.implicit_tls_listen == ["0.0.0.0:465", "[::]:465"]


def test_what_serve_would_stop_on_is_a_config_error(
    tls_files: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """check-config said ok, then serve stopped with a traceback: a key that is not its
    certificate's, a file that is no PEM, a data_dir it cannot write, a nameserver given by
    name, an unset password_env (every login failed), a size or time of zero."""
    other = tmp_path / "other.pem"
    other.write_bytes(tls_files["ca"].cert_pem.bytes())
    assert "tls_cert and tls_key do not load together" in config_error(
        data_with(smtp={"tls_cert": tls_files["cert"], "tls_key": str(other)}), runtime=True
    )
    assert "tls_cert and tls_key do not load together" in config_error(
        data_with(smtp={"tls_cert": CERT, "tls_key": KEY}), runtime=True
    )
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    assert config_error(data_with(server={"data_dir": str(a_file)}), runtime=True) == (
        f"<config>: [server] data_dir: {str(a_file)!r} is not a directory"
    )
    assert config_error(data_with(server={"data_dir": str(a_file / "sub")}), runtime=True) == (
        f"<config>: [server] data_dir: {str(a_file / 'sub')!r} cannot be made: "
        f"{str(a_file)!r} is not writable"
    )
    box = {"name": "c", "kind": "maildir", "path": str(a_file)}
    assert config_error(data_with(providers=[box]), runtime=True) == (
        f'<config>: [[providers]] #1 (name = "c"): {str(a_file)!r} is not a directory'
    )
    assert config_error(data_with(dns={"nameservers": ["localhost"]})) == (
        "<config>: [dns] nameservers: 'localhost': a nameserver is an IP address"
    )
    assert load_settings(data=data_with(dns={"nameservers": ["[::1]:53"]}), environ={})
    monkeypatch.delenv("MAILGATE_TEST_UNSET_XYZ", raising=False)
    up = {"name": "x", "kind": "smtp", "host": "h", "password_env": "MAILGATE_TEST_UNSET_XYZ"}
    assert config_error(data_with(providers=[up]), runtime=True) == (
        '<config>: [[providers]] #1 (name = "x"): password_env: the environment variable '
        "MAILGATE_TEST_UNSET_XYZ is not set"
    )
    # Another command, run by an operator without the service's environment or its
    # rights on data_dir, is not refused for what only serve needs.
    assert load_settings(data=data_with(providers=[up]), environ={})
    assert load_settings(data=data_with(server={"data_dir": str(a_file)}), environ={})
    for section, key, value in [
        ("smtp", "max_message_size", 0),
        ("smtp", "idle_timeout", "0s"),
        ("http", "max_body_size", "0"),
        ("delivery", "lease", 0),
        ("retry", "max_age", "0s"),
    ]:
        assert "greater than 0" in config_error(data_with(**{section: {key: value}})), key


def test_relative_paths_are_taken_from_the_files_directory(
    tmp_path: Path, tls_files: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the command's working directory: a CLI command run elsewhere opened
    another, empty queue."""
    etc = tmp_path / "etc"
    (etc / "tls").mkdir(parents=True)
    for name in ("cert", "key"):
        (etc / "tls" / f"{name}.pem").write_bytes(Path(tls_files[name]).read_bytes())
    config = etc / "relay.toml"
    config.write_text(
        '[smtp]\ntls_cert = "tls/cert.pem"\ntls_key = "tls/key.pem"\n'
        '[[providers]]\nname = "c"\nkind = "maildir"\npath = "mail"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s = load_settings(config, environ={"MAILGATE_DATABASE_URL": "sqlite:///q/mail.db"})
    assert s.server.data_dir == etc / "data"  # the default too
    assert s.smtp.tls_cert == etc / "tls" / "cert.pem"
    assert s.providers[0].path == etc / "mail"
    assert s.database_url == f"sqlite+aiosqlite:///{etc / 'q' / 'mail.db'}"
    absolute = load_settings(config, environ={"MAILGATE_SERVER_DATA_DIR": str(tmp_path / "d")})
    assert absolute.server.data_dir == tmp_path / "d"


# ---------------------------------------------------------------- environment


def test_env_overrides() -> None:
    environ = {
        "MAILGATE_SMTP_MAX_MESSAGE_SIZE": "1MB",
        "MAILGATE_SMTP_LISTEN": "a:1,b:2",
        "MAILGATE_SMTP_REQUIRE_AUTH": "false",
        "MAILGATE_RETRY_MIN_BACKOFF": "1m",
        "MAILGATE_RETRY_JITTER": "0.5",
        "MAILGATE_SERVER_HOSTNAME": "relay.example.com",
        "MAILGATE_DELIVERY_CONCURRENCY": "7",
        "MAILGATE_DATABASE_URL": "postgresql://mail@db/mailgate",
        "MAILGATE_NOT_A_SECTION": "ignored",
        "PATH": "/usr/bin",
    }
    s = load_settings(data=data_with(), environ=environ)
    assert s.smtp.max_message_size == 1_000_000
    assert s.smtp.listen == ["a:1", "b:2"]
    assert s.smtp.require_auth is False
    assert s.retry.min_backoff == 60.0
    assert s.retry.jitter == 0.5
    assert s.server.hostname == "relay.example.com"
    assert s.delivery.concurrency == 7
    assert s.database_url == "postgresql+asyncpg://mail@db/mailgate"


def test_a_mistake_in_the_environment_names_its_variable(tmp_path: Path) -> None:
    """It blamed the file, which has no such key; a file that is not UTF-8 was a
    traceback."""
    config = tmp_path / "relay.toml"
    config.write_text("[smtp]\n")
    environ = {"MAILGATE_SMTP_MAX_MESAGE_SIZE": "10MB"}
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ=environ)
    assert str(info.value) == (
        "MAILGATE_SMTP_MAX_MESAGE_SIZE (environment): [smtp] max_mesage_size: unknown key"
    )
    config.write_bytes(b'[server]\nhostname = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={})
    assert str(info.value) == f"{config}: not UTF-8 text (byte 24)"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a:1,b:2", ["a:1", "b:2"]),
        (" a:1 , b:2 ,", ["a:1", "b:2"]),
        ("[::1]:25", ["[::1]:25"]),
        ("127.0.0.1:2525", ["127.0.0.1:2525"]),
    ],
)
def test_env_list_override(value: str, expected: list[str]) -> None:
    s = load_settings(data=data_with(), environ={"MAILGATE_SMTP_LISTEN": value})
    assert s.smtp.listen == expected


def test_env_overrides_the_file_value_without_mutating_input() -> None:
    data = data_with(smtp={"listen": ["a:1"], "max_recipients": 5})
    s = load_settings(data=data, environ={"MAILGATE_SMTP_LISTEN": "b:2"})
    assert s.smtp.listen == ["b:2"]
    assert s.smtp.max_recipients == 5
    assert data["smtp"] == {"listen": ["a:1"], "max_recipients": 5}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"MAILGATE_SMTP_BOGUS": "1"},
            "MAILGATE_SMTP_BOGUS (environment): [smtp] bogus: unknown key",
        ),
        (
            {"MAILGATE_SMTP_MAX_MESSAGE_SIZE": "huge"},
            "MAILGATE_SMTP_MAX_MESSAGE_SIZE (environment): [smtp] max_message_size: "
            "invalid size 'huge' (use e.g. 25MB, 512KiB or a byte count)",
        ),
        (
            {"MAILGATE_SMTP_LISTEN": "a:1,b"},
            "MAILGATE_SMTP_LISTEN (environment): [smtp] listen: missing port in 'b' (use "
            "host:port)",
        ),
        (
            {"MAILGATE_RETRY_MAX_AGE": "forever"},
            "MAILGATE_RETRY_MAX_AGE (environment): [retry] max_age: invalid duration 'forever' "
            "(use e.g. 30s, 5m, 4h, 5d or 1h30m)",
        ),
    ],
)
def test_env_override_errors(environ: dict[str, str], message: str) -> None:
    assert config_error(data_with(), environ) == message


def test_env_override_of_a_non_table_section() -> None:
    with pytest.raises(ConfigError, match=r"MAILGATE_SMTP_LISTEN: \[smtp\] is not a table"):
        load_settings(data=data_with(smtp="x"), environ={"MAILGATE_SMTP_LISTEN": "a:1"})


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILGATE_SMTP_MAX_RECIPIENTS", "3")
    assert load_settings(data=data_with()).smtp.max_recipients == 3
    assert load_settings(data=data_with(), environ={}).smtp.max_recipients == 100


# ---------------------------------------------------------------- database_url


@pytest.mark.parametrize(
    ("database", "server", "expected"),
    [
        ({}, {}, "sqlite+aiosqlite:///data/mailgate.db"),
        (
            {},
            {"data_dir": "/var/lib/mailgate"},
            "sqlite+aiosqlite:////var/lib/mailgate/mailgate.db",
        ),
        ({"url": ""}, {"data_dir": "rel/dir"}, "sqlite+aiosqlite:///rel/dir/mailgate.db"),
        ({"url": "sqlite:////srv/q.db"}, {}, "sqlite+aiosqlite:////srv/q.db"),
        ({"url": "sqlite:///q.db"}, {}, "sqlite+aiosqlite:///q.db"),
        (
            {"url": "postgresql://mail:pw@db.internal:5432/mailgate"},
            {},
            "postgresql+asyncpg://mail:pw@db.internal:5432/mailgate",
        ),
        ({"url": "postgres://mail@db/mailgate"}, {}, "postgresql+asyncpg://mail@db/mailgate"),
    ],
)
def test_database_url(database: dict[str, str], server: dict[str, str], expected: str) -> None:
    s = load_settings(data=data_with(database=database, server=server), environ={})
    assert s.database_url == expected


# ---------------------------------------------------------------- files

RELAY_TOML = """\
[server]
hostname = "relay.example.com"
data_dir = "/var/lib/mailgate"

[smtp]
listen = ["0.0.0.0:587", "[::]:587"]
max_message_size = "10MB"

[retry]
max_age = "3d"

[[domains]]
name = "example.com"

[[providers]]
name = "ses"
kind = "smtp"
host = "email-smtp.eu-west-1.amazonaws.com"
tls = "implicit"
"""


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(RELAY_TOML)
    s = load_settings(path, environ={})
    assert s.source == str(path)
    assert s.server.hostname == "relay.example.com"
    assert s.smtp.listen == ["0.0.0.0:587", "[::]:587"]
    assert s.smtp.max_message_size == 10_000_000
    assert s.retry.max_age == 259_200.0
    assert s.domain_names() == frozenset({"example.com"})
    assert s.providers[0].resolved_port() == 465
    assert s.database_url == "sqlite+aiosqlite:////var/lib/mailgate/mailgate.db"


def test_load_from_file_with_env_override(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(RELAY_TOML)
    s = load_settings(str(path), environ={"MAILGATE_SMTP_MAX_MESSAGE_SIZE": "1MiB"})
    assert s.smtp.max_message_size == 1_048_576


def test_duplicate_table_is_a_toml_error(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(RELAY_TOML + "\n[retry]\njitter = 0\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert str(info.value).startswith(f"{path}: not valid TOML: ")


def test_file_validation_error_starts_with_path(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(RELAY_TOML.replace('max_message_size = "10MB"', "bogus = 1"))
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert str(info.value) == f"{path}: [smtp] bogus: unknown key"


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('[smtp]\nlisten = ["0.0.0.0:587"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert str(info.value).startswith(f"{path}: not valid TOML: ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert str(info.value) == f"{path}: file not found"


def test_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, environ={})
    assert str(info.value).startswith(f"{tmp_path}: cannot read: ")


def test_no_file_given() -> None:
    with pytest.raises(ConfigError, match=r"^no configuration file given$"):
        load_settings(environ={})


def test_missing_tls_file_is_named() -> None:
    data = data_with(smtp={"tls_cert": "/nonexistent/cert.pem", "tls_key": KEY})
    with pytest.raises(ConfigError) as exc:
        load_settings(data=data, environ={}, runtime=True)
    assert str(exc.value) == "<config>: [smtp] tls_cert: cannot read file '/nonexistent/cert.pem'"
    # Another command (an operator who may not read the service's key) is not refused.
    assert load_settings(data=data, environ={}).smtp.tls_cert == Path("/nonexistent/cert.pem")


def test_compat_section() -> None:
    s = load_settings(data=data_with(), environ={})
    assert s.compat.enabled == ["mailsage", "mailstack", "messagepipe"]
    assert s.compat.default_from == "" and s.compat.send_wait == 10.0
    env = {"MAILGATE_COMPAT_ENABLED": "mailsage", "MAILGATE_COMPAT_SEND_WAIT": "2s"}
    s = load_settings(data=data_with(), environ=env)
    assert s.compat.enabled == ["mailsage"] and s.compat.send_wait == 2.0
    message = config_error(data_with(compat={"enabled": ["mailsage", "sendgrid"]}))
    assert "[compat] enabled" in message and "sendgrid" in message
    assert "send_wait" in config_error(data_with(compat={"send_wait": "10m"}))


def test_direct_delivery_has_its_own_default_connection_cap() -> None:
    """kind = "mx" shares max_connections across every destination: a smarthost's 10 let
    ten unanswering MX hosts hold up mail to every other domain for minutes."""
    from mailgate.config_sending import ProviderSettings

    assert ProviderSettings(name="d", kind="mx").max_connections == 100
    assert ProviderSettings(name="d", kind="mx", max_connections=7).max_connections == 7
    assert ProviderSettings(name="s", kind="smtp", host="h").max_connections == 10
