"""Staff accounts of the secretariat."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class Role(StrEnum):
    ADMIN = "admin"  # everything, including users and settings
    SENDER = "sender"  # drafts, sends, lists and subscribers
    EDITOR = "editor"  # drafts, previews and test sends only


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=Role.EDITOR)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]

    # What Flask-Login asks of a user object, written out so models stay free of Flask.
    is_authenticated = True
    is_anonymous = False

    @property
    def is_active(self) -> bool:
        return self.active

    def get_id(self) -> str:
        return str(self.id)

    def can_send(self) -> bool:
        return self.role in (Role.ADMIN, Role.SENDER)

    def is_admin(self) -> bool:
        return self.role == Role.ADMIN
