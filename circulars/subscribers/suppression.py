"""The global suppression list: addresses and domains that are never mailed.

Lookups go by SHA-256 of the normalised value, so an address whose owner
deleted their data (only the hash is kept) still cannot be imported or added
back. Putting a suppressed address on a list anyway takes an explicit
override that records who did it and why (`lift_for`).

Nothing here touches subscriptions: a suppression works at send time (the
snapshot in `sending.service.recipients_query` leaves suppressed addresses and
domains out), so callers decide whether to also take people off lists.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import Select, and_, delete, func, literal, or_, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..models import (
    Subscriber,
    SubscriberStatus,
    Suppression,
    SuppressionKind,
    SuppressionOverride,
    SuppressionReason,
    utcnow,
)
from .addresses import InvalidAddress, normalise_email

# Words for the reasons, as staff read them in refusals and on the admin pages.
REASON_LABELS: dict[str, str] = {
    SuppressionReason.UNSUBSCRIBED: "unsubscribed from everything",
    SuppressionReason.HARD_BOUNCE: "hard bounce",
    SuppressionReason.SOFT_BOUNCE: "repeated soft bounces",
    SuppressionReason.COMPLAINT: "spam complaint",
    SuppressionReason.DELETED: "deleted their data",
    SuppressionReason.BLOCKED: "blocked by the secretariat",
}

# When the same value is suppressed again for another reason, the stronger one is kept:
# a person's own wish (unsubscribe, complaint, deletion) outranks a delivery problem, and
# deletion outranks everything because it also erases the stored address.
_STRENGTH: dict[str, int] = {
    SuppressionReason.SOFT_BOUNCE: 0,
    SuppressionReason.HARD_BOUNCE: 1,
    SuppressionReason.UNSUBSCRIBED: 2,
    SuppressionReason.BLOCKED: 3,
    SuppressionReason.COMPLAINT: 4,
    SuppressionReason.DELETED: 5,
}


class LiftRefused(ValueError):
    """An override was asked for without a reason, or there is nothing to lift."""


def hash_value(value: str) -> str:
    """SHA-256 hex of a normalised address or domain: the key every lookup uses.

    Callers pass values already normalised (`normalise_email`, `normalise_domain`);
    stripping and lower-casing again here only guards against a stray capital.
    """
    value = value.strip()
    # ASCII is its own NFC form: the normalisation is skipped for most addresses, which
    # an import of a million rows hashes once each.
    canonical = (value if value.isascii() else unicodedata.normalize("NFC", value)).lower()
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def normalise_domain(raw: str) -> str:
    """A domain as `Subscriber.domain` stores it (email-validator's form, lower-cased).

    Validated through email-validator with a placeholder local part, so a domain
    suppression matches exactly the domains stored for subscribers, IDNA included.
    Raises InvalidAddress with a message about the domain.
    """
    candidate = raw.strip().lstrip("@").strip()
    if not candidate or "@" in candidate:
        raise InvalidAddress("enter a domain such as example.org, without a name or @")
    try:
        return normalise_email(f"postmaster@{candidate}").rpartition("@")[2]
    except InvalidAddress as exc:
        raise InvalidAddress(str(exc).replace("after the @-sign", "domain")) from None


def _address(email: str) -> str:
    """Normalise if possible; an address stored before validation tightened still looks up."""
    try:
        return normalise_email(email)
    except InvalidAddress:
        return unicodedata.normalize("NFC", email.strip()).lower()


def describe(suppression: Suppression) -> str:
    """`hard bounce`, `blocked by the secretariat`, ...: the reason in words."""
    return REASON_LABELS.get(suppression.reason, suppression.reason)


def is_suppressed(session: Session, email: str) -> Suppression | None:
    """The suppression that stops mail to this address, or None.

    The address's own entry comes first (by hash, so deleted addresses count); then
    its domain's, unless staff exempted this subscriber from domain suppression.
    """
    address = _address(email)
    found = session.scalar(
        select(Suppression).where(
            Suppression.kind == SuppressionKind.ADDRESS,
            Suppression.value_hash == hash_value(address),
        )
    )
    if found is not None:
        return found
    domain_row = session.scalar(
        select(Suppression).where(
            Suppression.kind == SuppressionKind.DOMAIN,
            Suppression.value_hash == hash_value(address.rpartition("@")[2]),
        )
    )
    if domain_row is None:
        return None
    exempt = session.scalar(
        select(Subscriber.suppression_exempt).where(Subscriber.email == address)
    )
    return None if exempt else domain_row


def _values(session: Session, values: list[str]) -> Select[tuple[str]]:
    """A subquery of the strings in one JSON parameter.

    An import checks thousands of hashes per chunk: as `IN (…)` with a parameter
    each, planning the statement took longer than running it (about 40 ms a
    chunk on PostgreSQL with a million rows).
    """
    if session.get_bind().dialect.name == "postgresql":
        elements = func.jsonb_array_elements_text(literal(values, JSONB)).table_valued("value")
    else:
        elements = func.json_each(json.dumps(values)).table_valued("value")
    return select(elements.c.value)


def suppressed_among(session: Session, emails: Iterable[str]) -> set[str]:
    """Which of these (already normalised) addresses are suppressed: for imports, by chunk.

    Two queries whatever the chunk size: one for the address and domain hashes
    together, and one for the exemptions of addresses at a suppressed domain
    (skipped when no domain matched). The hashes go as one JSON parameter, so
    there is no parameter limit to mind.
    """
    return set(suppression_reasons_among(session, emails))


def suppression_reasons_among(session: Session, emails: Iterable[str]) -> dict[str, str]:
    """{address: reason in words} for the suppressed ones among these normalised addresses.

    The reason is what `is_suppressed` would give: the address's own entry first,
    else its domain's. Same two queries as `suppressed_among`, instead of a
    look-up per suppressed address (an import meets a thousand of them).
    """
    by_hash: dict[str, str] = {}
    by_domain: dict[str, list[str]] = defaultdict(list)
    domain_hashes: dict[str, str] = {}  # a chunk has few distinct domains
    for email in emails:
        by_hash[hash_value(email)] = email
        domain = email.rpartition("@")[2]
        if (domain_hash := domain_hashes.get(domain)) is None:
            domain_hash = domain_hashes[domain] = hash_value(domain)
        by_domain[domain_hash].append(email)
    if not by_hash:
        return {}
    rows = session.execute(
        select(Suppression.kind, Suppression.value_hash, Suppression.reason).where(
            or_(
                and_(
                    Suppression.kind == SuppressionKind.ADDRESS,
                    Suppression.value_hash.in_(_values(session, list(by_hash))),
                ),
                and_(
                    Suppression.kind == SuppressionKind.DOMAIN,
                    Suppression.value_hash.in_(_values(session, list(by_domain))),
                ),
            )
        )
    ).all()
    reasons: dict[str, str] = {}
    at_domain: dict[str, str] = {}
    for kind, value_hash, reason in rows:
        label = REASON_LABELS.get(reason, reason)
        if kind == SuppressionKind.ADDRESS:
            reasons[by_hash[value_hash]] = label
        else:
            at_domain.update(dict.fromkeys(by_domain[value_hash], label))
    candidates = [email for email in at_domain if email not in reasons]
    if candidates:
        exempt = set(
            session.scalars(
                select(Subscriber.email).where(
                    Subscriber.email.in_(_values(session, candidates)),
                    Subscriber.suppression_exempt,
                )
            )
        )
        reasons.update({email: at_domain[email] for email in candidates if email not in exempt})
    return reasons


def suppress(
    session: Session,
    *,
    email: str | None = None,
    domain: str | None = None,
    reason: str,
    note: str = "",
    user_id: int | None = None,
) -> Suppression:
    """Suppress one address or one domain; idempotent, returns the (new or existing) row.

    An existing entry is kept and takes the new reason only if it is stronger
    (see _STRENGTH); `deleted` also erases the stored address, keeping only its
    hash. For an address, an existing subscriber's status follows a `blocked` or
    `unsubscribed` reason, so the admin shows why they get nothing. Subscriptions
    are left as they are: callers that want people off their lists do that.
    Raises InvalidAddress for a malformed address or domain.
    """
    if (email is None) == (domain is None):
        raise ValueError("suppress exactly one of email or domain")
    reason = SuppressionReason(reason)
    if email is not None:
        kind, value = SuppressionKind.ADDRESS, normalise_email(email)
    else:
        kind, value = SuppressionKind.DOMAIN, normalise_domain(domain or "")
    value_hash = hash_value(value)
    stored = None if reason == SuppressionReason.DELETED else value

    def existing() -> Suppression | None:
        return session.scalar(
            select(Suppression).where(
                Suppression.kind == kind, Suppression.value_hash == value_hash
            )
        )

    row = existing()
    if row is None:
        row = Suppression(
            kind=kind,
            value=stored,
            value_hash=value_hash,
            reason=reason,
            note=note.strip(),
            created_by_id=user_id,
            created_at=utcnow(),
        )
        try:
            # A savepoint, so losing a race to a concurrent insert of the same value
            # leaves the caller's transaction usable.
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            row = existing()
            assert row is not None
    if row.id is not None and _STRENGTH[reason] > _STRENGTH.get(row.reason, -1):
        row.reason = reason
        if note.strip():
            row.note = note.strip()
    if reason == SuppressionReason.DELETED:
        row.value = None
    if kind == SuppressionKind.ADDRESS and reason in (
        SuppressionReason.BLOCKED,
        SuppressionReason.UNSUBSCRIBED,
    ):
        subscriber = session.scalar(select(Subscriber).where(Subscriber.email == value))
        if subscriber is not None and subscriber.status == SubscriberStatus.ACTIVE:
            subscriber.status = (
                SubscriberStatus.BLOCKED
                if reason == SuppressionReason.BLOCKED
                else SubscriberStatus.UNSUBSCRIBED
            )
    session.flush()
    return row


def unsuppress(
    session: Session,
    suppression_id: int,
    user_id: int | None,
    reason: str = "removed from the suppression list",
) -> Suppression | None:
    """Staff remove an entry; returns it (detached), or None if it was already gone.

    The removal is recorded as an override (who, when, what) since it reopens an
    address or a whole domain to mail. A subscriber who was `blocked` by this entry
    becomes active again; one who unsubscribed stays unsubscribed (their wish is
    not undone by staff tidying the list).
    """
    row = session.get(Suppression, suppression_id)
    if row is None:
        return None
    shown = row.value if row.value is not None else f"sha256:{row.value_hash[:16]}"
    session.add(
        SuppressionOverride(
            email=shown,
            list_id=None,
            suppression_kind=row.kind,
            suppression_reason=row.reason,
            user_id=user_id,
            reason=reason.strip() or "removed from the suppression list",
            created_at=utcnow(),
        )
    )
    if row.kind == SuppressionKind.ADDRESS and row.value is not None:
        subscriber = session.scalar(select(Subscriber).where(Subscriber.email == row.value))
        if subscriber is not None and subscriber.status == SubscriberStatus.BLOCKED:
            subscriber.status = SubscriberStatus.ACTIVE
    session.execute(delete(Suppression).where(Suppression.id == row.id))
    session.flush()
    return row


def lift_for(
    session: Session, email: str, *, user_id: int | None, reason: str, list_id: int | None
) -> SuppressionOverride:
    """Let staff put a suppressed address on a list anyway, recording who and why.

    An address suppression is deleted; a domain suppression stays for everyone
    else and this subscriber gets `suppression_exempt` (a bare subscriber row is
    created if none exists yet). A subscriber whose status is `unsubscribed` or
    `blocked` is made active again, since that is what the override is for. One
    override row is written per thing lifted; the first is returned.
    Raises LiftRefused for an empty reason or an address that is not suppressed.
    """
    why = reason.strip()
    if not why:
        raise LiftRefused("Say why this address should be mailed despite the suppression list.")
    address = normalise_email(email)
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == address))
    lifted: list[tuple[str, str]] = []
    now = utcnow()

    own = session.scalar(
        select(Suppression).where(
            Suppression.kind == SuppressionKind.ADDRESS,
            Suppression.value_hash == hash_value(address),
        )
    )
    if own is not None:
        lifted.append((own.kind, own.reason))
        session.execute(delete(Suppression).where(Suppression.id == own.id))

    domain_row = session.scalar(
        select(Suppression).where(
            Suppression.kind == SuppressionKind.DOMAIN,
            Suppression.value_hash == hash_value(address.rpartition("@")[2]),
        )
    )
    if domain_row is not None and not (subscriber is not None and subscriber.suppression_exempt):
        if subscriber is None:
            subscriber = Subscriber(email=address)
            session.add(subscriber)
        subscriber.suppression_exempt = True
        lifted.append((domain_row.kind, domain_row.reason))

    if subscriber is not None and subscriber.status != SubscriberStatus.ACTIVE:
        if not lifted:
            # No entry, but the status alone kept them off lists (e.g. unsubscribed
            # before the suppression list existed): recorded the same way.
            lifted.append((SuppressionKind.ADDRESS, subscriber.status))
        subscriber.status = SubscriberStatus.ACTIVE

    if not lifted:
        raise LiftRefused(f"{address} is not on the suppression list.")
    overrides = [
        SuppressionOverride(
            email=address,
            list_id=list_id,
            suppression_kind=kind,
            suppression_reason=what,
            user_id=user_id,
            reason=why,
            created_at=now,
        )
        for kind, what in lifted
    ]
    session.add_all(overrides)
    session.flush()
    return overrides[0]
