"""What a send did, and what each subscriber was sent: figures for the reports.

Everything is counted by the database (GROUP BY), so a report on a send of
100,000 deliveries reads a few dozen rows into Python, never one per
delivery; the CSV streams its rows in batches. The same SQL runs on SQLite and
PostgreSQL: the only dialect-specific piece is turning a timestamp into whole
seconds since the epoch, for the timeline buckets.

Reasons are grouped with the recipient's own address blanked out
(`replace(last_error, email, '<address>')`, brackets included), because many servers echo it
("550 5.1.1 <ana@example.org>: User unknown") and without that every failed
address would be a reason of its own.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    String,
    case,
    cast,
    extract,
    func,
    literal,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from ..models import (
    Bounce,
    BounceKind,
    Circular,
    Delivery,
    DeliveryStatus,
    MailingList,
    Send,
)
from ..paging import PageNumbers
from ..subscribers.export import neutralise

ADDRESS = "<address>"
# A chart wider than this many bars is hard to read; the bucket grows instead.
MAX_BUCKETS = 60
# Bucket sizes in seconds, smallest first: seconds for short sends, minutes, then hours.
BUCKET_SIZES = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
TOP_REASONS = 10
CSV_BATCH = 1000
CSV_COLUMNS = (
    "email",
    "name",
    "list",
    "status",
    "attempts",
    "sent_at",
    "last_error",
    "bounce_kind",
    "bounce_code",
    "bounce_diagnostic",
    "language",  # the version of the circular this recipient was sent
)
# When a delivery came back more than once, the CSV shows the most telling bounce.
_KIND_RANK = {BounceKind.COMPLAINT: 0, BounceKind.HARD: 1, BounceKind.SOFT: 2}


@dataclass(frozen=True)
class Reason:
    """One grouped reason and how many deliveries (or bounces) gave it."""

    text: str
    count: int
    kind: str = ""  # for bounces: hard, soft, complaint, unknown
    code: str = ""  # for bounces: the DSN status code, such as 5.1.1


@dataclass(frozen=True)
class BounceTally:
    """Bounces of one kind: the recipients concerned and the messages that came back."""

    recipients: int
    messages: int


@dataclass(frozen=True)
class Bucket:
    start: datetime
    count: int


@dataclass(frozen=True)
class Timeline:
    """Messages accepted by the relay per bucket of `seconds`, gaps included as zeros."""

    seconds: int
    buckets: list[Bucket] = field(default_factory=list)

    @property
    def peak(self) -> int:
        return max((bucket.count for bucket in self.buckets), default=0)

    @property
    def peak_rate(self) -> float:
        """Messages per second in the busiest bucket."""
        return self.peak / self.seconds if self.seconds else 0.0

    @property
    def unit(self) -> str:
        if self.seconds < 60:
            return f"{self.seconds} s"
        if self.seconds < 3600:
            return f"{self.seconds // 60} min"
        return f"{self.seconds // 3600} h"


@dataclass(frozen=True)
class SendReport:
    send_id: int
    by_status: dict[str, int]
    bounces: dict[str, BounceTally]
    failure_reasons: list[Reason]
    # Failed deliveries whose reason is not among the top ones.
    other_failures: int
    bounce_reasons: list[Reason]
    other_bounces: int
    timeline: Timeline
    started_at: datetime | None
    finished_at: datetime | None
    first_sent_at: datetime | None
    last_sent_at: datetime | None

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def sent(self) -> int:
        return self.by_status.get(DeliveryStatus.SENT, 0)

    @property
    def failed(self) -> int:
        return self.by_status.get(DeliveryStatus.FAILED, 0)

    @property
    def duration(self) -> timedelta | None:
        """From the start (or first accepted message) to the end (or last accepted one)."""
        start = _earliest(self.started_at, self.first_sent_at)
        end = self.finished_at or self.last_sent_at
        if start is None or end is None or end < start:
            return None
        return end - start

    @property
    def average_rate(self) -> float | None:
        """Accepted messages per second over the duration (None before anything is sent)."""
        duration = self.duration
        if duration is None or not self.sent:
            return None
        # A send that fits in one second did at least `sent` per second.
        return self.sent / max(duration.total_seconds(), 1.0)

    def bounce_rate(self, kind: str) -> float:
        """Recipients with a bounce of this kind, as a share of the messages accepted."""
        tally = self.bounces.get(kind)
        return tally.recipients / self.sent if tally and self.sent else 0.0


def _earliest(*values: datetime | None) -> datetime | None:
    present = [value for value in values if value is not None]
    return min(present) if present else None


def _epoch_seconds(session: Session, column: Any) -> ColumnElement[int]:
    """Whole seconds since 1970 (truncated), as an integer, on either database."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.floor(extract("epoch", column)), BigInteger)
    # SQLAlchemy writes this as CAST(STRFTIME('%s', column) AS INTEGER) on SQLite.
    return cast(extract("epoch", column), Integer)


def counts_by_status(session: Session, send_id: int) -> dict[str, int]:
    """Deliveries per status; the three basic ones always present, any other as found."""
    counts = {status.value: 0 for status in DeliveryStatus}
    for status, count in session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.send_id == send_id)
        .group_by(Delivery.status)
    ):
        counts[status] = int(count)
    return counts


def bounce_tallies(session: Session, send_id: int) -> dict[str, BounceTally]:
    """Per bounce kind, the deliveries of this send that came back and the messages."""
    rows = session.execute(
        select(Bounce.kind, func.count(func.distinct(Bounce.delivery_id)), func.count())
        .join(Delivery, Delivery.id == Bounce.delivery_id)
        .where(Delivery.send_id == send_id)
        .group_by(Bounce.kind)
    )
    tallies = {kind.value: BounceTally(0, 0) for kind in BounceKind}
    for kind, recipients, messages in rows:
        tallies[kind] = BounceTally(int(recipients), int(messages))
    return tallies


def _blank(text: Any, *addresses: Any) -> Any:
    """`text` with each address (bracketed or bare) replaced by ADDRESS, in SQL."""
    for address in addresses:
        bracketed = literal("<", String) + address + literal(">", String)
        text = func.replace(func.replace(text, bracketed, ADDRESS), address, ADDRESS)
    return text


def failure_reasons(session: Session, send_id: int, limit: int = TOP_REASONS) -> list[Reason]:
    """The most frequent server replies (or other causes) of failed deliveries."""
    text = func.coalesce(_blank(Delivery.last_error, Delivery.email), "")
    rows = session.execute(
        select(text.label("text"), func.count().label("n"))
        .where(Delivery.send_id == send_id, Delivery.status == DeliveryStatus.FAILED)
        .group_by(text)
        .order_by(func.count().desc(), text)
        .limit(limit)
    )
    return [Reason(value or "(no reason recorded)", int(count)) for value, count in rows]


def bounce_reasons(session: Session, send_id: int, limit: int = TOP_REASONS) -> list[Reason]:
    """What the bounces of this send said, grouped by kind, status code and diagnostic."""
    diagnostic = _blank(Bounce.diagnostic, Delivery.email, Bounce.email)
    rows = session.execute(
        select(Bounce.kind, Bounce.status_code, diagnostic.label("text"), func.count())
        .join(Delivery, Delivery.id == Bounce.delivery_id)
        .where(Delivery.send_id == send_id)
        .group_by(Bounce.kind, Bounce.status_code, diagnostic)
        .order_by(func.count().desc(), Bounce.kind, Bounce.status_code, diagnostic)
        .limit(limit)
    )
    return [
        Reason(text or "", int(count), kind=kind, code=code or "")
        for kind, code, text, count in rows
    ]


def bucket_size(span_seconds: float) -> int:
    """The smallest bucket that draws `span_seconds` in at most MAX_BUCKETS bars."""
    for size in BUCKET_SIZES:
        if math.ceil(max(span_seconds, 1) / size) <= MAX_BUCKETS:
            return size
    return BUCKET_SIZES[-1] * math.ceil(span_seconds / (BUCKET_SIZES[-1] * MAX_BUCKETS))


def timeline(
    session: Session,
    send_id: int,
    started_at: datetime | None,
    *,
    bounds: tuple[datetime | None, datetime | None] | None = None,
) -> Timeline:
    """Accepted messages per time bucket, counted by the database.

    Buckets start at the send's start (or first accepted message), rounded down
    to a multiple of the bucket size, so minute buckets fall on whole minutes.
    """
    if bounds is None:
        bounds = _sent_bounds(session, send_id)
    first, last = bounds
    if first is None or last is None:
        return Timeline(seconds=1)
    origin = _earliest(started_at, first) or first
    origin_epoch = math.floor(origin.timestamp())
    size = bucket_size(last.timestamp() - origin_epoch + 1)
    origin_epoch -= origin_epoch % size
    # `//` is integer division on both databases (`/` would be true division in SQLAlchemy 2).
    index = (_epoch_seconds(session, Delivery.sent_at) - origin_epoch) // literal(size, Integer)
    rows = session.execute(
        select(index.label("bucket"), func.count())
        .where(
            Delivery.send_id == send_id,
            Delivery.status == DeliveryStatus.SENT,
            Delivery.sent_at.is_not(None),
        )
        .group_by(index)
    )
    counts = {int(bucket): int(count) for bucket, count in rows}
    last_index = max(counts, default=0)
    buckets = [
        Bucket(
            start=datetime.fromtimestamp(origin_epoch + number * size, UTC),
            count=counts.get(number, 0),
        )
        for number in range(last_index + 1)
    ]
    return Timeline(seconds=size, buckets=buckets)


def _sent_bounds(session: Session, send_id: int) -> tuple[datetime | None, datetime | None]:
    first, last = session.execute(
        select(func.min(Delivery.sent_at), func.max(Delivery.sent_at)).where(
            Delivery.send_id == send_id, Delivery.status == DeliveryStatus.SENT
        )
    ).one()
    return first, last


def send_report(session: Session, send: Send) -> SendReport:
    """Everything the report page shows for one send (a handful of aggregate queries)."""
    by_status = counts_by_status(session, send.id)
    bounces = bounce_tallies(session, send.id)
    failures = failure_reasons(session, send.id)
    bounced = bounce_reasons(session, send.id)
    first, last = _sent_bounds(session, send.id)
    total_bounces = sum(tally.messages for tally in bounces.values())
    return SendReport(
        send_id=send.id,
        by_status=by_status,
        bounces=bounces,
        failure_reasons=failures,
        other_failures=by_status.get(DeliveryStatus.FAILED, 0) - sum(r.count for r in failures),
        bounce_reasons=bounced,
        other_bounces=total_bounces - sum(r.count for r in bounced),
        timeline=timeline(session, send.id, send.started_at, bounds=(first, last)),
        started_at=send.started_at,
        finished_at=send.finished_at,
        first_sent_at=first,
        last_sent_at=last,
    )


# --- the CSV of a send's deliveries ----------------------------------------------------


def _iso(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iter_deliveries_csv(session: Session, send_id: int) -> Iterator[str]:
    """Yield the deliveries of a send as CSV text, a batch of rows at a time.

    One row per delivery, in delivery order, with its most telling bounce
    (complaint, then hard, soft, other; the latest of that kind). Every cell is
    neutralised against spreadsheet formulas (subscribers.export.neutralise).
    """
    rank = case(_KIND_RANK, value=Bounce.kind, else_=3)
    chosen = (
        select(Bounce.id)
        .where(Bounce.delivery_id == Delivery.id)
        .order_by(rank, Bounce.received_at.desc(), Bounce.id.desc())
        .limit(1)
        .correlate(Delivery)
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            Delivery.email,
            Delivery.name,
            MailingList.name.label("list_name"),
            Delivery.status,
            Delivery.attempts,
            Delivery.sent_at,
            Delivery.last_error,
            Bounce.kind,
            Bounce.status_code,
            Bounce.diagnostic,
            Delivery.language,
        )
        .outerjoin(MailingList, MailingList.id == Delivery.list_id)
        .outerjoin(Bounce, Bounce.id == chosen)
        .where(Delivery.send_id == send_id)
        .order_by(Delivery.id)
        .execution_options(yield_per=CSV_BATCH)
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue()
    for batch in rows.partitions():
        buffer.seek(0)
        buffer.truncate()
        for row in batch:
            writer.writerow(
                [
                    neutralise(str(value))
                    for value in (
                        row.email,
                        row.name or "",
                        row.list_name or "",
                        row.status,
                        row.attempts,
                        _iso(row.sent_at),
                        row.last_error or "",
                        row.kind or "",
                        row.status_code or "",
                        row.diagnostic or "",
                        row.language or "",
                    )
                ]
            )
        yield buffer.getvalue()


# --- one subscriber's history ----------------------------------------------------------


@dataclass(frozen=True)
class HistoryEntry:
    """A delivery to the subscriber, or a bounce or complaint received about them."""

    event: str  # "delivery" or "bounce"
    id: int
    at: datetime | None
    send_id: int | None
    circular_number: int | None
    circular_title: str | None
    status: str  # a delivery's status, or a bounce's kind
    detail: str  # the last error of a delivery, the diagnostic of a bounce
    code: str  # a bounce's DSN status code

    @property
    def circular(self) -> str:
        if self.circular_title is None:
            return ""
        if self.circular_number is None:
            return self.circular_title
        return f"Circular No. {self.circular_number}: {self.circular_title}"


@dataclass(frozen=True)
class HistoryPage(PageNumbers):
    entries: list[HistoryEntry]
    page: int
    per_page: int
    total: int


def subscriber_history(
    session: Session, subscriber_id: int, email: str, *, page: int = 1, per_page: int = 25
) -> HistoryPage:
    """Deliveries to a subscriber and the bounces about them, newest first, one page.

    Bounces count as theirs when they name one of their deliveries, or when
    they name no delivery but their address (those were stored, not acted on).
    """
    page = max(1, page)
    sent_when = func.coalesce(Delivery.sent_at, Send.started_at, Send.created_at)
    deliveries = (
        select(
            literal("delivery", String).label("event"),
            Delivery.id.label("id"),
            sent_when.label("at"),
            Send.id.label("send_id"),
            Circular.number.label("circular_number"),
            Circular.title.label("circular_title"),
            Delivery.status.label("status"),
            func.coalesce(Delivery.last_error, "").label("detail"),
            literal("", String).label("code"),
        )
        .join(Send, Send.id == Delivery.send_id)
        .join(Circular, Circular.id == Send.circular_id)
        .where(Delivery.subscriber_id == subscriber_id)
    )
    bounce_delivery = Delivery.__table__.alias("bounce_delivery")
    bounce_send = Send.__table__.alias("bounce_send")
    bounce_circular = Circular.__table__.alias("bounce_circular")
    mine = Bounce.subscriber_id == subscriber_id
    if email:
        mine = mine | ((Bounce.delivery_id.is_(None)) & (Bounce.email == email))
    bounces = (
        select(
            literal("bounce", String).label("event"),
            Bounce.id.label("id"),
            Bounce.received_at.label("at"),
            bounce_send.c.id.label("send_id"),
            bounce_circular.c.number.label("circular_number"),
            bounce_circular.c.title.label("circular_title"),
            Bounce.kind.label("status"),
            Bounce.diagnostic.label("detail"),
            Bounce.status_code.label("code"),
        )
        .outerjoin(bounce_delivery, bounce_delivery.c.id == Bounce.delivery_id)
        .outerjoin(bounce_send, bounce_send.c.id == bounce_delivery.c.send_id)
        .outerjoin(bounce_circular, bounce_circular.c.id == bounce_send.c.circular_id)
        .where(mine)
    )
    combined = union_all(deliveries, bounces).subquery()
    total = session.scalar(select(func.count()).select_from(combined)) or 0
    rows = session.execute(
        select(combined)
        .order_by(combined.c.at.desc(), combined.c.event, combined.c.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    )
    entries = [
        HistoryEntry(
            event=row.event,
            id=int(row.id),
            at=_aware(row.at),
            send_id=row.send_id,
            circular_number=row.circular_number,
            circular_title=row.circular_title,
            status=row.status,
            detail=row.detail or "",
            code=row.code or "",
        )
        for row in rows
    ]
    return HistoryPage(entries, page, per_page, int(total))


def _aware(value: Any) -> datetime | None:
    """A UNION column may come back untyped on SQLite (a string): make it an aware datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value
