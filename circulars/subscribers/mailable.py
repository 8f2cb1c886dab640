"""Who may be mailed at all right now: one rule for sends and digests alike.

A circular's recipient snapshot and a digest's readers are chosen by different
queries, but whether a person may receive anything must not differ between
them: an active subscriber, not paused, whose address is not suppressed, and
whose domain is not suppressed unless staff exempted this address.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select

from ..models import Subscriber, SubscriberStatus, Suppression, SuppressionKind


def mailable_now(now: datetime) -> ColumnElement[bool]:
    """A condition on `Subscriber` for queries that pick the people to mail at `now`."""
    address_suppressed = (
        select(Suppression.id)
        .where(Suppression.kind == SuppressionKind.ADDRESS, Suppression.value == Subscriber.email)
        .exists()
    )
    domain_suppressed = (
        select(Suppression.id)
        .where(Suppression.kind == SuppressionKind.DOMAIN, Suppression.value == Subscriber.domain)
        .exists()
    )
    return and_(
        Subscriber.status == SubscriberStatus.ACTIVE,
        or_(Subscriber.paused_until.is_(None), Subscriber.paused_until <= now),
        ~address_suppressed,
        or_(Subscriber.suppression_exempt, ~domain_suppressed),
    )
