"""Every setting, read from the environment in one place, with embedded defaults.

A malformed value stops start-up with a message naming the setting, so an
operator learns about a typo before the first circular goes out, not after.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INSTANCE = PROJECT_ROOT / "instance"

#: Where the embedded capture server listens when SMTP_URL is not set.
CAPTURE_HOST = "127.0.0.1"
CAPTURE_PORT = 8025


class ConfigError(ValueError):
    """A setting has a value we refuse to start with."""


@dataclass(frozen=True)
class SmtpRelay:
    """One outgoing SMTP relay, parsed from an `smtp://` style URL, with its share and limits.

    A limit of None means none: the relay takes what we send.
    """

    host: str
    port: int
    security: str  # "none", "starttls" or "tls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    weight: int = 1
    per_second: int | None = None
    per_hour: int | None = None
    per_day: int | None = None
    max_connections: int | None = None

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def key(self) -> str:
        """What names the relay in the state all workers share (limits, connections, health)."""
        return f"{self.username}@{self.label}" if self.username else self.label

    @property
    def limited(self) -> bool:
        return any(
            limit is not None
            for limit in (self.per_second, self.per_hour, self.per_day, self.max_connections)
        )


_SMTP_SCHEMES = {"smtp": ("none", 25), "smtp+starttls": ("starttls", 587), "smtps": ("tls", 465)}

#: Query parameters of a relay URL and their ranges.
RELAY_PARAMETERS = {
    "weight": (1, 1000),
    "per_second": (1, 100_000),
    "per_hour": (1, 100_000_000),
    "per_day": (1, 1_000_000_000),
    "max_connections": (1, 1000),
}


def _relay_parameters(query: str) -> dict[str, int]:
    values: dict[str, int] = {}
    for item in filter(None, query.split("&")):
        name, sep, raw = item.partition("=")
        if name not in RELAY_PARAMETERS:
            raise ValueError(f"unknown parameter {name!r}; use {', '.join(RELAY_PARAMETERS)}")
        if name in values:
            raise ValueError(f"{name} is given twice")
        low, high = RELAY_PARAMETERS[name]
        if not sep or not re.fullmatch(r"\d{1,10}", raw) or not low <= int(raw) <= high:
            raise ValueError(f"{name} must be a whole number from {low} to {high}")
        values[name] = int(raw)
    return values


def parse_smtp_url(value: str) -> SmtpRelay:
    """`smtp://user:password@host:port`, optionally with the relay's share and limits.

    As in `?weight=3&per_second=50&per_hour=20000&per_day=200000&max_connections=4`.
    """
    parts = urlsplit(value)
    if parts.scheme not in _SMTP_SCHEMES:
        raise ValueError(
            f"scheme must be one of {', '.join(sorted(_SMTP_SCHEMES))}, not {parts.scheme!r}"
        )
    if not parts.hostname:
        raise ValueError("a host name is required, as in smtp://mail.example.org:25")
    security, default_port = _SMTP_SCHEMES[parts.scheme]
    try:
        port = parts.port if parts.port is not None else default_port
    except ValueError as exc:
        raise ValueError("the port must be a number from 1 to 65535") from exc
    if not 1 <= port <= 65535:
        raise ValueError("the port must be a number from 1 to 65535")
    if parts.path not in ("", "/") or parts.fragment:
        raise ValueError("a relay URL has no path: smtp://host:port?parameters")
    return SmtpRelay(
        host=parts.hostname,
        port=port,
        security=security,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        **_relay_parameters(parts.query),
    )


def parse_smtp_relays(value: str) -> tuple[SmtpRelay, ...]:
    """Relay URLs separated by white space or commas; a bad one is named by position and URL.

    A comma separates two relays only where the next URL starts, so a comma
    inside a password needs no escaping.
    """
    urls = [url for url in re.split(r"\s+|,(?=\s*smtps?(?:\+starttls)?://)", value) if url]
    urls = [url.strip().rstrip(",") for url in urls]
    if not any(urls):
        raise ValueError("name at least one relay URL")
    relays: list[SmtpRelay] = []
    for number, url in enumerate(filter(None, urls), 1):
        try:
            relay = parse_smtp_url(url)
        except ValueError as exc:
            raise ValueError(f"relay {number} ({without_password(url)}): {exc}") from None
        if any(other.key == relay.key for other in relays):
            raise ValueError(f"relay {number} ({without_password(url)}) is listed twice")
        relays.append(relay)
    return tuple(relays)


def parse_size(value: str) -> int:
    """Sizes as operators write them: `25MB`, `512KB`, `1048576`."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]i?B|B)?\s*", value, re.IGNORECASE)
    if not match:
        raise ValueError("write a size such as 25MB, 512KB or a number of bytes")
    number, unit = int(match.group(1)), (match.group(2) or "B").upper().replace("I", "")
    size = number * {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[unit]
    if size <= 0:
        raise ValueError("the size must be larger than zero")
    return size


def parse_int(minimum: int, maximum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError as exc:
            raise ValueError("must be a whole number") from exc
        if not minimum <= number <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}")
        return number

    return parse


def parse_base_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http(s) URL such as https://circulars.example.org")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or fragment")
    return value.rstrip("/")


def parse_address(value: str) -> str:
    try:
        # test_environment admits *.test, for staging set-ups that never reach the internet.
        return validate_email(value, check_deliverability=False, test_environment=True).normalized
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc


def parse_database_url(value: str) -> str:
    if not re.match(r"^(sqlite|postgres(ql)?)(\+\w+)?://", value):
        raise ValueError("must start with sqlite:// or postgresql://")
    # The bare postgresql:// scheme would pick psycopg2, which we do not ship.
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", value)


def without_password(url: str) -> str:
    """The URL with its password replaced, for messages and admin pages."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def parse_broker_url(value: str) -> str:
    if not re.match(r"^(redis|rediss|amqp|amqps|pyamqp|sqla\+\w+(\+\w+)?)://", value):
        raise ValueError("must be a redis://, amqp:// or sqla+sqlite:// URL")
    return value


def parse_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("must be an IANA time zone such as Europe/Zurich") from exc
    return value


def parse_color(value: str) -> str:
    if not re.fullmatch(r"#[0-9a-fA-F]{6}", value):
        raise ValueError("must be a colour such as #1f4e79")
    return value


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


@dataclass(frozen=True)
class Settings:
    """The settings the application runs with; see README.md for each one."""

    instance_path: Path
    database_url: str
    broker_url: str
    smtp_url: str | None
    base_url: str
    secret_key: str
    mail_from: str
    max_upload_size: int
    # CSV imports are larger than attachments; only the import upload routes allow this.
    import_max_size: int = 200 * 1024**2
    import_writers: int = 2
    timezone: str = "UTC"
    send_batch_size: int = 200
    send_max_attempts: int = 5
    smtp_timeout: int = 30
    send_retry_delay: int = 10
    # Temporary relay errors in a row (across the send) after which it pauses itself; 0: never.
    send_pause_after_relay_errors: int = 10
    # Crash recovery: how long a batch holds its rows; when and how often the sweeper restarts
    # a send whose tasks were lost (killed worker, broker restart).
    send_claim_lease_seconds: int = 600
    send_stall_seconds: int = 120
    send_sweep_interval: int = 60
    unsubscribe_token_max_age_days: int = 365
    worker_concurrency: int = 2
    org_name: str = "Circulars"
    org_signoff: str = "The Secretariat"
    org_postal_address: str = ""
    org_email: str = ""
    org_phone: str = ""
    org_website: str = ""
    org_about: str = ""
    org_social: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    brand_color: str = "#1f4e79"
    log_level: str = "INFO"
    # Subscribing (double opt-in) and its abuse protection.
    confirm_token_max_age_days: int = 7
    confirmation_cooldown_minutes: int = 10
    confirmation_mails_per_hour: int = 500
    unconfirmed_purge_days: int = 30
    subscribe_consent_text: str = ""
    subscribe_rate_limit: str = "10 per minute; 100 per day"
    embed_allowed_origins: tuple[str, ...] = ()
    ratelimit_enabled: bool = True
    ratelimit_storage_url: str = "memory://"
    trusted_proxies: int = 0
    # DKIM: one selector per key; two (an RSA and an Ed25519 one) sign every message twice.
    dkim_selectors: tuple[str, ...] = ()
    dkim_domain: str = ""
    dkim_key_dir: Path | None = None
    # Bounces: soft ones suppress after this many in this many days; intake by polling.
    bounce_soft_limit: int = 3
    bounce_soft_window_days: int = 14
    bounce_mailbox_url: str | None = None
    bounce_poll_interval: int = 300
    # Several relays (instead of SMTP_URL); where their limits and health are shared.
    smtp_relays: str | None = None
    relay_cooldown_seconds: int = 60
    relay_state_url: str = ""

    @property
    def bounces_path(self) -> Path:
        return self.instance_path / "bounces"

    @property
    def dkim_signing_domain(self) -> str:
        return self.dkim_domain or self.mail_domain

    @property
    def dkim_keys_path(self) -> Path:
        return self.dkim_key_dir or self.instance_path / "dkim"

    @property
    def capture_mail(self) -> bool:
        """True on the embedded default: mail goes to the local capture server."""
        return self.smtp_url is None and self.smtp_relays is None

    @property
    def smtp_relay(self) -> SmtpRelay:
        """The relay, or the first of SMTP_RELAYS."""
        return self.relays[0]

    @property
    def relays(self) -> tuple[SmtpRelay, ...]:
        if self.smtp_relays is not None:
            return parse_smtp_relays(self.smtp_relays)
        if self.smtp_url is None:
            return (SmtpRelay(host=CAPTURE_HOST, port=CAPTURE_PORT, security="none"),)
        return (parse_smtp_url(self.smtp_url),)

    @property
    def mail_domain(self) -> str:
        return self.mail_from.rpartition("@")[2]

    @property
    def uploads_path(self) -> Path:
        return self.instance_path / "uploads"

    @property
    def outbox_path(self) -> Path:
        return self.instance_path / "outbox"

    def public(self) -> dict[str, Any]:
        """The settings safe to show an admin (no secrets, no passwords)."""
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown.pop("secret_key")
        for name in (
            "smtp_url",
            "database_url",
            "broker_url",
            "ratelimit_storage_url",
            "bounce_mailbox_url",
            "relay_state_url",
        ):
            if shown[name]:
                shown[name] = without_password(shown[name])
        if shown["smtp_relays"]:
            shown["smtp_relays"] = " ".join(
                without_password(url) for url in shown["smtp_relays"].split()
            )
        return shown


def parse_social(value: str) -> tuple[tuple[str, str], ...]:
    """`Label=https://…` pairs separated by commas."""
    links = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        label, sep, url = item.partition("=")
        if not sep or not label.strip() or not url.strip().startswith(("http://", "https://")):
            raise ValueError("write Label=https://… pairs separated by commas")
        links.append((label.strip(), url.strip()))
    return tuple(links)


def _secret_key(instance_path: Path) -> str:
    """Generate the key once and keep it, so sessions and links survive restarts."""
    path = instance_path / "secret_key"
    if not path.exists():
        instance_path.mkdir(parents=True, exist_ok=True)
        # Written aside, then linked into place: several processes starting at once
        # on a new instance all end up reading the one key that won.
        fd, tmp = tempfile.mkstemp(dir=instance_path, prefix=".secret_key-")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
            os.chmod(tmp, 0o600)
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return path.read_text().strip()


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check every setting; raise ConfigError naming the first bad one."""
    env = dict(os.environ if environ is None else environ)

    def get(name: str, parse: Callable[[str], Any], default: Any) -> Any:
        raw = env.get(name)
        if raw is None or raw == "":
            return default
        try:
            return parse(raw)
        except ValueError as exc:
            shown = without_password(raw) if "://" in raw else raw
            raise ConfigError(f"{name}={shown!r} is not valid: {exc}") from None

    instance_path = Path(env.get("INSTANCE_PATH") or DEFAULT_INSTANCE).resolve()
    smtp_url = env.get("SMTP_URL") or None
    if smtp_url is not None:
        get("SMTP_URL", parse_smtp_url, None)
    smtp_relays = env.get("SMTP_RELAYS") or None
    if smtp_relays is not None:
        try:
            parse_smtp_relays(smtp_relays)
        except ValueError as exc:
            # Not through get(): the whole list would be shown, passwords and all.
            raise ConfigError(f"SMTP_RELAYS is not valid: {exc}") from None
        if smtp_url is not None:
            raise ConfigError(
                "SMTP_URL and SMTP_RELAYS are both set: list every relay in SMTP_RELAYS "
                "and unset SMTP_URL"
            )
    secret_key = env.get("SECRET_KEY") or _secret_key(instance_path)
    if len(secret_key) < 16:
        raise ConfigError("SECRET_KEY is not valid: use at least 16 characters")

    return Settings(
        instance_path=instance_path,
        database_url=get(
            "DATABASE_URL", parse_database_url, f"sqlite:///{instance_path / 'circulars.db'}"
        ),
        broker_url=get(
            "CELERY_BROKER_URL", parse_broker_url, f"sqla+sqlite:///{instance_path / 'broker.db'}"
        ),
        smtp_url=smtp_url,
        base_url=get("BASE_URL", parse_base_url, "http://127.0.0.1:5000"),
        secret_key=secret_key,
        mail_from=get("MAIL_FROM", parse_address, "secretariat@example.org"),
        max_upload_size=get("MAX_UPLOAD_SIZE", parse_size, 25 * 1024**2),
        import_max_size=get("IMPORT_MAX_SIZE", parse_size, 200 * 1024**2),
        import_writers=get("IMPORT_WRITERS", parse_int(1, 8), 2),
        timezone=get("TIMEZONE", parse_timezone, "UTC"),
        send_batch_size=get("SEND_BATCH_SIZE", parse_int(1, 10_000), 200),
        send_max_attempts=get("SEND_MAX_ATTEMPTS", parse_int(1, 50), 5),
        smtp_timeout=get("SMTP_TIMEOUT", parse_int(1, 600), 30),
        send_retry_delay=get("SEND_RETRY_DELAY", parse_int(0, 3600), 10),
        send_pause_after_relay_errors=get(
            "SEND_PAUSE_AFTER_RELAY_ERRORS", parse_int(0, 1_000_000), 10
        ),
        send_claim_lease_seconds=get("SEND_CLAIM_LEASE_SECONDS", parse_int(5, 7 * 86400), 600),
        send_stall_seconds=get("SEND_STALL_SECONDS", parse_int(1, 7 * 86400), 120),
        send_sweep_interval=get("SEND_SWEEP_INTERVAL", parse_int(1, 3600), 60),
        unsubscribe_token_max_age_days=get(
            "UNSUBSCRIBE_TOKEN_MAX_AGE_DAYS", parse_int(1, 3650), 365
        ),
        worker_concurrency=get("WORKER_CONCURRENCY", parse_int(1, 64), 2),
        org_name=env.get("ORG_NAME") or "Circulars",
        org_signoff=env.get("ORG_SIGNOFF") or "The Secretariat",
        org_postal_address=env.get("ORG_POSTAL_ADDRESS", ""),
        org_email=get("ORG_EMAIL", parse_address, ""),
        org_phone=env.get("ORG_PHONE", ""),
        org_website=get("ORG_WEBSITE", parse_base_url, ""),
        org_about=env.get("ORG_ABOUT", ""),
        org_social=get("ORG_SOCIAL", parse_social, ()),
        brand_color=get("BRAND_COLOR", parse_color, "#1f4e79"),
        log_level=get("LOG_LEVEL", _parse_log_level, "INFO"),
        confirm_token_max_age_days=get("CONFIRM_TOKEN_MAX_AGE_DAYS", parse_int(1, 365), 7),
        confirmation_cooldown_minutes=get(
            "CONFIRMATION_COOLDOWN_MINUTES", parse_int(0, 24 * 60), 10
        ),
        confirmation_mails_per_hour=get(
            "CONFIRMATION_MAILS_PER_HOUR", parse_int(1, 1_000_000), 500
        ),
        unconfirmed_purge_days=get("UNCONFIRMED_PURGE_DAYS", parse_int(1, 3650), 30),
        subscribe_consent_text=get(
            "SUBSCRIBE_CONSENT_TEXT",
            parse_consent_text,
            default_consent_text(env.get("ORG_NAME") or "Circulars"),
        ),
        subscribe_rate_limit=get(
            "SUBSCRIBE_RATE_LIMIT", parse_rate_limit, "10 per minute; 100 per day"
        ),
        embed_allowed_origins=get("EMBED_ALLOWED_ORIGINS", parse_origins, ()),
        ratelimit_enabled=get("RATELIMIT_ENABLED", parse_bool, True),
        ratelimit_storage_url=get(
            "RATELIMIT_STORAGE_URL",
            parse_ratelimit_storage_url,
            _default_ratelimit_storage(env.get("CELERY_BROKER_URL", "")),
        ),
        trusted_proxies=get("TRUSTED_PROXIES", parse_int(0, 10), 0),
        dkim_selectors=get("DKIM_SELECTOR", parse_dkim_selectors, ()),
        dkim_domain=get("DKIM_DOMAIN", parse_domain, ""),
        dkim_key_dir=get("DKIM_KEY_DIR", lambda value: Path(value).resolve(), None),
        bounce_soft_limit=get("BOUNCE_SOFT_LIMIT", parse_int(1, 100), 3),
        bounce_soft_window_days=get("BOUNCE_SOFT_WINDOW_DAYS", parse_int(1, 365), 14),
        bounce_mailbox_url=get("BOUNCE_MAILBOX_URL", parse_mailbox_url, None),
        bounce_poll_interval=get("BOUNCE_POLL_INTERVAL", parse_int(10, 24 * 3600), 300),
        smtp_relays=smtp_relays,
        relay_cooldown_seconds=get("RELAY_COOLDOWN_SECONDS", parse_int(1, 24 * 3600), 60),
        relay_state_url=get(
            "RELAY_STATE_URL",
            parse_relay_state_url,
            _default_relay_state(env.get("CELERY_BROKER_URL", ""), instance_path),
        ),
    )


def parse_relay_state_url(value: str) -> str:
    if not re.match(r"^(redis|rediss)://", value) and not re.match(r"^sqlite:///.", value):
        raise ValueError("must be a redis:// or rediss:// URL, or sqlite:///path/to/file.db")
    return value


def _default_relay_state(broker_url: str, instance_path: Path) -> str:
    # Relay limits must bind every worker: the broker's Redis, else a file all local processes open.
    if broker_url.startswith(("redis://", "rediss://")):
        return broker_url
    return f"sqlite:///{instance_path / 'relay_state.db'}"


def parse_mailbox_url(value: str) -> str:
    """pop3s://user:pass@host[:995], pop3://, imaps://user:pass@host[:993]/INBOX, imap://."""
    from .subscribers.bounce_intake import mailbox_from_url

    mailbox_from_url(value)
    return value


def parse_dkim_selectors(value: str) -> tuple[str, ...]:
    """One selector, or two separated by a comma (an RSA key and an Ed25519 key)."""
    selectors = tuple(part.strip() for part in value.split(",") if part.strip())
    for selector in selectors:
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", selector):
            raise ValueError(f"{selector!r}: a selector is letters, digits and inner hyphens")
    if len(set(selectors)) != len(selectors) or len(selectors) > 2:
        raise ValueError("name one selector, or two different ones separated by a comma")
    return selectors


def parse_domain(value: str) -> str:
    domain = value.strip().rstrip(".").lower()
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError("must be a domain name such as example.org") from exc
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(
        re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", label) for label in labels
    ):
        raise ValueError("must be a domain name such as example.org")
    return domain


def _parse_log_level(value: str) -> str:
    if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return value.upper()


def default_consent_text(org_name: str) -> str:
    return (
        f"I agree that {org_name} sends me the circulars of the lists I chose and keeps my "
        "address, my choices and this consent for that purpose. I can unsubscribe at any "
        "time with the link in every email."
    )


def parse_consent_text(value: str) -> str:
    text = " ".join(value.split())
    if len(text) > 2000:
        raise ValueError("must be at most 2000 characters")
    return text


def parse_rate_limit(value: str) -> str:
    """Flask-Limiter's notation: `10 per minute; 100 per day`."""
    from limits import parse_many

    try:
        if not parse_many(value):
            raise ValueError
    except ValueError:
        raise ValueError("write limits such as '10 per minute; 100 per day'") from None
    return value


def parse_origins(value: str) -> tuple[str, ...]:
    """Origins (`https://partner.example`), separated by commas or spaces."""
    origins = []
    for item in value.replace(",", " ").split():
        parts = urlsplit(item)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path.strip("/")
            or parts.query
            or parts.fragment
        ):
            raise ValueError(
                f"{item!r} is not an origin; write https://host[:port], separated by commas"
            )
        origins.append(f"{parts.scheme}://{parts.netloc.lower()}")
    return tuple(origins)


def parse_ratelimit_storage_url(value: str) -> str:
    if not re.match(r"^(memory|redis|rediss|redis\+sentinel|redis\+cluster|memcached)://", value):
        raise ValueError("must be memory://, a redis:// or rediss:// URL, or memcached://")
    return value


def _default_ratelimit_storage(broker_url: str) -> str:
    # Counters must be shared by every web process: the broker's Redis when there is one.
    return broker_url if broker_url.startswith(("redis://", "rediss://")) else "memory://"
