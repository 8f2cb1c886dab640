"""A send of a circular to lists, and one delivery row per recipient."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, ForeignKey, Index, String, Table, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, BigId, utcnow
from .circulars import Circular
from .lists import MailingList

send_lists = Table(
    "send_lists",
    Base.metadata,
    Column("send_id", ForeignKey("sends.id", ondelete="CASCADE"), primary_key=True),
    Column("list_id", ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True),
)


class SendStatus(StrEnum):
    SCHEDULED = "scheduled"  # waits for `scheduled_at`; no number taken, nothing rendered yet
    QUEUED = "queued"  # created; the start task has not snapshotted recipients yet
    RUNNING = "running"
    PAUSED = "paused"  # by a person or after consecutive relay errors; says why in `pause_reason`
    DONE = "done"
    FAILED = "failed"  # could not start (e.g. rendering failed); says why in `error`
    CANCELLED = "cancelled"  # stopped for good; its unsent deliveries are marked cancelled


#: A send in one of these states will not change any more.
FINAL_SEND_STATUSES = frozenset({SendStatus.DONE, SendStatus.FAILED, SendStatus.CANCELLED})


class Send(Base):
    __tablename__ = "sends"
    __table_args__ = (Index("ix_sends_status_scheduled_at", "status", "scheduled_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    circular_id: Mapped[int] = mapped_column(
        ForeignKey("circulars.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default=SendStatus.QUEUED)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Known once the recipients are snapshotted.
    total: Mapped[int | None]
    # Final figures, written when the send ends; while it runs they are counted live.
    sent_count: Mapped[int | None]
    failed_count: Mapped[int | None]
    # Deliveries never attempted because the send was cancelled.
    cancelled_count: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    # Control (see circulars/sending/control.py): a start time, pauses and cancellation.
    scheduled_at: Mapped[datetime | None]
    paused_at: Mapped[datetime | None]
    pause_reason: Mapped[str | None] = mapped_column(Text)
    paused_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    cancelled_at: Mapped[datetime | None]
    cancelled_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # Temporary relay errors in a row across all batches; a success resets it.
    relay_errors: Mapped[int] = mapped_column(default=0, server_default="0")
    # Rendered once per send by the start task: the subject header and the two
    # bodies, with placeholders that each delivery fills in.
    subject: Mapped[str | None] = mapped_column(Text)
    html_template: Mapped[str | None] = mapped_column(Text)
    text_template: Mapped[str | None] = mapped_column(Text)
    # The organisation's name in From, read with the branding the send was rendered with: a
    # save on the branding page in the middle of a send does not change later batches.
    from_name: Mapped[str | None] = mapped_column(Text)

    circular: Mapped[Circular] = relationship()
    lists: Mapped[list[MailingList]] = relationship(
        secondary=send_lists, order_by="MailingList.name"
    )
    # The other language versions, rendered by the same start task (the default is above).
    versions: Mapped[list[SendVersion]] = relationship(
        order_by="SendVersion.language", cascade="all, delete-orphan", passive_deletes=True
    )


class SendVersion(Base):
    """One more language version of a send, rendered once like the default one."""

    __tablename__ = "send_versions"

    send_id: Mapped[int] = mapped_column(
        ForeignKey("sends.id", ondelete="CASCADE"), primary_key=True
    )
    language: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject: Mapped[str] = mapped_column(Text)
    html_template: Mapped[str] = mapped_column(Text)
    text_template: Mapped[str] = mapped_column(Text)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"  # never attempted: the send was cancelled first


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("send_id", "subscriber_id"),
        # sent_at too: a send's report reads its accepted deliveries by time (migration 0014).
        Index("ix_deliveries_send_status_sent", "send_id", "status", "sent_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    send_id: Mapped[int] = mapped_column(ForeignKey("sends.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), index=True
    )
    # The list through which the subscriber gets it: named in List-Id and unsubscribed from.
    list_id: Mapped[int | None] = mapped_column(ForeignKey("lists.id", ondelete="SET NULL"))
    # Copied at snapshot time, so a batch reads one table and the record stays true.
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]
    # A batch claims its rows for a while; a batch on a killed worker lets go when it expires.
    claimed_until: Mapped[datetime | None]
    # The language version this recipient was given (chosen at snapshot time).
    language: Mapped[str | None] = mapped_column(String(16))
