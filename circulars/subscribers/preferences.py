"""What a subscriber may change about themselves, from the signed link in every email.

Each operation acts on one subscriber only (the one the link was signed for),
records a consent event in the same transaction, and is idempotent: a repeated
click, a retried POST or a second tab changes nothing more and raises nothing.
Bad input (an unknown language, a pause beyond a year) raises PreferenceError,
before anything is changed. The caller commits.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..languages import SUPPORTED_LANGUAGES
from ..models import (
    Circular,
    ConsentAction,
    ConsentEvent,
    Delivery,
    DeliveryMode,
    MailingList,
    Send,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionKind,
    SuppressionOverride,
    SuppressionReason,
    utcnow,
)
from .addresses import InvalidAddress
from .consent import record_consent
from .service import unsubscribe
from .suppression import hash_value, is_suppressed, suppress

#: The consent record's `source` for changes made in the preference centre.
PREFERENCE_CENTRE = "preference centre"

#: Pause presets offered on the page: (code, months, days).
PAUSE_PRESETS: dict[str, tuple[int, int]] = {"2w": (0, 14), "1m": (1, 0), "3m": (3, 0)}
#: The longest pause: beyond it people should rather leave (and come back).
PAUSE_MAX_MONTHS = 12

_EXPORT_PAGE = 500


class PreferenceError(ValueError):
    """The request cannot be honoured as asked; nothing was changed. `code` names why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Origin:
    """Where a change came from, as the consent record keeps it."""

    source: str = PREFERENCE_CENTRE
    ip: str | None = None
    user_agent: str | None = None


def _record(
    session: Session,
    subscriber: Subscriber | None,
    action: ConsentAction,
    origin: Origin,
    *,
    list_id: int | None = None,
    consent_text: str | None = None,
    detail: str | None = None,
) -> None:
    record_consent(
        session,
        subscriber_id=subscriber.id if subscriber is not None else None,
        action=action,
        list_id=list_id,
        ip=origin.ip,
        user_agent=origin.user_agent,
        source=origin.source,
        consent_text=consent_text,
        detail=detail,
    )


# --- profile ------------------------------------------------------------------------------


def update_profile(
    session: Session,
    subscriber: Subscriber,
    *,
    name: str,
    organization: str,
    language: str,
    origin: Origin,
) -> list[str]:
    """Save name, organisation and language; returns the fields that changed (may be none).

    The language must be one the public pages and mails speak; a language set
    earlier by an import that is not (yet) supported may be kept as it is.
    The consent record names the fields changed, not their values: it must not
    become a second copy of the person's data.
    """
    name, organization, language = name.strip(), organization.strip(), language.strip()
    if language not in SUPPORTED_LANGUAGES and language != subscriber.language:
        raise PreferenceError("language", f"{language!r} is not a language we offer.")
    changed = [
        field
        for field, value in (("name", name), ("organization", organization), ("language", language))
        if getattr(subscriber, field) != value
    ]
    if not changed:
        return []
    detail = ", ".join(
        f"language {subscriber.language} -> {language}" if field == "language" else field
        for field in changed
    )
    subscriber.name, subscriber.organization, subscriber.language = name, organization, language
    _record(session, subscriber, ConsentAction.PREFERENCES, origin, detail=f"changed: {detail}")
    session.flush()
    return changed


# --- lists --------------------------------------------------------------------------------


class JoinOutcome(StrEnum):
    JOINED = "joined"
    ALREADY = "already"  # already on the list: nothing to do
    NOT_AVAILABLE = "not-available"  # no such list, or not open to self-service
    REFUSED = "refused"  # blocked by the secretariat, bounced, or a suppressed domain


def _subscription(session: Session, subscriber_id: int, list_id: int) -> Subscription | None:
    return session.scalar(
        select(Subscription).where(
            Subscription.subscriber_id == subscriber_id, Subscription.list_id == list_id
        )
    )


def join_list(
    session: Session,
    subscriber: Subscriber,
    list_id: int,
    *,
    origin: Origin,
    delivery: str = DeliveryMode.EVERY,
    consent_text: str | None = None,
) -> JoinOutcome:
    """Join a public list, confirmed at once: the signed link already proved the address.

    A pending (unconfirmed) subscription is confirmed. Someone who had left
    everything comes back: their own `unsubscribed` suppression is lifted, since
    they are the one asking. Any other suppression (a bounce, a complaint, a
    block by the secretariat, a suppressed domain) stands: the answer is REFUSED
    and only the secretariat can change that.
    """
    delivery = DeliveryMode(delivery)
    mailing_list = session.get(MailingList, list_id)
    if mailing_list is None:
        return JoinOutcome.NOT_AVAILABLE
    existing = _subscription(session, subscriber.id, list_id)
    if (
        existing is not None
        and existing.status == SubscriptionStatus.CONFIRMED
        and subscriber.status == SubscriberStatus.ACTIVE
    ):
        return JoinOutcome.ALREADY
    if not mailing_list.public:
        return JoinOutcome.NOT_AVAILABLE
    if subscriber.status == SubscriberStatus.BLOCKED:
        return JoinOutcome.REFUSED
    suppression = is_suppressed(session, subscriber.email)
    if suppression is not None and not (
        suppression.kind == SuppressionKind.ADDRESS
        and suppression.reason == SuppressionReason.UNSUBSCRIBED
    ):
        return JoinOutcome.REFUSED

    now = utcnow()
    notes = []
    if suppression is not None:
        session.execute(delete(Suppression).where(Suppression.id == suppression.id))
        notes.append("lifted their own unsubscribe-from-all suppression")
    if subscriber.status != SubscriberStatus.ACTIVE:
        subscriber.status = SubscriberStatus.ACTIVE
    if existing is None:
        try:
            with session.begin_nested():  # a double click racing itself
                session.add(
                    Subscription(
                        subscriber_id=subscriber.id,
                        list_id=list_id,
                        status=SubscriptionStatus.CONFIRMED,
                        delivery=delivery,
                        confirmed_at=now,
                        digest_since=None if delivery == DeliveryMode.EVERY else now,
                    )
                )
        except IntegrityError:
            return JoinOutcome.ALREADY
    elif existing.status != SubscriptionStatus.CONFIRMED:
        existing.status = SubscriptionStatus.CONFIRMED
        existing.confirmed_at = now
        existing.unsubscribed_at = None
        existing.delivery = delivery
        existing.digest_since = None if delivery == DeliveryMode.EVERY else now
        existing.updated_at = now
    notes.append(f"delivery {delivery.value}")
    _record(
        session,
        subscriber,
        ConsentAction.JOINED,
        origin,
        list_id=list_id,
        consent_text=consent_text,
        detail="; ".join(notes),
    )
    session.flush()
    return JoinOutcome.JOINED


def leave_list(session: Session, subscriber: Subscriber, list_id: int, *, origin: Origin) -> bool:
    """Leave one list; the others stay as they are. False when they were not on it."""
    result = unsubscribe(session, subscriber.id, list_id)
    if result is None or not result.lists:
        return False
    _record(session, subscriber, ConsentAction.LEFT, origin, list_id=list_id)
    session.flush()
    return True


def set_delivery(
    session: Session, subscriber: Subscriber, list_id: int, mode: str, *, origin: Origin
) -> bool:
    """Every circular, or a weekly or monthly digest, for one list they are on.

    False when nothing changed (same mode, or not on that list: a list they left
    is not joined again by choosing a frequency).
    """
    mode = DeliveryMode(mode)
    subscription = _subscription(session, subscriber.id, list_id)
    if (
        subscription is None
        or subscription.status == SubscriptionStatus.UNSUBSCRIBED
        or subscription.delivery == mode
    ):
        return False
    before = subscription.delivery
    subscription.delivery = mode
    subscription.updated_at = utcnow()
    # A first digest starts from the switch, not from the list's history. Weekly to
    # monthly (or back) keeps the start: their next digest follows on from the last one.
    if mode == DeliveryMode.EVERY:
        subscription.digest_since = None
    elif before == DeliveryMode.EVERY:
        subscription.digest_since = subscription.updated_at
    _record(
        session,
        subscriber,
        ConsentAction.PREFERENCES,
        origin,
        list_id=list_id,
        detail=f"delivery {before} -> {mode.value}",
    )
    session.flush()
    return True


# --- pause --------------------------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    """The same day `months` later, or the month's last day (31 Jan + 1 month = 28/29 Feb)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def pause_end(choice: str, today: date, custom: date | None = None) -> date:
    """The day mail starts again for a preset ("2w", "1m", "3m") or a chosen date.

    Raises PreferenceError for an unknown choice, a date not after today, or one
    more than a year away.
    """
    if choice in PAUSE_PRESETS:
        months, days = PAUSE_PRESETS[choice]
        return add_months(today, months) + timedelta(days=days)
    if choice != "date":
        raise PreferenceError("choice", "Choose how long to pause.")
    if custom is None:
        raise PreferenceError("date-missing", "Choose the date on which mail should start again.")
    if custom <= today:
        raise PreferenceError("date-past", "Choose a date after today.")
    if custom > add_months(today, PAUSE_MAX_MONTHS):
        raise PreferenceError("date-too-far", "A pause can last at most a year.")
    return custom


def pause(
    session: Session, subscriber: Subscriber, until: date, *, timezone: str, origin: Origin
) -> datetime:
    """Send nothing until the start of `until` in the organisation's time zone.

    The send snapshot leaves paused subscribers out, and digests wait too.
    Returns the moment mail starts again (aware, UTC).
    """
    zone = ZoneInfo(timezone)
    today = datetime.now(zone).date()
    if until <= today or until > add_months(today, PAUSE_MAX_MONTHS):
        raise PreferenceError("date-too-far", "A pause ends after today and within a year.")
    ends = datetime.combine(until, time.min, tzinfo=zone).astimezone(UTC)
    if subscriber.paused_until != ends:
        subscriber.paused_until = ends
        _record(
            session,
            subscriber,
            ConsentAction.PREFERENCES,
            origin,
            detail=f"paused until {until.isoformat()}",
        )
        session.flush()
    return ends


def is_paused(subscriber: Subscriber, now: datetime | None = None) -> bool:
    return subscriber.paused_until is not None and subscriber.paused_until > (now or utcnow())


def resume(session: Session, subscriber: Subscriber, *, origin: Origin) -> bool:
    """End a pause now. False when there was none running."""
    if subscriber.paused_until is None:
        return False
    running = is_paused(subscriber)
    subscriber.paused_until = None
    if running:
        _record(session, subscriber, ConsentAction.PREFERENCES, origin, detail="resumed")
    session.flush()
    return running


# --- leaving and deleting -----------------------------------------------------------------


def leave_everything(session: Session, subscriber: Subscriber, *, origin: Origin) -> bool:
    """Leave every list and stop all mail: the address goes on the suppression list
    (reason `unsubscribed`), so no import or staff action quietly puts it back.
    False when it was already so.
    """
    was_active = subscriber.status == SubscriberStatus.ACTIVE
    had_suppression = _own_suppression(session, subscriber.email) is not None
    result = unsubscribe(session, subscriber.id, None)
    if result is None:
        return False
    changed = was_active or bool(result.lists) or not had_suppression
    if changed:
        names = ", ".join(item.name for item in result.lists)
        _record(
            session,
            subscriber,
            ConsentAction.UNSUBSCRIBED_ALL,
            origin,
            detail=f"left: {names}" if names else None,
        )
    session.flush()
    return changed


def delete_data(session: Session, subscriber: Subscriber, *, origin: Origin) -> None:
    """Erase the person: their row and subscriptions go; what must stay keeps no address.

    Delivery records keep the circular, date and status but lose address and
    name; consent events lose the link to the person (and ip and browser, which
    could identify them); staff override records lose the address. Only a
    suppression of reason `deleted` remains, holding the address's SHA-256 and
    not the address, so no import or staff action can add it back. A final
    DELETED consent event, with no personal data, records that it happened.
    """
    email, subscriber_id = subscriber.email, subscriber.id
    session.execute(
        update(Delivery).where(Delivery.subscriber_id == subscriber_id).values(email="", name="")
    )
    session.execute(
        update(ConsentEvent)
        .where(ConsentEvent.subscriber_id == subscriber_id)
        .values(subscriber_id=None, ip=None, user_agent=None)
    )
    session.execute(
        update(SuppressionOverride)
        .where(SuppressionOverride.email == email)
        .values(email=f"sha256:{hash_value(email)[:16]}")
    )
    try:
        row = suppress(session, email=email, reason=SuppressionReason.DELETED)
        row.note = ""  # a staff note could name the person
    except InvalidAddress:  # an address stored before validation tightened
        row = _deleted_suppression_by_hash(session, hash_value(email))
    row.value = None
    session.delete(subscriber)
    session.flush()
    _record(session, None, ConsentAction.DELETED, Origin(source=origin.source))
    session.flush()


def _own_suppression(session: Session, email: str) -> Suppression | None:
    """The address's own entry (not its domain's), looked up by hash."""
    return _suppression_by_hash(session, hash_value(email))


def _suppression_by_hash(session: Session, value_hash: str) -> Suppression | None:
    return session.scalar(
        select(Suppression).where(
            Suppression.kind == SuppressionKind.ADDRESS, Suppression.value_hash == value_hash
        )
    )


def _deleted_suppression_by_hash(session: Session, value_hash: str) -> Suppression:
    row = _suppression_by_hash(session, value_hash)
    if row is None:
        row = Suppression(
            kind=SuppressionKind.ADDRESS,
            value=None,
            value_hash=value_hash,
            reason=SuppressionReason.DELETED,
            note="",
        )
        session.add(row)
    row.reason, row.note = SuppressionReason.DELETED, ""
    return row


# --- download -----------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def export_data(session: Session, subscriber: Subscriber) -> Iterator[str]:
    """Everything held about the subscriber, as one JSON document streamed in pieces.

    Profile, attributes and subscriptions are small; consent events and
    deliveries are read in pages of a few hundred rows by id, so neither the
    query nor the memory grows with years of circulars.
    """
    subscriptions = session.execute(
        select(Subscription, MailingList)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(Subscription.subscriber_id == subscriber.id)
        .order_by(MailingList.name)
    ).all()
    head: dict[str, Any] = {
        "exported_at": utcnow().isoformat(),
        "profile": {
            "email": subscriber.email,
            "name": subscriber.name,
            "organization": subscriber.organization,
            "language": subscriber.language,
            "status": subscriber.status,
            "paused_until": _iso(subscriber.paused_until),
            "created_at": _iso(subscriber.created_at),
            "updated_at": _iso(subscriber.updated_at),
        },
        "attributes": subscriber.attributes or {},
        "subscriptions": [
            {
                "list": mailing_list.name,
                "status": subscription.status,
                "delivery": subscription.delivery,
                "subscribed_at": _iso(subscription.created_at),
                "confirmed_at": _iso(subscription.confirmed_at),
                "unsubscribed_at": _iso(subscription.unsubscribed_at),
            }
            for subscription, mailing_list in subscriptions
        ],
    }
    yield json.dumps(head, ensure_ascii=False, indent=1)[:-2]  # keep the object open
    yield ',\n "consent_events": ['
    yield from _json_items(_consent_events(session, subscriber.id))
    yield '],\n "deliveries": ['
    yield from _json_items(_deliveries(session, subscriber.id))
    yield "]\n}\n"


def _json_items(items: Iterator[dict[str, Any]]) -> Iterator[str]:
    separator = "\n  "
    for item in items:
        yield separator + json.dumps(item, ensure_ascii=False)
        separator = ",\n  "


def _consent_events(session: Session, subscriber_id: int) -> Iterator[dict[str, Any]]:
    last = 0
    while True:
        rows = session.execute(
            select(ConsentEvent, MailingList.name)
            .outerjoin(MailingList, MailingList.id == ConsentEvent.list_id)
            .where(ConsentEvent.subscriber_id == subscriber_id, ConsentEvent.id > last)
            .order_by(ConsentEvent.id)
            .limit(_EXPORT_PAGE)
        ).all()
        for event, list_name in rows:
            yield {
                "action": event.action,
                "list": list_name,
                "occurred_at": _iso(event.occurred_at),
                "ip": event.ip,
                "user_agent": event.user_agent,
                "source": event.source,
                "consent_text": event.consent_text,
                "detail": event.detail,
            }
        if len(rows) < _EXPORT_PAGE:
            return
        last = rows[-1][0].id


def _deliveries(session: Session, subscriber_id: int) -> Iterator[dict[str, Any]]:
    last = 0
    while True:
        rows = session.execute(
            select(
                Delivery.id,
                Delivery.email,
                Delivery.status,
                Delivery.sent_at,
                Send.created_at,
                Circular.number,
                Circular.title,
            )
            .join(Send, Send.id == Delivery.send_id)
            .join(Circular, Circular.id == Send.circular_id)
            .where(Delivery.subscriber_id == subscriber_id, Delivery.id > last)
            .order_by(Delivery.id)
            .limit(_EXPORT_PAGE)
        ).all()
        for row in rows:
            yield {
                "circular_number": row.number,
                "circular_title": row.title,
                "email": row.email,
                "status": row.status,
                "date": _iso(row.sent_at or row.created_at),
            }
        if len(rows) < _EXPORT_PAGE:
            return
        last = rows[-1].id
