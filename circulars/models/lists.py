"""Mailing lists, subscribers and who is subscribed to what."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, JsonData, utcnow


class MailingList(Base):
    __tablename__ = "lists"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    public: Mapped[bool] = mapped_column(default=True)
    # Sent once, after a subscriber confirms; empty means no welcome mail.
    welcome_message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the digests go out, in the organisation's time zone (TIMEZONE): the weekly
    # one on a weekday (0 = Monday) at an hour, the monthly one on a day (1-28) at an hour.
    digest_weekday: Mapped[int] = mapped_column(default=0, server_default="0")
    digest_weekly_hour: Mapped[int] = mapped_column(default=9, server_default="9")
    digest_monthday: Mapped[int] = mapped_column(default=1, server_default="1")
    digest_monthly_hour: Mapped[int] = mapped_column(default=9, server_default="9")


class SubscriberStatus(StrEnum):
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"  # left everything; kept so an import cannot re-add silently
    BLOCKED = "blocked"


def _domain_of_email(context: Any) -> str:
    # Filled from the email on ORM inserts; multi-row bulk INSERTs must pass `domain` themselves.
    return str(context.get_current_parameters().get("email") or "").rpartition("@")[2]


class Subscriber(Base):
    __tablename__ = "subscribers"
    __table_args__ = (
        # Keyset pagination under a language filter, and domain suppression in the snapshot.
        Index("ix_subscribers_language_id", "language", "id"),
        Index("ix_subscribers_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stored normalised (see subscribers.addresses.normalise_email), so unique means unique.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    language: Mapped[str] = mapped_column(String(16), default="en")
    organization: Mapped[str] = mapped_column(String(200), default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(JsonData, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=SubscriberStatus.ACTIVE)
    # The part after "@", kept so domain suppression is an index lookup, not a LIKE.
    domain: Mapped[str] = mapped_column(String(255), default=_domain_of_email, index=True)
    # Nothing is sent until then (the preference centre's "pause").
    paused_until: Mapped[datetime | None]
    # Last confirmation mail; a second one within the cool-down is not sent (no mail storms).
    confirmation_sent_at: Mapped[datetime | None]
    # Staff lifted a domain suppression for this address (see suppression_overrides).
    suppression_exempt: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    subscriptions: Mapped[list[Subscription]] = relationship(
        back_populates="subscriber", cascade="all, delete-orphan", passive_deletes=True
    )


class SubscriptionStatus(StrEnum):
    CONFIRMED = "confirmed"
    UNCONFIRMED = "unconfirmed"
    UNSUBSCRIBED = "unsubscribed"


class DeliveryMode(StrEnum):
    """How a subscriber takes a list: each circular as it goes out, or a digest."""

    EVERY = "every"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


class Subscription(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "list_id"),
        Index("ix_subscriptions_list_status", "list_id", "status"),
        Index("ix_subscriptions_list_subscriber", "list_id", "subscriber_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=SubscriptionStatus.CONFIRMED)
    delivery: Mapped[str] = mapped_column(String(16), default=DeliveryMode.EVERY)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    confirmed_at: Mapped[datetime | None]
    unsubscribed_at: Mapped[datetime | None]
    # Since when they take this list as a digest (weekly or monthly): their first digest
    # starts here, so it does not hold the list's whole history. None: since confirmed.
    digest_since: Mapped[datetime | None]

    subscriber: Mapped[Subscriber] = relationship(back_populates="subscriptions")
    mailing_list: Mapped[MailingList] = relationship()
