"""Sign-on statements: the organisations that endorse a circular opened for endorsement.

One row per organisation and country on a circular: a second submission for the
same organisation (same normalised name, same country) is merged into its row,
counted in `submissions`, and never makes a second entry in the "Endorsed by" list.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class EndorsementStatus(StrEnum):
    PENDING_CONFIRMATION = "pending_confirmation"  # the email link has not been used yet
    CONFIRMED = "confirmed"  # the address is confirmed; waiting for the secretariat
    APPROVED = "approved"  # shown in the "Endorsed by" list
    REJECTED = "rejected"  # never shown


class Endorsement(Base):
    __tablename__ = "endorsements"
    __table_args__ = (
        UniqueConstraint("circular_id", "org_key", "country", name="uq_endorsements_org"),
        Index("ix_endorsements_circular_status", "circular_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    circular_id: Mapped[int] = mapped_column(ForeignKey("circulars.id", ondelete="CASCADE"))
    # As typed (the last confirmed spelling); `org_key` is what duplicates are found by.
    organisation: Mapped[str] = mapped_column(String(200))
    org_key: Mapped[str] = mapped_column(String(200))
    country: Mapped[str] = mapped_column(String(2))  # ISO 3166-1 alpha-2
    contact_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    comment: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(24), default=EndorsementStatus.PENDING_CONFIRMATION)
    confirmed_at: Mapped[datetime | None]
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decided_at: Mapped[datetime | None]
    # How many times the form was sent for this organisation (merged duplicates included).
    submissions: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(45))  # of the latest submission
    # When the submission whose contact details the row holds was made: a confirmation
    # link older than that (a superseded submission) never brings older details back.
    details_at: Mapped[datetime | None]
