"""Settings from the environment: defaults, the secret key file, refusals naming the setting."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from circulars.config import ConfigError, Settings, load_settings, parse_smtp_url


def load(tmp_path: Path, **env: str) -> Settings:
    return load_settings({"INSTANCE_PATH": str(tmp_path), **env})


# --- defaults -------------------------------------------------------------------------------


def test_defaults_run_embedded_under_the_instance_folder(tmp_path: Path) -> None:
    settings = load(tmp_path)

    assert settings.instance_path == tmp_path.resolve()
    assert settings.database_url == f"sqlite:///{tmp_path.resolve() / 'circulars.db'}"
    assert settings.broker_url == f"sqla+sqlite:///{tmp_path.resolve() / 'broker.db'}"
    assert settings.smtp_url is None
    assert settings.capture_mail is True
    relay = settings.smtp_relay
    assert (relay.host, relay.port, relay.security) == ("127.0.0.1", 8025, "none")
    assert settings.base_url == "http://127.0.0.1:5000"
    assert settings.mail_from == "secretariat@example.org"
    assert settings.max_upload_size == 25 * 1024 * 1024
    assert settings.timezone == "UTC"
    assert settings.brand_color == "#1f4e79"
    assert settings.org_social == ()
    assert settings.uploads_path == tmp_path.resolve() / "uploads"


def test_empty_values_fall_back_to_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path, DATABASE_URL="", SMTP_URL="", MAX_UPLOAD_SIZE="", TIMEZONE="")

    assert settings.database_url.startswith("sqlite:///")
    assert settings.capture_mail is True
    assert settings.max_upload_size == 25 * 1024 * 1024
    assert settings.timezone == "UTC"


def test_secret_key_is_generated_private_and_reused(tmp_path: Path) -> None:
    instance = tmp_path / "nested" / "instance"  # created on first start

    first = load_settings({"INSTANCE_PATH": str(instance)})

    key_file = instance / "secret_key"
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() == first.secret_key
    assert len(first.secret_key) >= 32

    second = load_settings({"INSTANCE_PATH": str(instance)})
    assert second.secret_key == first.secret_key


def test_separate_instances_get_different_secret_keys(tmp_path: Path) -> None:
    one = load(tmp_path / "one")
    two = load(tmp_path / "two")
    assert one.secret_key != two.secret_key


def test_secret_key_from_environment_is_used_and_no_file_written(tmp_path: Path) -> None:
    settings = load(tmp_path, SECRET_KEY="a-long-enough-secret-key-value")

    assert settings.secret_key == "a-long-enough-secret-key-value"
    assert not (tmp_path / "secret_key").exists()


def test_short_secret_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load(tmp_path, SECRET_KEY="short")


def test_smtp_url_turns_capture_off(tmp_path: Path) -> None:
    settings = load(tmp_path, SMTP_URL="smtp+starttls://relay.example.org")

    assert settings.capture_mail is False
    relay = settings.smtp_relay
    assert (relay.host, relay.port, relay.security) == ("relay.example.org", 587, "starttls")


# --- refusals -------------------------------------------------------------------------------

MALFORMED = [
    ("SMTP_URL", "http://mail.example.org"),
    ("SMTP_URL", "mail.example.org:25"),
    ("SMTP_URL", "smtp://"),
    ("SMTP_URL", "smtp://:25"),
    ("SMTP_URL", "smtp://mail.example.org:abc"),
    ("SMTP_URL", "smtp://mail.example.org:70000"),
    ("DATABASE_URL", "mysql://user@host/db"),
    ("DATABASE_URL", "circulars.db"),
    ("CELERY_BROKER_URL", "http://broker.example.org"),
    ("CELERY_BROKER_URL", "localhost:6379"),
    ("BASE_URL", "circulars.example.org"),
    ("BASE_URL", "ftp://circulars.example.org"),
    ("BASE_URL", "https://circulars.example.org/?x=1"),
    ("MAIL_FROM", "not-an-address"),
    ("MAIL_FROM", "secretariat@"),
    ("MAX_UPLOAD_SIZE", "abc"),
    ("MAX_UPLOAD_SIZE", "0"),
    ("MAX_UPLOAD_SIZE", "-5MB"),
    ("MAX_UPLOAD_SIZE", "25 TB"),
    ("TIMEZONE", "Mars/Olympus_Mons"),
    ("TIMEZONE", "../../etc/passwd"),
    ("BRAND_COLOR", "red"),
    ("BRAND_COLOR", "#12345"),
    ("BRAND_COLOR", "#1f4e79; background: url(x)"),
    ("ORG_SOCIAL", "Twitter"),
    ("ORG_SOCIAL", "Twitter=twitter.com/network"),
    ("ORG_SOCIAL", "=https://example.org"),
    ("ORG_SOCIAL", "Web=javascript:alert(1)"),
    ("SEND_BATCH_SIZE", "0"),
    ("SEND_BATCH_SIZE", "many"),
    ("SEND_CLAIM_LEASE_SECONDS", "4"),
    ("SEND_CLAIM_LEASE_SECONDS", "ten minutes"),
    ("SEND_STALL_SECONDS", "0"),
    ("SEND_SWEEP_INTERVAL", "3601"),
    ("LOG_LEVEL", "LOUD"),
]


@pytest.mark.parametrize(("name", "value"), MALFORMED)
def test_malformed_value_is_refused_naming_the_setting(
    tmp_path: Path, name: str, value: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, **{name: value})
    assert name in str(caught.value)


def test_config_error_for_smtp_url_does_not_print_the_password(tmp_path: Path) -> None:
    # Start-up errors end up in logs and bug reports; the relay password must not.
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, SMTP_URL="smtp://mailer:Hunter2-relay-secret@mail.example.org:99999")
    assert "SMTP_URL" in str(caught.value)
    assert "Hunter2-relay-secret" not in str(caught.value)


# --- valid values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1048576", 1048576),
        ("512KB", 512 * 1024),
        ("25MB", 25 * 1024**2),
        ("10MiB", 10 * 1024**2),
        ("1gb", 1024**3),
        (" 2 MB ", 2 * 1024**2),
    ],
)
def test_upload_size_as_operators_write_it(tmp_path: Path, value: str, expected: int) -> None:
    assert load(tmp_path, MAX_UPLOAD_SIZE=value).max_upload_size == expected


def test_org_social_pairs_are_parsed(tmp_path: Path) -> None:
    settings = load(
        tmp_path, ORG_SOCIAL="Mastodon=https://social.example/@net, Web = https://example.org/"
    )
    assert settings.org_social == (
        ("Mastodon", "https://social.example/@net"),
        ("Web", "https://example.org/"),
    )


def test_base_url_loses_its_trailing_slash(tmp_path: Path) -> None:
    assert load(tmp_path, BASE_URL="https://circulars.example.org/").base_url == (
        "https://circulars.example.org"
    )


def test_mail_from_is_normalised_and_gives_the_mail_domain(tmp_path: Path) -> None:
    settings = load(tmp_path, MAIL_FROM="Secretariat@Network.Example.ORG")
    assert settings.mail_domain == "network.example.org"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "postgres://user:pw@db.example.org/circulars",
            "postgresql+psycopg://user:pw@db.example.org/circulars",
        ),
        (
            "postgresql://user:pw@db.example.org/circulars",
            "postgresql+psycopg://user:pw@db.example.org/circulars",
        ),
        ("postgresql+psycopg://u@db/c", "postgresql+psycopg://u@db/c"),
        ("sqlite:////srv/circulars/circulars.db", "sqlite:////srv/circulars/circulars.db"),
    ],
)
def test_database_url_scheme_is_rewritten_for_psycopg3(
    tmp_path: Path, value: str, expected: str
) -> None:
    assert load(tmp_path, DATABASE_URL=value).database_url == expected


@pytest.mark.parametrize(
    "value",
    [
        "redis://redis:6379/0",
        "rediss://redis.example.org:6380/1",
        "amqp://guest@rabbit//",
        "sqla+sqlite:////tmp/broker.db",
        "sqla+postgresql+psycopg://u@db/broker",
    ],
)
def test_broker_urls_that_are_accepted(tmp_path: Path, value: str) -> None:
    assert load(tmp_path, CELERY_BROKER_URL=value).broker_url == value


# --- SMTP URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "port", "security"),
    [
        ("smtp://mail.example.org", "mail.example.org", 25, "none"),
        ("smtp://mail.example.org:2525", "mail.example.org", 2525, "none"),
        ("smtp+starttls://mail.example.org", "mail.example.org", 587, "starttls"),
        ("smtp+starttls://mail.example.org:2587", "mail.example.org", 2587, "starttls"),
        ("smtps://mail.example.org", "mail.example.org", 465, "tls"),
        ("smtps://mail.example.org:1465", "mail.example.org", 1465, "tls"),
    ],
)
def test_parse_smtp_url_schemes_and_ports(url: str, host: str, port: int, security: str) -> None:
    relay = parse_smtp_url(url)
    assert (relay.host, relay.port, relay.security) == (host, port, security)
    assert relay.username is None
    assert relay.password is None
    assert relay.label == f"{host}:{port}"


@pytest.mark.parametrize("scheme", ["smtp", "smtp+starttls", "smtps"])
def test_parse_smtp_url_credentials_are_percent_decoded(scheme: str) -> None:
    relay = parse_smtp_url(
        f"{scheme}://news%40network.example:p%40ss%3Aw%2Frd%25@relay.example.org"
    )
    assert relay.username == "news@network.example"
    assert relay.password == "p@ss:w/rd%"
    assert relay.host == "relay.example.org"


@pytest.mark.parametrize(
    "url", ["http://mail.example.org", "smtp://", "smtp://mail.example.org:port", "smtp://h:65536"]
)
def test_parse_smtp_url_refuses(url: str) -> None:
    with pytest.raises(ValueError):
        parse_smtp_url(url)


# --- what an admin is shown -----------------------------------------------------------------


def test_public_settings_hide_secret_key_and_smtp_password(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        SECRET_KEY="k" * 40,
        SMTP_URL="smtps://mailer:Relay-Pa55word@relay.example.org",
    )

    shown = settings.public()

    assert "secret_key" not in shown
    assert "k" * 40 not in repr(shown)
    assert "Relay-Pa55word" not in repr(shown)
    assert "relay.example.org" in shown["smtp_url"]
    assert shown["mail_from"] == settings.mail_from


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "postgresql+psycopg://circulars:Db-Pa55word@db.example.org/circulars"),
        ("CELERY_BROKER_URL", "redis://:Broker-Pa55word@redis.example.org:6379/0"),
    ],
)
def test_public_settings_hide_other_passwords(tmp_path: Path, name: str, value: str) -> None:
    # public() promises "no secrets, no passwords": URLs with credentials are shown without them.
    shown = load(tmp_path, **{name: value}).public()
    assert "Pa55word" not in repr(shown)


def test_crash_recovery_settings(tmp_path: Path) -> None:
    from datetime import timedelta

    from circulars.tasks import sweep_schedule
    from circulars.wiring import send_context

    settings = load(tmp_path)
    assert (
        settings.send_claim_lease_seconds,
        settings.send_stall_seconds,
        settings.send_sweep_interval,
    ) == (600, 120, 60)
    settings = load(
        tmp_path,
        SEND_CLAIM_LEASE_SECONDS="15",
        SEND_STALL_SECONDS="4",
        SEND_SWEEP_INTERVAL="2",
        SMTP_URL="smtp://127.0.0.1:2525",
    )
    assert send_context(settings).claim_lease == timedelta(seconds=15)
    sweep = sweep_schedule(settings)["sweep-stalled-sends"]
    # A sweep left in the queue past the next one's time is dropped, not run late.
    assert sweep["schedule"] == 2.0 and sweep["options"] == {"expires": 2.0}
