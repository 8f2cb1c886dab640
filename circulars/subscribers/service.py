"""Putting people on lists and taking them off, with their consent respected."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..models import (
    ConsentAction,
    ConsentEvent,
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    SuppressionKind,
    SuppressionReason,
    utcnow,
)
from .addresses import InvalidAddress, normalise_email
from .suppression import describe, is_suppressed, lift_for, suppress


class SubscriptionRefused(ValueError):
    """Staff may not add this address; `overridable` when an override with a reason may."""

    def __init__(self, message: str, *, overridable: bool = False) -> None:
        super().__init__(message)
        self.overridable = overridable


def add_to_list(
    session: Session,
    mailing_list: MailingList,
    email: str,
    *,
    name: str = "",
    organization: str = "",
    language: str = "en",
    override_reason: str | None = None,
    user_id: int | None = None,
) -> tuple[Subscriber, bool]:
    """Subscribe an address (confirmed: staff vouch for it); returns (subscriber, created).

    Someone who unsubscribed, or whose address or domain is on the suppression
    list, is not put back by staff unless they give `override_reason`: the
    override is recorded with `user_id` (suppression.lift_for). Raises
    InvalidAddress or SubscriptionRefused.
    """
    address = normalise_email(email)
    override = (override_reason or "").strip()
    suppression = is_suppressed(session, address)
    if suppression is not None and not override:
        raise SubscriptionRefused(
            f"{address} is on the suppression list ({describe(suppression)}"
            + (f": {suppression.value}" if suppression.kind == SuppressionKind.DOMAIN else "")
            + "). Add it anyway only with a reason, which is recorded.",
            overridable=True,
        )
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == address))
    created = subscriber is None
    if subscriber is None:
        subscriber = Subscriber(
            email=address,
            name=name.strip(),
            organization=organization.strip(),
            language=language or "en",
        )
        session.add(subscriber)
        session.flush()
    elif subscriber.status != SubscriberStatus.ACTIVE and not override:
        raise SubscriptionRefused(
            f"{address} has unsubscribed from all mail; only they can subscribe again."
            if subscriber.status == SubscriberStatus.UNSUBSCRIBED
            else f"{address} is blocked.",
            overridable=True,
        )
    if override and (suppression is not None or subscriber.status != SubscriberStatus.ACTIVE):
        lift_for(session, address, user_id=user_id, reason=override, list_id=mailing_list.id)
    existing = session.scalar(
        select(Subscription).where(
            Subscription.subscriber_id == subscriber.id, Subscription.list_id == mailing_list.id
        )
    )
    if existing is not None:
        if existing.status == SubscriptionStatus.UNSUBSCRIBED:
            raise SubscriptionRefused(
                f"{address} unsubscribed from {mailing_list.name}; only they can subscribe again."
            )
        raise SubscriptionRefused(f"{address} is already on {mailing_list.name}.")
    session.add(
        Subscription(
            subscriber_id=subscriber.id,
            list_id=mailing_list.id,
            status=SubscriptionStatus.CONFIRMED,
        )
    )
    # Staff vouch for this person's consent: the record says who, and any override why.
    session.add(
        ConsentEvent(
            subscriber_id=subscriber.id,
            list_id=mailing_list.id,
            action=ConsentAction.ADDED_BY_STAFF,
            actor_id=user_id,
            source="admin",
            detail=f"added despite the suppression list: {override}" if override else None,
        )
    )
    session.flush()
    return subscriber, created


def remove_from_list(session: Session, subscriber_id: int, list_id: int) -> bool:
    """Staff removing someone: the subscription goes; the subscriber and their history stay."""
    result = session.execute(
        delete(Subscription).where(
            Subscription.subscriber_id == subscriber_id, Subscription.list_id == list_id
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class UnsubscribeResult:
    subscriber: Subscriber
    lists: list[MailingList]  # the lists they were taken off now (empty: already off)


def unsubscribe(
    session: Session, subscriber_id: int, list_id: int | None
) -> UnsubscribeResult | None:
    """Take a subscriber off one list (or all, with list_id None); None if unknown.

    Leaving everything also suppresses the address (reason `unsubscribed`), so no
    import or staff action quietly puts it back. Idempotent, so a mail client's
    retried one-click POST changes nothing more.
    """
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return None
    query = select(Subscription).where(
        Subscription.subscriber_id == subscriber_id,
        Subscription.status != SubscriptionStatus.UNSUBSCRIBED,
    )
    if list_id is not None:
        query = query.where(Subscription.list_id == list_id)
    left = []
    now = utcnow()
    for subscription in session.scalars(query):
        subscription.status = SubscriptionStatus.UNSUBSCRIBED
        subscription.updated_at = now
        subscription.unsubscribed_at = now
        left.append(subscription.mailing_list)
    if list_id is None:
        if subscriber.status == SubscriberStatus.ACTIVE:
            subscriber.status = SubscriberStatus.UNSUBSCRIBED
        # An address stored before validation tightened cannot be suppressed; they are off anyway.
        with contextlib.suppress(InvalidAddress):
            suppress(session, email=subscriber.email, reason=SuppressionReason.UNSUBSCRIBED)
    session.flush()
    return UnsubscribeResult(subscriber, left)
