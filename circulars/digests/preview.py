"""The admin's look at a list's next digest: when it goes, to whom, and how it reads.

Nothing is written. The content is what each reader would get if the digest
ran now (the real one, at its time, also holds what is sent until then).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..mail.personalise import RecipientFields, fill
from ..models import Circular, MailingList
from ..sending.context import SendContext
from . import schedule
from .content import ReaderDigest, count_readers, list_circulars, reader_digests
from .runs import plan_groups, render_group


@dataclass(frozen=True)
class DigestPreview:
    frequency: str
    next_at: datetime
    since: datetime  # the previous scheduled moment
    readers: int
    recipients: int  # readers with something new now
    groups: int
    sample: ReaderDigest | None  # whose digest is shown; None: nobody has anything new
    circulars: list[tuple[int | None, str]]  # (number, title) in the sample
    subject: str = ""
    html: str = ""
    text: str = ""


def preview(
    session: Session,
    mailing_list: MailingList,
    frequency: str,
    ctx: SendContext,
    now: datetime,
    *,
    subscriber_email: str | None = None,
    viewer_email: str = "",
) -> DigestPreview:
    """The next digest of a list, shown for one reader (the one asked for, else the first).

    With no reader who has anything new, it shows the circulars sent to the
    list since the previous scheduled moment, as a new reader would see them.
    The links in the shown mail are test links (subscriber 0) that change nothing.
    """
    plan = schedule.Schedule.of(mailing_list)
    next_at = schedule.following(plan, frequency, now, ctx.timezone)
    since = schedule.previous(plan, frequency, next_at, ctx.timezone)
    groups = plan_groups(reader_digests(session, mailing_list.id, frequency, now, now))
    readers = [reader for group in groups.values() for reader in group.readers]
    wanted = (subscriber_email or "").strip().lower()
    sample = next((r for r in readers if r.email == wanted), None) if wanted else None
    if sample is None and readers and not wanted:
        sample = readers[0]
    if sample is not None:
        ids, language, name, email = sample.circular_ids, sample.language, sample.name, sample.email
    else:
        ids = tuple(
            item.circular_id
            for item in list_circulars(session, mailing_list.id, now)
            if item.sent_at > since
        )
        language, name, email = "en", "", viewer_email
    result = DigestPreview(
        frequency=frequency,
        next_at=next_at,
        since=since,
        readers=count_readers(session, mailing_list.id, frequency, now),
        recipients=len(readers),
        groups=len(groups),
        sample=sample,
        circulars=[],
    )
    if not ids:
        session.rollback()
        return result
    rendered = render_group(
        session,
        ctx,
        circular_ids=ids,
        language=language,
        list_name=mailing_list.name,
        frequency=frequency,
        period_end=next_at,
    )
    values = RecipientFields(
        name=name,
        email=email,
        list_name=mailing_list.name,
        unsubscribe_url=ctx.links.unsubscribe(0, 0),
        preferences_url=ctx.links.preferences(0),
        language=language,
    ).values()
    titles = {
        row.id: (row.number, row.title)
        for row in session.execute(
            select(Circular.id, Circular.number, Circular.title).where(Circular.id.in_(ids))
        )
    }
    session.rollback()
    return DigestPreview(
        frequency=frequency,
        next_at=next_at,
        since=since,
        readers=result.readers,
        recipients=result.recipients,
        groups=result.groups,
        sample=sample,
        circulars=[titles[cid] for cid in ids if cid in titles],
        subject=rendered.subject,
        html=fill(rendered.html, values, escape=True),
        text=fill(rendered.text, values, escape=False),
    )
