"""Mail that came back: bounces (DSNs and their lookalikes) and spam complaints.

Every message the intake receives is kept, even garbage, with the path of its
raw bytes, so staff can read what a classification was based on.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigId, utcnow


class BounceKind(StrEnum):
    HARD = "hard"  # permanent failure: the address does not work
    SOFT = "soft"  # temporary failure: mailbox full, greylisted, ...
    COMPLAINT = "complaint"  # the recipient marked it as spam (ARF)
    UNKNOWN = "unknown"  # auto-replies, garbage, anything we cannot read


class BounceSource(StrEnum):
    SMTP = "smtp"
    LMTP = "lmtp"
    POP3 = "pop3"
    IMAP = "imap"


class Bounce(Base):
    __tablename__ = "bounces"
    __table_args__ = (Index("ix_bounces_email_kind_received", "email", "kind", "received_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    delivery_id: Mapped[int | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="SET NULL"), index=True
    )
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), index=True
    )
    # The failed address as normalised, or "" when none could be found.
    email: Mapped[str] = mapped_column(String(320), default="")
    kind: Mapped[str] = mapped_column(String(16), default=BounceKind.UNKNOWN)
    # The DSN status code (RFC 3463), such as 5.1.1; "" when the message had none.
    status_code: Mapped[str] = mapped_column(String(16), default="")
    diagnostic: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(8))
    # Relative to INSTANCE_PATH/bounces/.
    raw_path: Mapped[str] = mapped_column(String(300), default="")
    # True once the policy ran (suppression decided); False for messages it ignored.
    processed: Mapped[bool] = mapped_column(default=False)
