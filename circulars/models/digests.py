"""Partner digests: one run per list, frequency and period, and what each reader got.

A run row is unique per (list, frequency, period_end), so however often beat
fires, a period has one run. Its recipients are snapshotted once into
`digest_deliveries`, each pointing at the rendered group it shares with every
reader of the same circulars in the same language.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, BigId, JsonData, utcnow
from .lists import MailingList


class DigestFrequency(StrEnum):
    WEEKLY = "weekly"
    MONTHLY = "monthly"


class DigestRunStatus(StrEnum):
    PENDING = "pending"  # created for its period; recipients not snapshotted yet
    RUNNING = "running"  # snapshotted; deliveries pending
    DONE = "done"  # nothing pending (also: nobody had anything new, total 0)


class DigestRun(Base):
    __tablename__ = "digest_runs"
    __table_args__ = (
        UniqueConstraint("list_id", "frequency", "period_end"),
        Index("ix_digest_runs_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id", ondelete="CASCADE"), index=True)
    frequency: Mapped[str] = mapped_column(String(16))
    # The previous scheduled time (shown only) and this one: circulars sent up to
    # `period_end` are in it; what each reader gets starts at their last digest.
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default=DigestRunStatus.PENDING)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    total: Mapped[int | None]
    groups_count: Mapped[int | None]
    sent_count: Mapped[int | None]
    failed_count: Mapped[int | None]
    # The organisation's name in From, read with the branding the run was rendered with.
    from_name: Mapped[str | None] = mapped_column(Text)

    mailing_list: Mapped[MailingList] = relationship()


class DigestGroup(Base):
    """A digest rendered once for every reader with the same circulars and language."""

    __tablename__ = "digest_groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(
        ForeignKey("digest_runs.id", ondelete="CASCADE"), index=True
    )
    language: Mapped[str] = mapped_column(String(16))
    circular_ids: Mapped[list[int]] = mapped_column(JsonData)
    subject: Mapped[str] = mapped_column(Text)
    html_template: Mapped[str] = mapped_column(Text)
    text_template: Mapped[str] = mapped_column(Text)


class DigestDeliveryStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class DigestDelivery(Base):
    __tablename__ = "digest_deliveries"
    __table_args__ = (
        UniqueConstraint("run_id", "subscriber_id"),
        Index("ix_digest_deliveries_run_status", "run_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("digest_runs.id", ondelete="CASCADE"))
    group_id: Mapped[int] = mapped_column(
        ForeignKey("digest_groups.id", ondelete="CASCADE"), index=True
    )
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), index=True
    )
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200), default="")
    # What this reader's digest held, kept with the record (the group may be re-rendered).
    circular_ids: Mapped[list[int]] = mapped_column(JsonData)
    status: Mapped[str] = mapped_column(String(16), default=DigestDeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]
    # Held by a worker until then (a lease), or waiting until then after a temporary failure.
    claimed_until: Mapped[datetime | None]
