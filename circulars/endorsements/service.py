"""Opening a circular for endorsement, taking endorsements, confirming and deciding on them.

Duplicates: an organisation is known by its normalised name and its country.
A second submission for the same organisation on the same circular is merged
into the existing row (`submissions` counts them). While the row is still
unconfirmed the newest details simply replace the old ones; once an address has
been confirmed, new details wait in the signed link sent to the new address and
replace the old ones only when that link is used. The status never moves
backwards through a new submission: an approved organisation stays approved, a
rejected one stays rejected.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..models import Circular, Endorsement, EndorsementStatus, utcnow
from ..subscribers.addresses import InvalidAddress, normalise_email
from .countries import country_name, is_country
from .tokens import ConfirmToken, Submission

ORGANISATION_MAX = 200
CONTACT_MAX = 200
COMMENT_MAX = 1000


class EndorsementRefused(ValueError):
    """The request cannot be taken; `field` names the form field the message belongs to."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# --- the statement's window -----------------------------------------------------------------


def is_open(circular: Circular, now: datetime | None = None) -> bool:
    """Open: opened and not closed by hand, and the closing time (if any) still to come."""
    if not circular.endorsement_open or circular.number is None:
        return False
    closes_at = circular.endorsement_closes_at
    return closes_at is None or (now or utcnow()) < closes_at


def open_for_endorsement(
    circular: Circular, closes_at: datetime | None, now: datetime | None = None
) -> None:
    """Open (or reopen) a sent circular, until `closes_at` or until closed by hand."""
    now = now or utcnow()
    if circular.is_draft or circular.number is None:
        raise EndorsementRefused("Only a sent circular can be opened for endorsement.")
    if closes_at is not None and closes_at <= now:
        raise EndorsementRefused("The closing time is in the past.", "closes_at")
    circular.endorsement_open = True
    circular.endorsement_opened_at = now
    circular.endorsement_closes_at = closes_at


def close_endorsement(circular: Circular) -> None:
    """Close now; the closing time stays as it was, for the record."""
    circular.endorsement_open = False


# --- the form ------------------------------------------------------------------------------


def normalise_organisation(name: str) -> str:
    """The key duplicates are found by: case, accents' composition, punctuation and spacing ignored.

    "Coastal Workers' Union", "coastal workers union" and "COASTAL  WORKERS UNION."
    are one organisation; "Coastal Workers Union (Mombasa)" is another.
    """
    text = unicodedata.normalize("NFKC", name).casefold()
    text = re.sub(r"[^\w]+", " ", text)
    return " ".join(text.split())[:ORGANISATION_MAX]


def _one_line(value: str) -> str:
    return " ".join(value.split())


def clean_submission(
    *, organisation: str, country: str, contact_name: str, email: str, comment: str
) -> Submission:
    """Validate and normalise what the form sent; raises EndorsementRefused."""
    organisation = _one_line(organisation)
    if not normalise_organisation(organisation):
        raise EndorsementRefused("Enter the name of your organisation.", "organisation")
    if len(organisation) > ORGANISATION_MAX:
        raise EndorsementRefused(f"At most {ORGANISATION_MAX} characters, please.", "organisation")
    country = country.strip().upper()
    if not is_country(country):
        raise EndorsementRefused("Choose a country from the list.", "country")
    contact_name = _one_line(contact_name)
    if not contact_name:
        raise EndorsementRefused("Enter the name of a contact person.", "contact_name")
    if len(contact_name) > CONTACT_MAX:
        raise EndorsementRefused(f"At most {CONTACT_MAX} characters, please.", "contact_name")
    try:
        address = normalise_email(email)
    except InvalidAddress:
        raise EndorsementRefused("This is not a valid email address.", "email") from None
    comment = comment.strip().replace("\r\n", "\n")
    if len(comment) > COMMENT_MAX:
        raise EndorsementRefused(f"At most {COMMENT_MAX} characters, please.", "comment")
    return Submission(organisation, country, contact_name, address, comment)


@dataclass(frozen=True)
class SubmitOutcome:
    endorsement_id: int
    merged: bool  # an existing organisation's row took this submission
    status: str  # the row's status after the submission


def _find(session: Session, circular_id: int, key: str, country: str) -> Endorsement | None:
    return session.scalar(
        select(Endorsement).where(
            Endorsement.circular_id == circular_id,
            Endorsement.org_key == key,
            Endorsement.country == country,
        )
    )


def submit(
    session: Session,
    circular: Circular,
    submission: Submission,
    *,
    ip: str | None,
    now: datetime | None = None,
) -> SubmitOutcome:
    """Store a submission (new row or merged into the organisation's row); the caller commits.

    Raises EndorsementRefused when the statement is not open. The caller then
    mails the confirmation link (whatever happened here, so the answer to the
    form never tells whether the organisation or the address was known).
    """
    now = now or utcnow()
    if not is_open(circular, now):
        raise EndorsementRefused("This statement is closed for endorsement.")
    key = normalise_organisation(submission.organisation)
    row = _find(session, circular.id, key, submission.country)
    if row is None:
        row = Endorsement(
            circular_id=circular.id,
            organisation=submission.organisation,
            org_key=key,
            country=submission.country,
            contact_name=submission.contact_name,
            email=submission.email,
            comment=submission.comment,
            status=EndorsementStatus.PENDING_CONFIRMATION,
            submissions=1,
            created_at=now,
            updated_at=now,
            details_at=now,
            ip=ip,
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            # Another submission for the same organisation won the insert: merge into it.
            row = _find(session, circular.id, key, submission.country)
            if row is None:
                raise
        else:
            return SubmitOutcome(row.id, False, row.status)
    # One statement, so two merges at the same moment both count.
    session.execute(
        update(Endorsement)
        .where(Endorsement.id == row.id)
        .values(submissions=Endorsement.submissions + 1, updated_at=now, ip=ip)
        .execution_options(synchronize_session=False)
    )
    session.refresh(row)
    if row.status == EndorsementStatus.PENDING_CONFIRMATION:
        # Nothing confirmed yet to protect: the newest details are the ones to confirm.
        _apply(row, submission)
        row.details_at = now
    return SubmitOutcome(row.id, True, row.status)


def _apply(row: Endorsement, submission: Submission) -> bool:
    """Put the submission's details on the row; says whether anything changed."""
    changed = False
    for name in ("organisation", "contact_name", "email", "comment"):
        value = getattr(submission, name)
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed


# --- the confirmation link ---------------------------------------------------------------


@dataclass(frozen=True)
class ConfirmOutcome:
    endorsement: Endorsement | None  # None: the circular or the row is gone
    newly_confirmed: bool = False
    details_changed: bool = False
    # An older link, for an address a later submission replaced before anyone confirmed:
    # it confirms nothing (the later link, sent to the address now on file, does).
    superseded: bool = False

    @property
    def changed(self) -> bool:
        return self.newly_confirmed or self.details_changed


def confirm(session: Session, token: ConfirmToken, now: datetime | None = None) -> ConfirmOutcome:
    """Use a confirmation link; a second use of the same link changes nothing. The caller commits.

    The link's details (the submission it was sent for) become the row's
    contact details, unless the row holds those of a later submission: the
    latest submission confirmed is the one kept, whatever order the links are
    used in. A link's time has whole seconds, so one from the same second as
    the details on file counts as theirs.
    """
    row = session.get(Endorsement, token.endorsement_id)
    if row is None:
        return ConfirmOutcome(None)
    if normalise_organisation(token.submission.organisation) != row.org_key:
        return ConfirmOutcome(None)  # cannot happen with our links; refuse rather than guess
    now = now or utcnow()
    older = (
        token.issued_at is not None
        and row.details_at is not None
        and token.issued_at + timedelta(seconds=1) < row.details_at
    )
    newly = row.status == EndorsementStatus.PENDING_CONFIRMATION
    if newly and older and token.submission.email.lower() != row.email.lower():
        return ConfirmOutcome(row, superseded=True)
    if newly:
        row.status = EndorsementStatus.CONFIRMED
        row.confirmed_at = now
    changed = False
    if not older:
        changed = _apply(row, token.submission)
        if token.issued_at is not None:
            row.details_at = max(token.issued_at, row.details_at or token.issued_at)
    if newly or changed:
        row.updated_at = now
    session.flush()
    return ConfirmOutcome(row, newly, changed)


# --- the secretariat's decision ----------------------------------------------------------


@dataclass(frozen=True)
class DecideOutcome:
    changed: int
    unchanged: int  # already in that state
    unconfirmed: int  # the address is not confirmed yet: no decision possible


def decide(
    session: Session,
    circular_id: int,
    endorsement_ids: Sequence[int],
    *,
    approve: bool,
    user_id: int | None,
    now: datetime | None = None,
) -> DecideOutcome:
    """Approve or reject confirmed endorsements of one circular; the caller commits.

    Ids of other circulars are ignored. An endorsement whose address is not
    confirmed cannot be approved or rejected: nobody has shown it is real yet.
    """
    now = now or utcnow()
    target = EndorsementStatus.APPROVED if approve else EndorsementStatus.REJECTED
    rows = session.scalars(
        select(Endorsement).where(
            Endorsement.circular_id == circular_id, Endorsement.id.in_(set(endorsement_ids))
        )
    ).all()
    changed = unchanged = unconfirmed = 0
    for row in rows:
        if row.status == EndorsementStatus.PENDING_CONFIRMATION:
            unconfirmed += 1
        elif row.status == target:
            unchanged += 1
        else:
            row.status = target
            row.decided_by_id = user_id
            row.decided_at = now
            row.updated_at = now
            changed += 1
    session.flush()
    return DecideOutcome(changed, unchanged, unconfirmed)


def purge_unconfirmed(
    session: Session, *, older_than: timedelta, now: datetime | None = None
) -> int:
    """Forget endorsements whose address nobody confirmed: contact details no one vouched for.

    An endorsement untouched (no new submission) for `older_than` while still
    unconfirmed is deleted; returns how many. The caller commits.
    """
    cutoff = (now or utcnow()) - older_than
    result = session.execute(
        delete(Endorsement)
        .where(
            Endorsement.status == EndorsementStatus.PENDING_CONFIRMATION,
            Endorsement.updated_at < cutoff,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# --- what the public sees ----------------------------------------------------------------


@dataclass(frozen=True)
class Endorser:
    organisation: str
    country: str  # the country's name in the reader's language
    country_code: str


def endorsed_by(session: Session, circular_id: int, language: str = "en") -> list[Endorser]:
    """The approved organisations, sorted by name (then country), as the archive page shows them."""
    rows = session.execute(
        select(Endorsement.org_key, Endorsement.organisation, Endorsement.country).where(
            Endorsement.circular_id == circular_id,
            Endorsement.status == EndorsementStatus.APPROVED,
        )
    ).all()
    # By the normalised name (punctuation and case ignored), then the country's name.
    ordered = sorted(rows, key=lambda row: (row[0], country_name(row[2], language).casefold()))
    return [Endorser(name, country_name(code, language), code) for _key, name, code in ordered]


def status_counts(session: Session, circular_id: int) -> dict[str, int]:
    counts = {str(status): 0 for status in EndorsementStatus}
    for status, number in session.execute(
        select(Endorsement.status, func.count())
        .where(Endorsement.circular_id == circular_id)
        .group_by(Endorsement.status)
    ):
        counts[status] = int(number)
    return counts


_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def escape_markdown(text: str) -> str:
    """Every ASCII punctuation character backslash-escaped (CommonMark allows it for all of them).

    An organisation's name is text typed by the public: it must not become a
    link, emphasis or a heading in a circular.
    """
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


def endorsement_markdown(session: Session, circular: Circular) -> str:
    """The "Endorsed by" list of a circular as Markdown, to append to a later circular."""
    endorsers = endorsed_by(session, circular.id)
    count = len(endorsers)
    noun = "organisation" if count == 1 else "organisations"
    lines = [f"**Endorsed by {count} {noun}** (Circular No. {circular.number}):", ""]
    lines += [
        f"- {escape_markdown(item.organisation)} ({escape_markdown(item.country)})"
        for item in endorsers
    ]
    return "\n".join(lines) + "\n"
