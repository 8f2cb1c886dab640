"""Signed, expiring tokens for the links in every email.

They stand in for a login: whoever holds the link may act for that subscriber,
so each token names its purpose (a preference link is not an unsubscribe
link) and carries only ids, kept short so List-Unsubscribe stays one line.
"""

from __future__ import annotations

from collections.abc import Sequence
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


@dataclass(frozen=True)
class ListsToken:
    """A subscriber and several lists: what a confirmation link confirms."""

    subscriber_id: int
    list_ids: tuple[int, ...]


def _is_id(item: object) -> bool:
    return isinstance(item, int) and not isinstance(item, bool)


class TokenSigner:
    def __init__(self, secret_key: str, max_age: timedelta) -> None:
        self._secret_key = secret_key
        self._max_age = int(max_age.total_seconds())

    def _serializer(self, purpose: str) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self._secret_key, salt=f"circulars.{purpose}")

    def make(self, purpose: str, subscriber_id: int, list_id: int | None = None) -> str:
        payload = [subscriber_id] if list_id is None else [subscriber_id, list_id]
        return str(self._serializer(purpose).dumps(payload))

    def _load(self, purpose: str, token: str) -> object:
        try:
            return self._serializer(purpose).loads(token, max_age=self._max_age)
        except SignatureExpired as exc:
            raise TokenError("This link has expired.", expired=True) from exc
        except BadSignature as exc:
            raise TokenError("This link is not valid.") from exc

    def read(self, purpose: str, token: str) -> SubscriberToken:
        payload = self._load(purpose, token)
        if (
            not isinstance(payload, list)
            or not 1 <= len(payload) <= 2
            or not all(_is_id(item) for item in payload)
        ):
            raise TokenError("This link is not valid.")
        return SubscriberToken(payload[0], payload[1] if len(payload) == 2 else None)

    def make_lists(self, purpose: str, subscriber_id: int, list_ids: Sequence[int]) -> str:
        """A token naming several lists (a confirmation link confirms exactly those)."""
        payload = [subscriber_id, sorted(set(list_ids))]
        return str(self._serializer(purpose).dumps(payload))

    def read_lists(self, purpose: str, token: str) -> ListsToken:
        payload = self._load(purpose, token)
        if (
            not isinstance(payload, list)
            or len(payload) != 2
            or not _is_id(payload[0])
            or not isinstance(payload[1], list)
            or not payload[1]
            or not all(_is_id(item) for item in payload[1])
        ):
            raise TokenError("This link is not valid.")
        return ListsToken(payload[0], tuple(payload[1]))
