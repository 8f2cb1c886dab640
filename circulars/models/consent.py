"""Proof of consent, suppression of addresses that must not be mailed, and imports.

Consent events are an append-only record: when, from where, through which form
and with which wording someone agreed (or withdrew). They outlive the
subscriber row, so a deleted person's history keeps only what the law asks.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigId, utcnow


class ConsentAction(StrEnum):
    REQUESTED = "requested"  # a subscribe form was submitted; confirmation mail sent
    CONFIRMED = "confirmed"  # the confirmation link was used
    ADDED_BY_STAFF = "added_by_staff"
    IMPORTED = "imported"
    JOINED = "joined"  # joined a list from the preference centre
    LEFT = "left"  # left one list
    UNSUBSCRIBED_ALL = "unsubscribed_all"
    PREFERENCES = "preferences"  # name, language, delivery mode or pause changed
    DELETED = "deleted"


class ConsentEvent(Base):
    __tablename__ = "consent_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), index=True
    )
    list_id: Mapped[int | None] = mapped_column(ForeignKey("lists.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    # Which form: "subscribe page", "embed: https://partner.example/join", "import #12", ...
    source: Mapped[str] = mapped_column(String(300), default="")
    # The wording shown to the person at that moment, kept verbatim.
    consent_text: Mapped[str | None] = mapped_column(Text)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    detail: Mapped[str | None] = mapped_column(Text)


class SuppressionKind(StrEnum):
    ADDRESS = "address"
    DOMAIN = "domain"


class SuppressionReason(StrEnum):
    UNSUBSCRIBED = "unsubscribed"  # left everything
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"  # too many soft bounces in the window
    COMPLAINT = "complaint"
    DELETED = "deleted"  # the person deleted their data; only the hash is kept
    BLOCKED = "blocked"  # by the secretariat


class Suppression(Base):
    """An address or domain that is never mailed.

    `value_hash` is SHA-256 of the normalised address (or of the domain), and is
    what lookups use; `value` is cleared when the person deleted their data.
    """

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("kind", "value_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str | None] = mapped_column(String(320), index=True)
    value_hash: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SuppressionOverride(Base):
    """Who put a suppressed address on a list anyway, and why: an audit record."""

    __tablename__ = "suppression_overrides"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    list_id: Mapped[int | None] = mapped_column(ForeignKey("lists.id", ondelete="SET NULL"))
    # What was lifted: the suppression's kind, value and reason, copied (the row may go).
    suppression_kind: Mapped[str] = mapped_column(String(16))
    suppression_reason: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ImportStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # refused (not CSV, not UTF-8, no header) or crashed; says why


class ImportJob(Base):
    """A CSV import run in the background, with its progress and its report."""

    __tablename__ = "imports"
    __table_args__ = (Index("ix_imports_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int | None] = mapped_column(ForeignKey("lists.id", ondelete="SET NULL"))
    filename: Mapped[str] = mapped_column(String(255))
    # The uploaded file, stored under instance/imports/ until the import ends.
    stored_path: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16), default=ImportStatus.QUEUED)
    total_bytes: Mapped[int] = mapped_column(default=0)
    processed_bytes: Mapped[int] = mapped_column(default=0)
    rows: Mapped[int] = mapped_column(default=0)
    imported: Mapped[int] = mapped_column(default=0)  # new subscribers
    subscribed: Mapped[int] = mapped_column(default=0)  # added to the list (new or existing)
    rejected: Mapped[int] = mapped_column(default=0)
    suppressed: Mapped[int] = mapped_column(default=0)  # left out: on the suppression list
    # CSV of rejected lines (line, email, reason), under instance/imports/.
    report_path: Mapped[str | None] = mapped_column(String(500))
    error: Mapped[str | None] = mapped_column(Text)
    # Set when staff import suppressed addresses on purpose; recorded per address.
    override_reason: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
