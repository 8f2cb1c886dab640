"""What each reader's digest holds: the circulars sent to the list since their last digest.

A circular counts as sent to a list from the moment its first send to that list
started (sends that failed or were cancelled do not count). A reader's digest
for a period holds the list's circulars sent after their start and up to the
period's end, less any they already received as a circular mail. Their start
is the end of the last digest of this list they received, or, before their
first one, the moment they chose a digest (`digest_since`, else when they
confirmed): a new reader does not get the list's history.

Who reads: confirmed subscriptions in that frequency, of active subscribers not
paused, not suppressed (address, or domain unless exempted): the same rules as
a send. Readers with nothing new are left out; a digest is never empty.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ..languages import CIRCULAR_LANGUAGES, DEFAULT_LANGUAGE, base_language
from ..models import (
    Delivery,
    DeliveryStatus,
    DigestDelivery,
    DigestDeliveryStatus,
    DigestRun,
    Send,
    SendStatus,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    send_lists,
)
from ..subscribers.mailable import mailable_now

#: Sends whose circular counts as sent to their lists (a cancelled one was withdrawn).
COUNTED_SENDS = (SendStatus.RUNNING, SendStatus.PAUSED, SendStatus.DONE)
#: Readers handled per round trip when excluding what they already received.
CHUNK = 500


@dataclass(frozen=True)
class ListCircular:
    circular_id: int
    sent_at: datetime


@dataclass(frozen=True)
class ReaderDigest:
    """One reader's digest: who, in which language, and which circulars (in sending order)."""

    subscriber_id: int
    email: str
    name: str
    language: str
    circular_ids: tuple[int, ...]

    @property
    def key(self) -> tuple[tuple[int, ...], str]:
        """Readers with the same key get the same rendered digest."""
        return self.circular_ids, self.language


def digest_language(code: str | None) -> str:
    """The language a reader's digest is written in: theirs when circulars can be in it."""
    base = base_language(code)
    return base if base in CIRCULAR_LANGUAGES else DEFAULT_LANGUAGE


def list_circulars(session: Session, list_id: int, until: datetime) -> list[ListCircular]:
    """The list's circulars with the moment each first went to it, up to `until`, oldest first."""
    first_sent = func.min(Send.started_at)
    rows = session.execute(
        select(Send.circular_id, first_sent)
        .join(send_lists, send_lists.c.send_id == Send.id)
        .where(
            send_lists.c.list_id == list_id,
            Send.status.in_([status.value for status in COUNTED_SENDS]),
            Send.started_at.is_not(None),
        )
        .group_by(Send.circular_id)
        .having(first_sent <= until)
        .order_by(first_sent, Send.circular_id)
    ).all()
    return [ListCircular(circular_id, sent_at) for circular_id, sent_at in rows if sent_at]


def readers_query(list_id: int, frequency: str, now: datetime) -> Select:
    """Who takes this list's digest in this frequency now, with where their next one starts."""
    last_digest = (
        select(func.max(DigestRun.period_end))
        .join(DigestDelivery, DigestDelivery.run_id == DigestRun.id)
        .where(
            DigestRun.list_id == list_id,
            DigestDelivery.subscriber_id == Subscriber.id,
            DigestDelivery.status == DigestDeliveryStatus.SENT,
        )
        .scalar_subquery()
    )
    return (
        select(
            Subscriber.id,
            Subscriber.email,
            Subscriber.name,
            Subscriber.language,
            func.coalesce(
                Subscription.digest_since, Subscription.confirmed_at, Subscription.created_at
            ),
            last_digest,
        )
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(
            Subscription.list_id == list_id,
            Subscription.status == SubscriptionStatus.CONFIRMED,
            Subscription.delivery == frequency,
            mailable_now(now),
        )
        .order_by(Subscriber.id)
    )


def count_readers(session: Session, list_id: int, frequency: str, now: datetime) -> int:
    subquery = readers_query(list_id, frequency, now).subquery()
    return int(session.scalar(select(func.count()).select_from(subquery)) or 0)


def _received(
    session: Session, subscriber_ids: Sequence[int], circular_ids: Sequence[int]
) -> set[tuple[int, int]]:
    """(subscriber, circular) pairs already delivered to them as a circular mail."""
    if not subscriber_ids or not circular_ids:
        return set()
    rows = session.execute(
        select(Delivery.subscriber_id, Send.circular_id)
        .join(Send, Send.id == Delivery.send_id)
        .where(
            Delivery.subscriber_id.in_(subscriber_ids),
            Send.circular_id.in_(circular_ids),
            Delivery.status == DeliveryStatus.SENT,
        )
    ).all()
    return {
        (int(subscriber_id), int(circular_id))
        for subscriber_id, circular_id in rows
        if subscriber_id is not None
    }


def reader_digests(
    session: Session, list_id: int, frequency: str, period_end: datetime, now: datetime
) -> Iterator[ReaderDigest]:
    """Each reader's digest for the period ending at `period_end`, streamed; none empty."""
    circulars = list_circulars(session, list_id, period_end)
    if not circulars:
        return
    result = session.execute(
        readers_query(list_id, frequency, now).execution_options(yield_per=CHUNK)
    )
    for chunk in result.partitions(CHUNK):
        wanted: list[tuple[int, str, str, str, list[int]]] = []
        for subscriber_id, email, name, language, since, last in chunk:
            start = max(since, last) if last is not None else since
            ids = [item.circular_id for item in circulars if item.sent_at > start]
            if ids:
                wanted.append((subscriber_id, email, name, language, ids))
        received = _received(
            session,
            [row[0] for row in wanted],
            sorted({cid for row in wanted for cid in row[4]}),
        )
        for subscriber_id, email, name, language, ids in wanted:
            kept = tuple(cid for cid in ids if (subscriber_id, cid) not in received)
            if kept:
                yield ReaderDigest(subscriber_id, email, name, digest_language(language), kept)
