"""Double opt-in: a request stores unconfirmed subscriptions; only the link in the mail confirms.

Nothing but the confirmation mail is ever sent to an unconfirmed address (the
send snapshot takes confirmed subscriptions only). The caller answers the same
whatever happened here, so a form cannot be used to learn who is subscribed;
the result says what happened so the caller can log, enqueue and count it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import and_, delete, exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..models import (
    ConsentAction,
    ConsentEvent,
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionKind,
    SuppressionReason,
    utcnow,
)
from .addresses import normalise_email
from .consent import record_consent
from .suppression import hash_value
from .tokens import ListsToken

log = logging.getLogger(__name__)

#: The purpose a confirmation token is signed for, and the path the web layer serves.
CONFIRM_PURPOSE = "confirm"
CONFIRM_PATH = "/confirm/"

#: Address suppressions a person's own confirmation lifts: it is fresh, proven consent.
#: A block by the secretariat is not theirs to lift.
LIFTED_BY_CONFIRMATION = frozenset(
    {
        SuppressionReason.UNSUBSCRIBED,
        SuppressionReason.DELETED,
        SuppressionReason.HARD_BOUNCE,
        SuppressionReason.SOFT_BOUNCE,
        SuppressionReason.COMPLAINT,
    }
)


class SubscribeRefused(ValueError):
    """The request itself is unusable (no public list chosen); the form says why."""


class MailDecision(StrEnum):
    """Whether a confirmation mail goes out for a request, and if not, why."""

    SEND = "send"
    COOLDOWN = "cooldown"  # one went to this address within the cool-down
    BLOCKED = "blocked"  # the secretariat blocked the address or its domain
    CAPPED = "capped"  # the hourly cap on confirmation mails is reached
    NOTHING_TO_CONFIRM = "nothing-to-confirm"  # already confirmed on every list asked for


@dataclass(frozen=True)
class SubscribeOutcome:
    subscriber_id: int
    created: bool
    requested: tuple[int, ...]  # the public lists asked for this time
    pending: tuple[int, ...]  # every list the confirmation mail names (awaiting confirmation)
    mail: MailDecision

    @property
    def send_mail(self) -> bool:
        return self.mail is MailDecision.SEND


def _get_or_create_subscriber(
    session: Session, address: str, *, name: str, language: str, now: datetime
) -> tuple[Subscriber, bool]:
    """One row per address even when two requests race: the loser re-reads the winner's row."""
    found = session.scalar(select(Subscriber).where(Subscriber.email == address))
    if found is not None:
        return found, False
    subscriber = Subscriber(
        email=address, name=name, language=language, created_at=now, updated_at=now
    )
    try:
        with session.begin_nested():
            session.add(subscriber)
    except IntegrityError:
        # The other request committed the same address between our read and our insert.
        found = session.scalar(select(Subscriber).where(Subscriber.email == address))
        if found is None:
            raise
        return found, False
    return subscriber, True


def _subscription(session: Session, subscriber_id: int, list_id: int) -> Subscription | None:
    return session.scalar(
        select(Subscription).where(
            Subscription.subscriber_id == subscriber_id, Subscription.list_id == list_id
        )
    )


def _ask_for(session: Session, subscriber: Subscriber, list_id: int, now: datetime) -> str:
    """Put one list in the unconfirmed state unless it is confirmed; says what it did."""
    existing = _subscription(session, subscriber.id, list_id)
    if existing is None:
        try:
            with session.begin_nested():
                session.add(
                    Subscription(
                        subscriber_id=subscriber.id,
                        list_id=list_id,
                        status=SubscriptionStatus.UNCONFIRMED,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            existing = _subscription(session, subscriber.id, list_id)
            if existing is None:
                raise
        else:
            return "new"
    if existing.status == SubscriptionStatus.CONFIRMED:
        return "already confirmed"
    if existing.status == SubscriptionStatus.UNSUBSCRIBED:
        # They left once and ask again: their new confirmation decides.
        existing.status = SubscriptionStatus.UNCONFIRMED
        existing.updated_at = now
        return "asked again after unsubscribing"
    existing.updated_at = now  # a fresh request restarts the purge clock
    return "asked again, still unconfirmed"


def is_blocked(session: Session, subscriber: Subscriber) -> bool:
    """Blocked by the secretariat: the subscriber row, or a `blocked` address/domain suppression."""
    if subscriber.status == SubscriberStatus.BLOCKED:
        return True
    matches = [
        and_(
            Suppression.kind == SuppressionKind.ADDRESS,
            Suppression.value_hash == hash_value(subscriber.email),
        )
    ]
    if not subscriber.suppression_exempt:  # staff lifted domain suppression for this address
        matches.append(
            and_(
                Suppression.kind == SuppressionKind.DOMAIN,
                Suppression.value_hash == hash_value(subscriber.email.rpartition("@")[2]),
            )
        )
    found = session.scalar(
        select(Suppression.id).where(Suppression.reason == SuppressionReason.BLOCKED, or_(*matches))
    )
    return found is not None


def _claim_confirmation_mail(
    session: Session, subscriber_id: int, now: datetime, cooldown: timedelta
) -> bool:
    """Set confirmation_sent_at unless a mail went out within the cool-down; atomic.

    One conditional UPDATE, so two requests at the same moment cannot both win.
    """
    result = session.execute(
        update(Subscriber)
        .where(
            Subscriber.id == subscriber_id,
            or_(
                Subscriber.confirmation_sent_at.is_(None),
                Subscriber.confirmation_sent_at <= now - cooldown,
            ),
        )
        .values(confirmation_sent_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def request_subscription(
    session: Session,
    email: str,
    list_ids: Sequence[int],
    *,
    name: str = "",
    language: str = "en",
    source: str,
    consent_text: str,
    ip: str | None,
    user_agent: str | None,
    now: datetime | None = None,
    cooldown: timedelta = timedelta(minutes=10),
    mail_budget: Callable[[], bool] | None = None,
) -> SubscribeOutcome:
    """Record a subscribe request and decide whether a confirmation mail goes out.

    Raises InvalidAddress for an address that is not one, SubscribeRefused when
    no public list is chosen. Otherwise the request is stored (unconfirmed) and
    consent recorded, whoever the address belongs to; `mail_budget` is asked
    last and says whether the global hourly cap still allows a mail.
    The caller commits, then enqueues the mail when `send_mail`.
    """
    now = now or utcnow()
    address = normalise_email(email)
    wanted = set(list_ids)
    lists = list(
        session.scalars(
            select(MailingList)
            .where(MailingList.id.in_(wanted), MailingList.public.is_(True))
            .order_by(MailingList.id)
        )
    )
    if not lists:
        raise SubscribeRefused("Choose at least one list.")
    subscriber, created = _get_or_create_subscriber(
        session, address, name=name.strip()[:200], language=language or "en", now=now
    )
    for mailing_list in lists:
        what = _ask_for(session, subscriber, mailing_list.id, now)
        record_consent(
            session,
            subscriber_id=subscriber.id,
            list_id=mailing_list.id,
            action=ConsentAction.REQUESTED,
            ip=ip,
            user_agent=user_agent,
            source=source,
            consent_text=consent_text,
            detail=what,
            now=now,
        )
    session.flush()
    pending = tuple(
        session.scalars(
            select(Subscription.list_id)
            .where(
                Subscription.subscriber_id == subscriber.id,
                Subscription.status == SubscriptionStatus.UNCONFIRMED,
            )
            .order_by(Subscription.list_id)
        )
    )
    requested = tuple(item.id for item in lists)
    decision = _decide(session, subscriber, pending, now, cooldown, mail_budget)
    if decision is not MailDecision.SEND:
        log.info(
            "subscribe request for subscriber %s: no confirmation mail (%s)",
            subscriber.id,
            decision,
        )
    return SubscribeOutcome(subscriber.id, created, requested, pending, decision)


def _decide(
    session: Session,
    subscriber: Subscriber,
    pending: tuple[int, ...],
    now: datetime,
    cooldown: timedelta,
    mail_budget: Callable[[], bool] | None,
) -> MailDecision:
    if not pending:
        return MailDecision.NOTHING_TO_CONFIRM
    if is_blocked(session, subscriber):
        return MailDecision.BLOCKED
    previous = subscriber.confirmation_sent_at
    if not _claim_confirmation_mail(session, subscriber.id, now, cooldown):
        return MailDecision.COOLDOWN
    if mail_budget is not None and not mail_budget():
        # Stored, but no mail: hand the cool-down back so a later try can get one.
        session.execute(
            update(Subscriber)
            .where(Subscriber.id == subscriber.id)
            .values(confirmation_sent_at=previous)
            .execution_options(synchronize_session=False)
        )
        log.warning(
            "confirmation mail cap reached: request of subscriber %s stored, no mail sent",
            subscriber.id,
        )
        return MailDecision.CAPPED
    session.expire(subscriber, ["confirmation_sent_at"])
    return MailDecision.SEND


@dataclass
class ConfirmOutcome:
    subscriber: Subscriber | None  # None: the address was deleted or purged meanwhile
    confirmed: list[MailingList] = field(default_factory=list)  # newly confirmed now
    already: list[MailingList] = field(default_factory=list)  # confirmed before this click
    blocked: bool = False
    lifted: list[str] = field(default_factory=list)  # reasons of suppressions lifted


def confirm(
    session: Session,
    token_data: ListsToken,
    *,
    ip: str | None,
    user_agent: str | None,
    now: datetime | None = None,
    source: str = "confirmation link",
) -> ConfirmOutcome:
    """Confirm the lists the token names; idempotent (a second click confirms nothing more).

    Only unconfirmed subscriptions turn confirmed: one the person left after
    asking stays left. Confirming reactivates someone who had left everything
    and lifts their own address suppression, except a block by the secretariat.
    """
    now = now or utcnow()
    subscriber = session.get(Subscriber, token_data.subscriber_id)
    if subscriber is None:
        return ConfirmOutcome(None)
    outcome = ConfirmOutcome(subscriber)
    if is_blocked(session, subscriber):
        outcome.blocked = True
        return outcome
    rows = session.execute(
        select(Subscription, MailingList)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(
            Subscription.subscriber_id == subscriber.id,
            Subscription.list_id.in_(token_data.list_ids),
        )
        .order_by(MailingList.name)
    ).all()
    for subscription, mailing_list in rows:
        if subscription.status == SubscriptionStatus.CONFIRMED:
            outcome.already.append(mailing_list)
        elif subscription.status == SubscriptionStatus.UNCONFIRMED:
            subscription.status = SubscriptionStatus.CONFIRMED
            subscription.confirmed_at = now
            subscription.updated_at = now
            outcome.confirmed.append(mailing_list)
    if not outcome.confirmed:
        return outcome
    detail = None
    if subscriber.status == SubscriberStatus.UNSUBSCRIBED:
        subscriber.status = SubscriberStatus.ACTIVE
        detail = "reactivated (had unsubscribed from everything)"
    lifted = session.scalars(
        select(Suppression).where(
            Suppression.kind == SuppressionKind.ADDRESS,
            Suppression.value_hash == hash_value(subscriber.email),
            Suppression.reason.in_([str(reason) for reason in LIFTED_BY_CONFIRMATION]),
        )
    ).all()
    for suppression in lifted:
        outcome.lifted.append(suppression.reason)
        session.delete(suppression)
    if lifted:
        note = "address suppression lifted (" + ", ".join(outcome.lifted) + ")"
        detail = f"{detail}; {note}" if detail else note
    for mailing_list in outcome.confirmed:
        record_consent(
            session,
            subscriber_id=subscriber.id,
            list_id=mailing_list.id,
            action=ConsentAction.CONFIRMED,
            ip=ip,
            user_agent=user_agent,
            source=source,
            detail=detail,
            now=now,
        )
    session.flush()
    return outcome


@dataclass(frozen=True)
class PurgeOutcome:
    subscriptions: int
    subscribers: int


def purge_unconfirmed(
    session: Session, *, older_than: timedelta, now: datetime | None = None
) -> PurgeOutcome:
    """Forget requests nobody confirmed: keeping addresses no one vouched for helps no one.

    Unconfirmed subscriptions untouched for `older_than` go; then subscribers
    who are left with no subscription and never did anything but ask (their
    only consent events are requests) go too. Their request events stay, with
    no subscriber, as the record that a form was used. The caller commits.
    """
    cutoff = (now or utcnow()) - older_than
    subscriptions = session.execute(
        delete(Subscription)
        .where(
            Subscription.status == SubscriptionStatus.UNCONFIRMED,
            Subscription.updated_at < cutoff,
        )
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    only_asked = and_(
        exists().where(
            ConsentEvent.subscriber_id == Subscriber.id,
            ConsentEvent.action == ConsentAction.REQUESTED,
        ),
        ~exists().where(
            ConsentEvent.subscriber_id == Subscriber.id,
            ConsentEvent.action != ConsentAction.REQUESTED,
        ),
    )
    subscribers = session.execute(
        delete(Subscriber)
        .where(
            Subscriber.created_at < cutoff,
            Subscriber.status == SubscriberStatus.ACTIVE,
            ~exists().where(Subscription.subscriber_id == Subscriber.id),
            only_asked,
        )
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    return PurgeOutcome(int(subscriptions or 0), int(subscribers or 0))
