"""Signed, expiring tokens for the links in every email.

They stand in for a login: whoever holds the link may act for that subscriber,
so each token names its purpose (a preference link is not an unsubscribe
link) and carries only ids, kept short so List-Unsubscribe stays one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer


class TokenError(Exception):
    """The token is unusable; `expired` tells the two cases apart for the message shown."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class SubscriberToken:
    subscriber_id: int
    list_id: int | None


class TokenSigner:
    def __init__(self, secret_key: str, max_age: timedelta) -> None:
        self._secret_key = secret_key
        self._max_age = int(max_age.total_seconds())

    def _serializer(self, purpose: str) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self._secret_key, salt=f"circulars.{purpose}")

    def make(self, purpose: str, subscriber_id: int, list_id: int | None = None) -> str:
        payload = [subscriber_id] if list_id is None else [subscriber_id, list_id]
        return str(self._serializer(purpose).dumps(payload))

    def read(self, purpose: str, token: str) -> SubscriberToken:
        try:
            payload = self._serializer(purpose).loads(token, max_age=self._max_age)
        except SignatureExpired as exc:
            raise TokenError("This link has expired.", expired=True) from exc
        except BadSignature as exc:
            raise TokenError("This link is not valid.") from exc
        if (
            not isinstance(payload, list)
            or not 1 <= len(payload) <= 2
            or not all(isinstance(item, int) and not isinstance(item, bool) for item in payload)
        ):
            raise TokenError("This link is not valid.")
        return SubscriberToken(payload[0], payload[1] if len(payload) == 2 else None)
