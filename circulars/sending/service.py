"""Starting a send: checks, the circular's number, and the Send row the worker picks up."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from ..models import (
    Circular,
    CircularStatus,
    Delivery,
    DeliveryMode,
    DeliveryStatus,
    MailingList,
    Send,
    SendStatus,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from ..subscribers.mailable import mailable_now
from .numbering import take_next_number


class SendRefused(ValueError):
    """The send cannot start; the message says why in words an editor understands."""


def recipients_query(circular_id: int, list_ids: Sequence[int]) -> Select:
    """Who would receive the circular now: one row per subscriber, whatever the overlap.

    Confirmed subscriptions of active subscribers on any of the lists, less those
    who already got this circular in an earlier send. The lowest list id is the
    list the message is sent "through" (List-Id, one-click unsubscribe).

    Digest readers (weekly, monthly) get it in their digest instead; paused
    subscribers get nothing until their pause ends; suppressed addresses and
    domains (unless staff exempted the address) are never mailed.
    """
    now = utcnow()
    already = (
        select(Delivery.id)
        .join(Send, Send.id == Delivery.send_id)
        .where(
            Send.circular_id == circular_id,
            Delivery.subscriber_id == Subscriber.id,
            Delivery.status == DeliveryStatus.SENT,
        )
        .exists()
    )
    return (
        select(
            Subscriber.id,
            func.min(Subscription.list_id),
            Subscriber.email,
            Subscriber.name,
        )
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(
            Subscription.list_id.in_(list_ids),
            Subscription.status == SubscriptionStatus.CONFIRMED,
            Subscription.delivery == DeliveryMode.EVERY,
            mailable_now(now),
            ~already,
        )
        .group_by(Subscriber.id, Subscriber.email, Subscriber.name)
    )


def count_recipients(session: Session, circular_id: int, list_ids: Sequence[int]) -> int:
    if not list_ids:
        return 0
    subquery = recipients_query(circular_id, list_ids).subquery()
    return int(session.scalar(select(func.count()).select_from(subquery)) or 0)


def has_digest_readers(session: Session, list_ids: Sequence[int]) -> bool:
    """Someone takes one of the lists as a weekly or monthly digest: a send then reaches them
    through their next digest, even when no one gets it as a mail now."""
    return bool(
        session.scalar(
            select(Subscription.id)
            .where(
                Subscription.list_id.in_(list_ids),
                Subscription.status == SubscriptionStatus.CONFIRMED,
                Subscription.delivery != DeliveryMode.EVERY,
            )
            .limit(1)
        )
    )


def lists_by_slug(session: Session, slugs: Sequence[str]) -> list[MailingList]:
    found = {
        row.slug: row
        for row in session.scalars(select(MailingList).where(MailingList.slug.in_(slugs)))
    }
    unknown = [slug for slug in slugs if slug not in found]
    if unknown:
        raise SendRefused(f"Unknown list: {', '.join(unknown)}.")
    return [found[slug] for slug in dict.fromkeys(slugs)]


def create_send(
    session: Session,
    circular_id: int,
    list_ids: Sequence[int],
    user_id: int | None = None,
    scheduled_at: datetime | None = None,
) -> Send:
    """Create the Send (and number the circular on its first send); the caller commits.

    The circular's row is written first, so a second send of the same draft
    started at the same moment waits for this one and then sees its number.
    A send scheduled for later (`scheduled_at`, UTC) takes the number when it
    starts, since a circular gets its number when it is first sent.
    """
    if not list_ids:
        raise SendRefused("Choose at least one list to send to.")
    if scheduled_at is not None and scheduled_at <= utcnow():
        raise SendRefused("The start time is in the past; choose a time to come.")
    locked = session.execute(
        update(Circular).where(Circular.id == circular_id).values(revision=Circular.revision)
    )
    if locked.rowcount == 0:  # type: ignore[attr-defined]
        raise SendRefused("This circular does not exist.")
    circular = session.get(Circular, circular_id, populate_existing=True)
    assert circular is not None
    lists = list(session.scalars(select(MailingList).where(MailingList.id.in_(list_ids))))
    if len(lists) != len(set(list_ids)):
        raise SendRefused("One of the chosen lists no longer exists.")
    if not circular.title.strip():
        raise SendRefused("The circular needs a title before it can be sent.")
    if count_recipients(session, circular_id, list_ids) == 0 and not has_digest_readers(
        session, list_ids
    ):
        raise SendRefused(
            "No one would receive it: the chosen lists have no confirmed subscribers "
            "who have not already received this circular."
        )
    now = utcnow()
    if circular.number is None and scheduled_at is None:
        circular.number = take_next_number(session)
        circular.status = CircularStatus.SENT
        circular.first_sent_at = now
    send = Send(
        circular_id=circular.id,
        status=SendStatus.QUEUED if scheduled_at is None else SendStatus.SCHEDULED,
        scheduled_at=scheduled_at,
        created_by_id=user_id,
        created_at=now,
    )
    send.lists = lists
    session.add(send)
    session.flush()
    return send


def send_progress(session: Session, send_id: int) -> dict[str, int]:
    counts = {status.value: 0 for status in DeliveryStatus}
    rows = session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.send_id == send_id)
        .group_by(Delivery.status)
    )
    for status, count in rows:
        counts[status] = int(count)
    return counts
