"""Confirmation tokens name a subscriber and the lists they confirm; settings of subscribing."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from itsdangerous import URLSafeTimedSerializer
from itsdangerous.timed import TimestampSigner

from circulars.config import ConfigError, load_settings
from circulars.subscribers.tokens import ListsToken, SubscriberToken, TokenError, TokenSigner

SECRET = "test-secret-key-0123456789abcdef"


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(SECRET, timedelta(days=7))


def test_lists_token_round_trip(signer: TokenSigner) -> None:
    token = signer.make_lists("confirm", 42, [9, 3, 3])
    assert signer.read_lists("confirm", token) == ListsToken(42, (3, 9))


def test_single_list_tokens_still_work(signer: TokenSigner) -> None:
    assert signer.read("unsubscribe", signer.make("unsubscribe", 42, 7)) == SubscriberToken(42, 7)
    assert signer.read("preferences", signer.make("preferences", 42)) == SubscriberToken(42, None)


def test_a_lists_token_is_not_a_single_list_token_and_back(signer: TokenSigner) -> None:
    with pytest.raises(TokenError):
        signer.read("confirm", signer.make_lists("confirm", 42, [1, 2]))
    with pytest.raises(TokenError):
        signer.read_lists("confirm", signer.make("confirm", 42, 1))


def test_lists_token_for_another_purpose_is_refused(signer: TokenSigner) -> None:
    with pytest.raises(TokenError):
        signer.read_lists("confirm", signer.make_lists("preferences", 42, [1]))


@pytest.mark.parametrize(
    "payload", [[1, []], [1, [True]], [True, [1]], [1, ["2"]], [1, 2], [1, [2], 3], [[1], [2]]]
)
def test_lists_token_of_the_wrong_shape_is_refused(signer: TokenSigner, payload: object) -> None:
    forged = URLSafeTimedSerializer(SECRET, salt="circulars.confirm").dumps(payload)
    with pytest.raises(TokenError) as caught:
        signer.read_lists("confirm", forged)
    assert caught.value.expired is False


def test_lists_token_expires(monkeypatch: pytest.MonkeyPatch, signer: TokenSigner) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(TimestampSigner, "get_timestamp", lambda _self: int(time.time()) - 8 * 86400)
        token = signer.make_lists("confirm", 42, [1])
    with pytest.raises(TokenError) as caught:
        signer.read_lists("confirm", token)
    assert caught.value.expired is True


def _settings(**env: str):  # type: ignore[no-untyped-def]
    return load_settings({"SECRET_KEY": "s" * 32, "INSTANCE_PATH": "/tmp/circulars-unit", **env})


def test_subscribe_settings_defaults() -> None:
    settings = _settings(ORG_NAME="Migrant Rights Network")
    assert settings.confirm_token_max_age_days == 7
    assert settings.confirmation_cooldown_minutes == 10
    assert settings.confirmation_mails_per_hour == 500
    assert settings.unconfirmed_purge_days == 30
    assert settings.subscribe_rate_limit == "10 per minute; 100 per day"
    assert "Migrant Rights Network" in settings.subscribe_consent_text
    assert settings.ratelimit_enabled is True
    assert settings.ratelimit_storage_url == "memory://"
    assert settings.trusted_proxies == 0
    assert settings.embed_allowed_origins == ()


def test_rate_limit_storage_follows_a_redis_broker() -> None:
    settings = _settings(CELERY_BROKER_URL="redis://:secret@redis.internal:6379/2")
    assert settings.ratelimit_storage_url == "redis://:secret@redis.internal:6379/2"
    assert "secret" not in str(settings.public()["ratelimit_storage_url"])
    assert _settings(RATELIMIT_STORAGE_URL="memory://").ratelimit_storage_url == "memory://"


def test_allowed_origins_are_normalised() -> None:
    settings = _settings(EMBED_ALLOWED_ORIGINS="https://Partner.example, http://b.example:8080/")
    assert settings.embed_allowed_origins == ("https://partner.example", "http://b.example:8080")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONFIRM_TOKEN_MAX_AGE_DAYS", "0"),
        ("CONFIRMATION_COOLDOWN_MINUTES", "soon"),
        ("CONFIRMATION_MAILS_PER_HOUR", "0"),
        ("UNCONFIRMED_PURGE_DAYS", "-3"),
        ("SUBSCRIBE_RATE_LIMIT", "lots"),
        ("EMBED_ALLOWED_ORIGINS", "https://partner.example/join"),
        ("EMBED_ALLOWED_ORIGINS", "partner.example"),
        ("RATELIMIT_ENABLED", "maybe"),
        ("RATELIMIT_STORAGE_URL", "ftp://example.org"),
        ("TRUSTED_PROXIES", "11"),
        ("SUBSCRIBE_CONSENT_TEXT", "x" * 2001),
    ],
)
def test_bad_subscribe_settings_are_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        _settings(**{name: value})
