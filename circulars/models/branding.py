"""The organisation's branding as saved on the admin's settings page (one row), and its logos."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, JsonData, utcnow

#: The only id the settings row may have.
BRANDING_ROW_ID = 1


class BrandingLogo(Base):
    """Every logo ever saved, by content hash: emails sent earlier keep showing theirs."""

    __tablename__ = "branding_logos"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    content_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int]
    height: Mapped[int]
    size: Mapped[int]
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)


class BrandingSettings(Base):
    """One row; until it exists, the ORG_* environment settings are the branding."""

    __tablename__ = "branding_settings"
    __table_args__ = (CheckConstraint(f"id = {BRANDING_ROW_ID}", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    # Raised on every save; readers cache the branding by (version, updated_at).
    version: Mapped[int] = mapped_column(default=1)
    name: Mapped[str] = mapped_column(String(200))
    signoff: Mapped[str] = mapped_column(String(200), default="")
    postal_address: Mapped[str] = mapped_column(Text, default="")
    phone: Mapped[str] = mapped_column(String(50), default="")
    fax: Mapped[str] = mapped_column(String(50), default="")
    mobile: Mapped[str] = mapped_column(String(50), default="")
    email: Mapped[str] = mapped_column(String(320), default="")
    website: Mapped[str] = mapped_column(String(500), default="")
    # [[name, url], ...] in the order shown.
    social: Mapped[list[Any]] = mapped_column(JsonData, default=list)
    about: Mapped[str] = mapped_column(Text, default="")
    campaign_title: Mapped[str] = mapped_column(String(200), default="")
    campaign_text: Mapped[str] = mapped_column(Text, default="")
    campaign_url: Mapped[str] = mapped_column(String(500), default="")
    primary_color: Mapped[str] = mapped_column(String(7))
    accent_color: Mapped[str] = mapped_column(String(7))
    logo_sha256: Mapped[str | None] = mapped_column(
        ForeignKey("branding_logos.sha256", ondelete="SET NULL")
    )
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # Kept as written, so the record of who saved survives the account.
    updated_by_email: Mapped[str] = mapped_column(String(320), default="")
