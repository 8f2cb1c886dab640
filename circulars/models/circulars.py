"""Circulars, their attachments, and the counter that numbers them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, ForeignKey, String, Table, Text, UniqueConstraint, false, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, utcnow
from .lists import MailingList

circular_lists = Table(
    "circular_lists",
    Base.metadata,
    Column("circular_id", ForeignKey("circulars.id", ondelete="CASCADE"), primary_key=True),
    Column("list_id", ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True),
)


class CircularStatus(StrEnum):
    DRAFT = "draft"
    SENT = "sent"  # numbered: at least one send has started; no longer editable


class Circular(Base):
    __tablename__ = "circulars"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Given on the first send only; see sending.numbering.
    number: Mapped[int | None] = mapped_column(unique=True)
    title: Mapped[str] = mapped_column(String(300))
    body_markdown: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default=CircularStatus.DRAFT)
    # Bumped on every save; an edit made from a stale form is refused, not merged.
    revision: Mapped[int] = mapped_column(default=1)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    first_sent_at: Mapped[datetime | None]
    # Free text, used to filter the public archive and to find related circulars.
    topic: Mapped[str | None] = mapped_column(String(100), index=True)
    # Sent circulars appear in the public archive unless kept out.
    in_archive: Mapped[bool] = mapped_column(default=True, server_default=true())
    # The language of `title` and `body_markdown`: the version everyone gets whose
    # language has no version of its own (see `translations` for the others).
    default_language: Mapped[str] = mapped_column(String(16), default="en", server_default="en")
    # Sign-on statement: open for endorsement until closed by hand or until closes_at.
    endorsement_open: Mapped[bool] = mapped_column(default=False, server_default=false())
    endorsement_opened_at: Mapped[datetime | None]
    endorsement_closes_at: Mapped[datetime | None]

    lists: Mapped[list[MailingList]] = relationship(
        secondary=circular_lists, order_by="MailingList.name"
    )
    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="circular",
        order_by="Attachment.id",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )
    translations: Mapped[list[CircularTranslation]] = relationship(
        back_populates="circular",
        order_by="CircularTranslation.language",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    @property
    def is_draft(self) -> bool:
        return self.status == CircularStatus.DRAFT

    @property
    def display_title(self) -> str:
        if self.number is None:
            return self.title
        return f"Circular No. {self.number}: {self.title}"

    @property
    def languages(self) -> list[str]:
        """The languages it exists in, the default first."""
        return [self.default_language, *(item.language for item in self.translations)]

    def versions(self) -> list[Version]:
        """Every language version, the default first."""
        return [
            Version(self.default_language, self.title, self.body_markdown, is_default=True),
            *(Version(item.language, item.title, item.body_markdown) for item in self.translations),
        ]

    def version(self, language: str | None) -> Version | None:
        """The version in exactly that language, or None."""
        for item in self.versions():
            if item.language == language:
                return item
        return None

    def attachments_for(self, language: str) -> list[Attachment]:
        """What goes with one version: the shared attachments and that language's own."""
        return [item for item in self.attachments if item.language in (None, language)]


@dataclass(frozen=True)
class Version:
    """One language version of a circular, whether stored on it or as a translation."""

    language: str
    title: str
    body_markdown: str
    is_default: bool = False


class CircularTranslation(Base):
    """A circular in one more language: its own subject and body, the same number."""

    __tablename__ = "circular_translations"
    __table_args__ = (UniqueConstraint("circular_id", "language"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    circular_id: Mapped[int] = mapped_column(ForeignKey("circulars.id", ondelete="CASCADE"))
    language: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(300))
    body_markdown: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    circular: Mapped[Circular] = relationship(back_populates="translations")


class Attachment(Base):
    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    circular_id: Mapped[int] = mapped_column(
        ForeignKey("circulars.id", ondelete="CASCADE"), index=True
    )
    # The name shown to people and put in the email; the file on disk is named by its hash.
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(127))
    size: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # None: goes with every language version; a code: only with that version.
    language: Mapped[str | None] = mapped_column(String(16))

    circular: Mapped[Circular] = relationship(back_populates="attachments")


class Counter(Base):
    """Named gap-free counters; the row lock on UPDATE serialises concurrent takers."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(default=0)
