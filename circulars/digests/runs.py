"""Digest runs: one per (list, frequency, period), snapshotted once, delivered like a send.

The steps, each safe to repeat and to run on several workers at once:

1. `create_due_runs` inserts the run of each due period. The unique
   (list, frequency, period_end) makes a second beat tick, or a second beat,
   find the row and add nothing.
2. `snapshot` claims a pending run (pending -> running in the same transaction
   as everything it writes), renders one digest per group of readers with the
   same circulars and language, and writes one delivery row per reader. A
   worker that dies half-way rolls all of it back; the run stays pending.
3. `deliver` claims pending rows for a lease, sends each, and marks it sent
   the moment the relay accepts it, committed before the next message starts.
   A re-run (the tick finds the run stalled) takes only rows still pending and
   unclaimed, so no one gets a digest twice; a temporary failure holds its row
   until its next try. A batch slower than its lease (a slow relay, a tight
   per-second limit) renews its claim on the rows it has not reached, or the
   tick would find them free and another worker would send them too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..mail.branding import Branding
from ..mail.mime import Envelope, PreparedMessage, build_message, new_message_id, prepare_message
from ..mail.personalise import RecipientFields
from ..mail.relays import RelayLimited
from ..mail.transport import ConnectionFailed
from ..models import (
    DeliveryMode,
    DigestDelivery,
    DigestDeliveryStatus,
    DigestFrequency,
    DigestGroup,
    DigestRun,
    DigestRunStatus,
    MailingList,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from ..sending.attempt import FAILED, NO_SUBSCRIBER, Outcome, attempt
from ..sending.context import SendContext
from ..sending.marks import marks_for
from . import schedule
from .content import ReaderDigest, count_readers, reader_digests
from .render import digest_items, render_digest

log = logging.getLogger(__name__)

FREQUENCIES = (DigestFrequency.WEEKLY, DigestFrequency.MONTHLY)
#: How long a row waits after a temporary failure before it is tried again.
RETRY_DELAY = timedelta(minutes=2)
#: A run not snapshotted, or with pending rows no worker holds, this long is restarted.
STALL_AFTER = timedelta(seconds=60)


# --- what is due -------------------------------------------------------------------------


@dataclass(frozen=True)
class DuePeriod:
    list_id: int
    list_slug: str
    list_name: str
    frequency: str
    period_start: datetime
    period_end: datetime


def due_periods(
    session: Session,
    now: datetime,
    timezone: str,
    *,
    list_slug: str | None = None,
    frequencies: Sequence[str] = FREQUENCIES,
) -> list[DuePeriod]:
    """Periods due at `now` for lists that have readers in that frequency (run or not)."""
    query = select(MailingList).order_by(MailingList.slug)
    if list_slug is not None:
        query = query.where(MailingList.slug == list_slug)
    has_readers = {
        (list_id, delivery)
        for list_id, delivery in session.execute(
            select(Subscription.list_id, Subscription.delivery)
            .where(
                Subscription.status == SubscriptionStatus.CONFIRMED,
                Subscription.delivery != DeliveryMode.EVERY,
            )
            .distinct()
        )
    }
    due = []
    for mailing_list in session.scalars(query):
        plan = schedule.Schedule.of(mailing_list)
        for frequency in frequencies:
            if (mailing_list.id, frequency) not in has_readers:
                continue
            moment = schedule.due_moment(plan, frequency, now, timezone)
            if moment is None:
                continue
            due.append(
                DuePeriod(
                    list_id=mailing_list.id,
                    list_slug=mailing_list.slug,
                    list_name=mailing_list.name,
                    frequency=frequency,
                    period_start=schedule.previous(plan, frequency, moment, timezone),
                    period_end=moment,
                )
            )
    return due


def existing_run(session: Session, period: DuePeriod) -> DigestRun | None:
    return session.scalar(
        select(DigestRun).where(
            DigestRun.list_id == period.list_id,
            DigestRun.frequency == period.frequency,
            DigestRun.period_end == period.period_end,
        )
    )


def create_due_runs(
    session: Session, now: datetime, timezone: str, *, list_slug: str | None = None
) -> list[int]:
    """Insert the run of every due period that has none yet; the ids of those created."""
    created = []
    for period in due_periods(session, now, timezone, list_slug=list_slug):
        if existing_run(session, period) is not None:
            continue
        try:
            with session.begin_nested():
                run = DigestRun(
                    list_id=period.list_id,
                    frequency=period.frequency,
                    period_start=period.period_start,
                    period_end=period.period_end,
                    status=DigestRunStatus.PENDING,
                    created_at=now,
                )
                session.add(run)
                session.flush()
        except IntegrityError:
            continue  # another tick created it a moment ago
        created.append(run.id)
    session.commit()
    return created


def runs_to_resume(session: Session, now: datetime) -> list[int]:
    """Runs no worker is at: pending for a while, or running with unheld pending rows."""
    pending_rows = exists().where(
        DigestDelivery.run_id == DigestRun.id,
        DigestDelivery.status == DigestDeliveryStatus.PENDING,
    )
    held = exists().where(
        DigestDelivery.run_id == DigestRun.id,
        DigestDelivery.status == DigestDeliveryStatus.PENDING,
        DigestDelivery.claimed_until >= now,
    )
    ids = list(
        session.scalars(
            select(DigestRun.id)
            .where(
                or_(
                    and_(
                        DigestRun.status == DigestRunStatus.PENDING,
                        DigestRun.created_at < now - STALL_AFTER,
                    ),
                    and_(DigestRun.status == DigestRunStatus.RUNNING, pending_rows, ~held),
                    # Everything sent but not yet marked done (a worker died in between).
                    and_(DigestRun.status == DigestRunStatus.RUNNING, ~pending_rows),
                )
            )
            .order_by(DigestRun.id)
        )
    )
    session.commit()
    return ids


# --- snapshot ----------------------------------------------------------------------------


@dataclass
class Group:
    """Readers that get the same rendered digest."""

    circular_ids: tuple[int, ...]
    language: str
    readers: list[ReaderDigest] = field(default_factory=list)


def plan_groups(readers: Iterator[ReaderDigest]) -> dict[tuple[tuple[int, ...], str], Group]:
    groups: dict[tuple[tuple[int, ...], str], Group] = {}
    for reader in readers:
        group = groups.get(reader.key)
        if group is None:
            group = groups[reader.key] = Group(reader.circular_ids, reader.language)
        group.readers.append(reader)
    return groups


def render_group(
    session: Session,
    ctx: SendContext,
    *,
    circular_ids: Sequence[int],
    language: str,
    list_name: str,
    frequency: str,
    period_end: datetime,
    branding: Branding | None = None,
) -> Any:
    """One digest rendered (subject, HTML, text), with markers for the reader's fields."""
    from zoneinfo import ZoneInfo

    items = digest_items(
        session,
        circular_ids,
        language,
        base_url=ctx.base_url,
        signer=ctx.links.signer,
        timezone=ctx.timezone,
    )
    return render_digest(
        items=items,
        list_name=list_name,
        frequency=frequency,
        period_end=period_end.astimezone(ZoneInfo(ctx.timezone)).date(),
        language=language,
        branding=branding or ctx.current_branding(session),
    )


def snapshot(session: Session, run_id: int, ctx: SendContext, now: datetime | None = None) -> bool:
    """Fix who gets what for a pending run and render it; False if it was not pending."""
    now = now or utcnow()
    claimed = session.execute(
        update(DigestRun)
        .where(DigestRun.id == run_id, DigestRun.status == DigestRunStatus.PENDING)
        .values(status=DigestRunStatus.RUNNING, started_at=now)
    ).rowcount  # type: ignore[attr-defined]
    if not claimed:
        session.rollback()
        return False
    run = session.get(DigestRun, run_id, populate_existing=True)
    assert run is not None
    mailing_list = run.mailing_list
    # One reading of the branding for every group, its name kept for From: a save on the
    # branding page while the run goes on changes neither (as for a send).
    branding = ctx.current_branding(session)
    run.from_name = branding.name
    # Readers with their circulars; groups hold only ids and addresses, a few per reader.
    groups = plan_groups(reader_digests(session, run.list_id, run.frequency, run.period_end, now))
    total = 0
    for group in groups.values():
        rendered = render_group(
            session,
            ctx,
            circular_ids=group.circular_ids,
            language=group.language,
            list_name=mailing_list.name,
            frequency=run.frequency,
            period_end=run.period_end,
            branding=branding,
        )
        row = DigestGroup(
            run_id=run.id,
            language=group.language,
            circular_ids=list(group.circular_ids),
            subject=rendered.subject,
            html_template=rendered.html,
            text_template=rendered.text,
        )
        session.add(row)
        session.flush()
        session.execute(
            insert(DigestDelivery),
            [
                {
                    "run_id": run.id,
                    "group_id": row.id,
                    "subscriber_id": reader.subscriber_id,
                    "email": reader.email,
                    "name": reader.name,
                    "circular_ids": list(reader.circular_ids),
                    "status": DigestDeliveryStatus.PENDING.value,
                    "attempts": 0,
                }
                for reader in group.readers
            ],
        )
        total += len(group.readers)
    run.total = total
    run.groups_count = len(groups)
    if total == 0:
        run.status = DigestRunStatus.DONE
        run.finished_at = now
        run.sent_count = run.failed_count = 0
    session.commit()
    log.info("digest run %s: %s readers in %s groups", run_id, total, len(groups))
    return True


# --- delivery ----------------------------------------------------------------------------


@dataclass
class DeliverOutcome:
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    error: str | None = None
    finished: bool = False


def bounce_address(ctx: SendContext, digest_delivery_id: int) -> str:
    """VERP for a digest: `…-bounces+d<id>@domain` (a circular's is `+<id>`)."""
    local = ctx.mail_from.rpartition("@")[0]
    return f"{local}-bounces+d{digest_delivery_id}@{ctx.domain}"


def claim(session: Session, run_id: int, ctx: SendContext, now: datetime, limit: int) -> list[Any]:
    """Take up to `limit` pending rows no one holds, for the lease; committed at once."""
    free = and_(
        DigestDelivery.run_id == run_id,
        DigestDelivery.status == DigestDeliveryStatus.PENDING,
        or_(DigestDelivery.claimed_until.is_(None), DigestDelivery.claimed_until < now),
    )
    ids = select(DigestDelivery.id).where(free).order_by(DigestDelivery.id).limit(limit)
    rows = list(
        session.execute(
            update(DigestDelivery)
            .where(DigestDelivery.id.in_(ids.scalar_subquery()), free)
            .values(claimed_until=now + ctx.claim_lease)
            .returning(
                DigestDelivery.id,
                DigestDelivery.group_id,
                DigestDelivery.subscriber_id,
                DigestDelivery.email,
                DigestDelivery.name,
                DigestDelivery.attempts,
            )
        )
    )
    session.commit()
    rows.sort(key=lambda row: (row.group_id, row.id))
    return rows


def _prepared(session: Session, group_id: int, run: DigestRun, ctx: SendContext) -> PreparedMessage:
    group = session.get(DigestGroup, group_id)
    assert group is not None
    mailing_list = run.mailing_list
    return prepare_message(
        # A run started before runs kept the name (migration 0017) takes today's.
        from_name=run.from_name or ctx.current_branding(session).name,
        from_address=ctx.mail_from,
        subject=group.subject,
        html_template=group.html_template,
        text_template=group.text_template,
        attachments=[],  # links only: a digest never carries the files
        list_names={mailing_list.id: (mailing_list.slug, mailing_list.name)},
        domain=ctx.domain,
    )


def message_for(
    ctx: SendContext,
    prepared: PreparedMessage,
    run: DigestRun,
    row: Any,
    language: str,
) -> bytes:
    """One reader's digest: their name and signed links filled in, List-* headers of the list.

    One-click unsubscribe (RFC 8058) leaves the list the digest is for, as a
    circular's does; switching to every circular or another frequency is in
    the preference centre the footer links to.
    """
    unsubscribe_url = ctx.links.unsubscribe(row.subscriber_id, run.list_id)
    fields = RecipientFields(
        name=row.name,
        email=row.email,
        list_name=run.mailing_list.name,
        unsubscribe_url=unsubscribe_url,
        preferences_url=ctx.links.preferences(row.subscriber_id),
        language=language,
    )
    envelope = Envelope(
        to_name=row.name,
        to_address=row.email,
        list_id=run.list_id,
        unsubscribe_url=unsubscribe_url,
        unsubscribe_mailto=None,
        message_id=new_message_id(ctx.domain, "digest", run.id, row.id),
        fields=fields.values(),
    )
    return build_message(prepared, envelope)


def deliver(
    session: Session,
    run_id: int,
    ctx: SendContext,
    *,
    now: datetime | None = None,
    retry_delay: timedelta = RETRY_DELAY,
) -> DeliverOutcome:
    """Send what is pending and unclaimed, batch after batch, then finish the run if done.

    Each message goes through the send engine's own step (`sending.attempt`):
    its outcome recorded as the relay answers (pipelined on PostgreSQL) and
    committed before the relay may take the next one.
    """
    outcome = DeliverOutcome()
    run = session.get(DigestRun, run_id)
    if run is None or run.status != DigestRunStatus.RUNNING:
        session.rollback()
        outcome.finished = run is not None and run.status == DigestRunStatus.DONE
        return outcome
    prepared: dict[int, tuple[PreparedMessage, str]] = {}
    connection = None
    marks = marks_for(session, DigestDelivery)
    try:
        while True:
            marks.confirm()  # the last batch's outcomes are in before the next claim
            clock = now or utcnow()
            rows = claim(session, run_id, ctx, clock, ctx.batch_size)
            if not rows:
                break
            if connection is None:
                try:
                    connection = ctx.messenger.connect()
                except ConnectionFailed as exc:
                    _hold(session, rows, exc, clock, retry_delay)
                    outcome.deferred += len(rows)
                    outcome.error = exc.reply
                    return outcome
            renew_at = time.monotonic() + ctx.claim_lease.total_seconds() / 3
            for index, row in enumerate(rows):
                if time.monotonic() >= renew_at:
                    renew(session, rows[index:], ctx, now)
                    renew_at = time.monotonic() + ctx.claim_lease.total_seconds() / 3
                if row.subscriber_id is None:
                    marks.record(
                        row.id, status=FAILED, last_error=NO_SUBSCRIBER, claimed_until=None
                    )
                    outcome.failed += 1
                    continue
                if row.group_id not in prepared:
                    group = session.get(DigestGroup, row.group_id)
                    assert group is not None
                    prepared[row.group_id] = (
                        _prepared(session, row.group_id, run, ctx),
                        group.language,
                    )
                message, language = prepared[row.group_id]
                try:
                    result, _refusal = attempt(
                        connection,
                        marks,
                        row_id=row.id,
                        attempts=row.attempts,
                        max_attempts=ctx.max_attempts,
                        return_path=bounce_address(ctx, row.id),
                        recipient=row.email,
                        message=message_for(ctx, message, run, row, language),
                        # Held until its next try, so this loop does not take it again now.
                        retry_at=(now or utcnow()) + retry_delay,
                    )
                except ConnectionFailed as exc:
                    marks.confirm()
                    _hold(session, rows[index:], exc, now or utcnow(), retry_delay)
                    outcome.deferred += len(rows) - index
                    outcome.error = exc.reply
                    return outcome
                if result is Outcome.SENT:
                    outcome.sent += 1
                elif result is Outcome.FAILED:
                    outcome.failed += 1
                else:
                    outcome.deferred += 1
    finally:
        try:
            marks.close()
        finally:
            if connection is not None:
                connection.close()
    outcome.finished = finish_if_complete(session, run_id, now=now)
    return outcome


def renew(session: Session, rows: Sequence[Any], ctx: SendContext, now: datetime | None) -> None:
    """Hold the batch's rows not reached yet for another lease from now."""
    session.execute(
        update(DigestDelivery)
        .where(
            DigestDelivery.id.in_([row.id for row in rows]),
            DigestDelivery.status == DigestDeliveryStatus.PENDING,
        )
        .values(claimed_until=(now or utcnow()) + ctx.claim_lease)
    )
    session.commit()


def _hold(
    session: Session, rows: Sequence[Any], exc: ConnectionFailed, now: datetime, delay: timedelta
) -> None:
    """The relay is away (or our own limits hold it): keep the rows until the next try."""
    wait = timedelta(seconds=exc.retry_after) if isinstance(exc, RelayLimited) else delay
    session.execute(
        update(DigestDelivery)
        .where(DigestDelivery.id.in_([row.id for row in rows]))
        .values(claimed_until=now + wait, last_error=exc.reply)
    )
    session.commit()


def finish_if_complete(session: Session, run_id: int, now: datetime | None = None) -> bool:
    """Mark the run done once nothing is pending; true if it is done."""

    def counted(status: DigestDeliveryStatus) -> Any:
        return (
            select(func.count())
            .where(DigestDelivery.run_id == run_id, DigestDelivery.status == status)
            .scalar_subquery()
        )

    pending = exists().where(
        DigestDelivery.run_id == run_id, DigestDelivery.status == DigestDeliveryStatus.PENDING
    )
    session.execute(
        update(DigestRun)
        .where(DigestRun.id == run_id, DigestRun.status == DigestRunStatus.RUNNING, ~pending)
        .values(
            status=DigestRunStatus.DONE,
            finished_at=now or utcnow(),
            sent_count=counted(DigestDeliveryStatus.SENT),
            failed_count=counted(DigestDeliveryStatus.FAILED),
        )
    )
    session.commit()
    status = session.scalar(select(DigestRun.status).where(DigestRun.id == run_id))
    session.commit()
    return status == DigestRunStatus.DONE


def run(
    session: Session, run_id: int, ctx: SendContext, *, now: datetime | None = None
) -> DeliverOutcome:
    """Snapshot the run if still pending, then deliver what is pending: the task's body."""
    snapshot(session, run_id, ctx, now=now)
    return deliver(session, run_id, ctx, now=now)


def run_due(
    session: Session,
    ctx: SendContext,
    now: datetime | None = None,
    *,
    list_slug: str | None = None,
) -> list[tuple[int, DeliverOutcome]]:
    """Create and run, in this process, every digest due now (the CLI's `circulars digests`)."""
    now = now or utcnow()
    create_due_runs(session, now, ctx.timezone, list_slug=list_slug)
    results = []
    for period in due_periods(session, now, ctx.timezone, list_slug=list_slug):
        found = existing_run(session, period)
        session.commit()
        if found is not None and found.status != DigestRunStatus.DONE:
            results.append((found.id, run(session, found.id, ctx, now=now)))
    return results


# --- dry run and preview -----------------------------------------------------------------


@dataclass(frozen=True)
class DueReport:
    period: DuePeriod
    run_id: int | None
    run_status: str | None
    readers: int  # readers in this frequency now
    recipients: int  # of those, with something new (who would get a digest)
    circular_ids: tuple[int, ...]  # every circular any of them would get
    groups: int


def dry_run(
    session: Session,
    now: datetime,
    timezone: str,
    *,
    list_slug: str | None = None,
) -> list[DueReport]:
    """What `circulars digests` would do at `now`, sending and writing nothing."""
    reports = []
    for period in due_periods(session, now, timezone, list_slug=list_slug):
        found = existing_run(session, period)
        if found is not None and found.status != DigestRunStatus.PENDING:
            pending = int(
                session.scalar(
                    select(func.count()).where(
                        DigestDelivery.run_id == found.id,
                        DigestDelivery.status == DigestDeliveryStatus.PENDING,
                    )
                )
                or 0
            )
            ids = sorted(
                {
                    cid
                    for group_ids in session.scalars(
                        select(DigestGroup.circular_ids).where(DigestGroup.run_id == found.id)
                    )
                    for cid in group_ids
                }
            )
            reports.append(
                DueReport(
                    period,
                    found.id,
                    found.status,
                    found.total or 0,
                    pending,
                    tuple(ids),
                    found.groups_count or 0,
                )
            )
            continue
        groups = plan_groups(
            reader_digests(session, period.list_id, period.frequency, period.period_end, now)
        )
        ids = sorted({cid for key in groups for cid in key[0]})
        reports.append(
            DueReport(
                period=period,
                run_id=found.id if found is not None else None,
                run_status=found.status if found is not None else None,
                readers=count_readers(session, period.list_id, period.frequency, now),
                recipients=sum(len(group.readers) for group in groups.values()),
                circular_ids=tuple(ids),
                groups=len(groups),
            )
        )
    session.rollback()
    return reports
