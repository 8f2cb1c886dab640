"""Signed links that stand in for a login: purpose-bound, tamper-proof, expiring, short."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from itsdangerous import URLSafeTimedSerializer
from itsdangerous.timed import TimestampSigner

from circulars.subscribers.tokens import SubscriberToken, TokenError, TokenSigner

SECRET = "test-secret-key-0123456789abcdef"


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(SECRET, timedelta(days=365))


def test_round_trip_with_list(signer: TokenSigner) -> None:
    token = signer.make("unsubscribe", 42, 7)
    assert signer.read("unsubscribe", token) == SubscriberToken(subscriber_id=42, list_id=7)


def test_round_trip_without_list(signer: TokenSigner) -> None:
    token = signer.make("preferences", 42)
    assert signer.read("preferences", token) == SubscriberToken(subscriber_id=42, list_id=None)


def test_tokens_are_url_safe(signer: TokenSigner) -> None:
    token = signer.make("unsubscribe", 123456, 789)
    assert all(char.isalnum() or char in "-_." for char in token)


def test_token_for_another_purpose_is_rejected(signer: TokenSigner) -> None:
    token = signer.make("preferences", 42, 7)
    with pytest.raises(TokenError) as caught:
        signer.read("unsubscribe", token)
    assert caught.value.expired is False


def test_token_signed_with_another_secret_is_rejected(signer: TokenSigner) -> None:
    other = TokenSigner("another-secret-key-fedcba9876543210", timedelta(days=365))
    token = other.make("unsubscribe", 42, 7)
    with pytest.raises(TokenError) as caught:
        signer.read("unsubscribe", token)
    assert caught.value.expired is False


def _replace(token: str, index: int) -> str:
    char = token[index]
    return token[:index] + ("A" if char != "A" else "B") + token[index + 1 :]


def test_tampered_signature_is_rejected(signer: TokenSigner) -> None:
    token = signer.make("unsubscribe", 42, 7)
    signature_start = token.rindex(".") + 1
    # A character in the middle of the signature: every one of its bits counts.
    tampered = _replace(token, signature_start + 5)
    assert tampered != token
    with pytest.raises(TokenError) as caught:
        signer.read("unsubscribe", tampered)
    assert caught.value.expired is False


def test_tampered_payload_is_rejected(signer: TokenSigner) -> None:
    token = signer.make("unsubscribe", 42, 7)
    tampered = _replace(token, 2)
    assert tampered.split(".")[1:] == token.split(".")[1:]
    with pytest.raises(TokenError) as caught:
        signer.read("unsubscribe", tampered)
    assert caught.value.expired is False


def test_forged_payload_for_another_subscriber_is_rejected(signer: TokenSigner) -> None:
    mine = signer.make("unsubscribe", 42, 7)
    theirs = signer.make("unsubscribe", 43, 7)
    forged = theirs.split(".")[0] + "." + ".".join(mine.split(".")[1:])
    with pytest.raises(TokenError):
        signer.read("unsubscribe", forged)


@pytest.mark.parametrize("garbage", ["", "abc", "...", "not.a.token", "é"])
def test_garbage_is_rejected(signer: TokenSigner, garbage: str) -> None:
    with pytest.raises(TokenError) as caught:
        signer.read("unsubscribe", garbage)
    assert caught.value.expired is False


def _make_at(monkeypatch: pytest.MonkeyPatch, signer: TokenSigner, when: int) -> str:
    with monkeypatch.context() as patch:
        patch.setattr(TimestampSigner, "get_timestamp", lambda self: when)
        return signer.make("unsubscribe", 42, 7)


def test_expired_token_is_reported_as_expired(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = TokenSigner(SECRET, timedelta(days=30))
    token = _make_at(monkeypatch, signer, int(time.time()) - 31 * 86400)

    with pytest.raises(TokenError) as caught:
        signer.read("unsubscribe", token)
    assert caught.value.expired is True


def test_token_within_its_age_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = TokenSigner(SECRET, timedelta(days=30))
    token = _make_at(monkeypatch, signer, int(time.time()) - 29 * 86400)

    assert signer.read("unsubscribe", token) == SubscriberToken(42, 7)


def test_max_age_of_seconds_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = TokenSigner(SECRET, timedelta(seconds=1))
    token = _make_at(monkeypatch, signer, int(time.time()) - 5)

    with pytest.raises(TokenError) as caught:
        signer.read("unsubscribe", token)
    assert caught.value.expired is True


def test_tampered_expired_token_is_invalid_not_expired(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = TokenSigner(SECRET, timedelta(seconds=1))
    token = _make_at(monkeypatch, signer, int(time.time()) - 5)
    tampered = _replace(token, token.rindex(".") + 5)

    with pytest.raises(TokenError) as caught:
        signer.read("unsubscribe", tampered)
    assert caught.value.expired is False


@pytest.mark.parametrize(
    "payload",
    [["x"], [], [1, 2, 3], [True], [1, False], [1.5], {"subscriber": 1}, 42, "42", None],
)
def test_signed_payload_of_the_wrong_shape_is_rejected(
    signer: TokenSigner, payload: object
) -> None:
    forged = URLSafeTimedSerializer(SECRET, salt="circulars.unsubscribe").dumps(payload)
    with pytest.raises(TokenError) as caught:
        signer.read("unsubscribe", forged)
    assert caught.value.expired is False


@pytest.mark.parametrize("list_id", [None, 10**9])
def test_tokens_stay_short(signer: TokenSigner, list_id: int | None) -> None:
    token = signer.make("unsubscribe", 10**9, list_id)
    assert len(token) < 80
    assert signer.read("unsubscribe", token) == SubscriberToken(10**9, list_id)
