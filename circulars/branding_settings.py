"""The branding saved on the admin's settings page: checked, stored, and read at each render.

Until an admin saves the page the ORG_* environment settings are the branding.
Readers (a worker rendering a send, a transactional mail, every page) ask the
database each time, with one small query for the row's version; the Branding
built from a version is kept, so a saved change shows from the next send or
page on, in every process, without a restart.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .images import EXTENSIONS, CheckedImage
from .mail.branding import (
    READABLE_CONTRAST,
    WHITE,
    Branding,
    contrast_ratio,
    is_hex_color,
    logo_display_size,
)
from .models import BRANDING_ROW_ID, BrandingLogo, BrandingSettings, User, utcnow
from .storage import FileStore

#: Logos are shown in every email; a larger file only slows each one down.
LOGO_MAX_SIZE = 256 * 1024
#: Where the public site serves saved logos: LOGO_PATH + "<sha256>.<extension>".
LOGO_PATH = "/branding/logo/"
MAX_SOCIAL_LINKS = 8


class BrandingRefused(ValueError):
    """A value we do not store; the message is for the person who typed it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class BrandingInvalid(ValueError):
    """Every field that is wrong (field name -> message); nothing was stored."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems.items()))
        self.problems = problems


@dataclass(frozen=True)
class BrandingValues:
    """What the settings page edits (the logo aside)."""

    name: str
    signoff: str
    postal_address: str = ""
    phone: str = ""
    fax: str = ""
    mobile: str = ""
    email: str = ""
    website: str = ""
    social: tuple[tuple[str, str], ...] = ()
    about: str = ""
    campaign_title: str = ""
    campaign_text: str = ""
    campaign_url: str = ""
    primary_color: str = "#1f4e79"
    accent_color: str = "#1f4e79"


# --- checks ---------------------------------------------------------------------------------


def check_color(value: str, field: str, role: str) -> str:
    """#rrggbb (lower-cased), dark enough for text: white on the primary, or on white."""
    value = value.strip()
    if not is_hex_color(value):
        raise BrandingRefused(field, "Write a colour as # and six hex digits, such as #1f4e79.")
    value = value.lower()
    ratio = contrast_ratio(value, WHITE)
    if ratio < READABLE_CONTRAST:
        raise BrandingRefused(
            field,
            f"{role} on {value} would be hard to read (contrast {ratio:.1f}:1; at least "
            f"{READABLE_CONTRAST}:1 is needed). Choose a darker colour.",
        )
    return value


def check_web_url(value: str, field: str) -> str:
    """An absolute http(s) address with a host; anything else (javascript:, data:) is refused."""
    value = value.strip()
    parts = urlsplit(value)
    if (
        parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or re.search(r"[\s<>\"'\x00-\x1f\x7f]", value)
    ):
        raise BrandingRefused(field, "Use a full web address starting with https:// (or http://).")
    return value


def _single_line(value: str, field: str, limit: int) -> str:
    value = value.strip()
    if re.search(r"[\r\n\x00\x0b\x0c\u2028\u2029]", value):
        raise BrandingRefused(field, "Must be a single line.")
    if len(value) > limit:
        raise BrandingRefused(field, f"At most {limit} characters.")
    return value


def _text(value: str, field: str, limit: int) -> str:
    value = value.replace("\r\n", "\n").strip()
    if "\x00" in value:
        raise BrandingRefused(field, "Contains a character that cannot be stored.")
    if len(value) > limit:
        raise BrandingRefused(field, f"At most {limit} characters.")
    return value


def check_values(values: BrandingValues) -> BrandingValues:
    """The values cleaned up, or BrandingInvalid naming every field that is wrong."""
    problems: dict[str, str] = {}

    def checked(check: Callable[..., str], value: str, field: str, *args: Any) -> str:
        try:
            return check(value, field, *args)
        except BrandingRefused as exc:
            problems.setdefault(exc.field, exc.message)
            return ""

    name = checked(_single_line, values.name, "name", 200)
    if not name and "name" not in problems:
        problems["name"] = "The organisation needs a name."
    email = values.email.strip()
    if email:
        try:
            email = validate_email(
                email, check_deliverability=False, test_environment=True
            ).normalized
        except EmailNotValidError as exc:
            problems["email"] = str(exc)
    social = []
    for index, (label, url) in enumerate(values.social):
        label = checked(_single_line, label, f"social-{index}-name", 50)
        url = url.strip()
        if not label and not url:
            continue
        if not label or not url:
            problems.setdefault(
                f"social-{index}-name", "Give each link both a name and an address."
            )
            continue
        social.append((label, checked(check_web_url, url, f"social-{index}-url")))
    if len(social) > MAX_SOCIAL_LINKS:
        problems["social-0-name"] = f"At most {MAX_SOCIAL_LINKS} links."
    campaign_title = checked(_single_line, values.campaign_title, "campaign_title", 200)
    campaign_text = checked(_text, values.campaign_text, "campaign_text", 1000)
    campaign_url = values.campaign_url.strip()
    if (campaign_text or campaign_url) and not values.campaign_title.strip():
        problems["campaign_title"] = "Give the campaign a title, or clear its text and link."
    cleaned = BrandingValues(
        name=name,
        signoff=checked(_single_line, values.signoff, "signoff", 200),
        postal_address=checked(_text, values.postal_address, "postal_address", 500),
        phone=checked(_single_line, values.phone, "phone", 50),
        fax=checked(_single_line, values.fax, "fax", 50),
        mobile=checked(_single_line, values.mobile, "mobile", 50),
        email=email,
        website=checked(check_web_url, values.website, "website") if values.website.strip() else "",
        social=tuple(social),
        about=checked(_text, values.about, "about", 2000),
        campaign_title=campaign_title,
        campaign_text=campaign_text,
        campaign_url=checked(check_web_url, campaign_url, "campaign_url") if campaign_url else "",
        primary_color=checked(check_color, values.primary_color, "primary_color", "White text"),
        accent_color=checked(
            check_color, values.accent_color, "accent_color", "Links and headings"
        ),
    )
    if problems:
        raise BrandingInvalid(problems)
    return cleaned


# --- building a Branding --------------------------------------------------------------------


@dataclass(frozen=True)
class LogoRef:
    """Where a logo can be fetched from, and its size in pixels."""

    url: str  # absolute (mail)
    path: str  # on this site (pages), or a data: URI in a preview
    width: int
    height: int


def logo_path(sha256: str, content_type: str) -> str:
    return f"{LOGO_PATH}{sha256}.{EXTENSIONS[content_type]}"


def stored_logo_ref(logo: BrandingLogo, base_url: str) -> LogoRef:
    path = logo_path(logo.sha256, logo.content_type)
    return LogoRef(base_url.rstrip("/") + path, path, logo.width, logo.height)


def preview_logo_ref(image: CheckedImage) -> LogoRef:
    """An unsaved logo, shown from the page itself (a data: URI): nothing is stored."""
    return LogoRef(image.data_uri, image.data_uri, image.width, image.height)


def make_branding(values: BrandingValues, logo: LogoRef | None) -> Branding:
    width, height = logo_display_size(logo.width, logo.height) if logo else (0, 0)
    return Branding(
        name=values.name,
        signoff=values.signoff,
        postal_address=values.postal_address,
        email=values.email,
        phone=values.phone,
        website=values.website,
        about=values.about,
        social=values.social,
        color=values.primary_color,
        accent_color=values.accent_color,
        fax=values.fax,
        mobile=values.mobile,
        logo_url=logo.url if logo else "",
        logo_path=logo.path if logo else "",
        logo_width=width,
        logo_height=height,
        campaign_title=values.campaign_title,
        campaign_text=values.campaign_text,
        campaign_url=values.campaign_url,
    )


def values_of(branding: Branding) -> BrandingValues:
    """The editable values of a Branding (the environment's, for the form's first showing)."""
    return BrandingValues(
        name=branding.name,
        signoff=branding.signoff,
        postal_address=branding.postal_address,
        phone=branding.phone,
        fax=branding.fax,
        mobile=branding.mobile,
        email=branding.email,
        website=branding.website,
        social=branding.social,
        about=branding.about,
        campaign_title=branding.campaign_title,
        campaign_text=branding.campaign_text,
        campaign_url=branding.campaign_url,
        primary_color=branding.color,
        accent_color=branding.accent,
    )


def _values_of_row(row: BrandingSettings) -> BrandingValues:
    return BrandingValues(
        **{f.name: getattr(row, f.name) for f in fields(BrandingValues) if f.name != "social"},
        social=tuple((str(label), str(url)) for label, url in row.social or ()),
    )


# --- reading --------------------------------------------------------------------------------

_cache: dict[tuple[str, str, int, datetime], Branding] = {}
_cache_lock = threading.Lock()


def saved_settings(session: Session) -> BrandingSettings | None:
    """The saved row, read afresh (not from the session's identity map)."""
    return session.scalar(
        select(BrandingSettings)
        .where(BrandingSettings.id == BRANDING_ROW_ID)
        .execution_options(populate_existing=True)
    )


def load_branding(session: Session, defaults: Branding, base_url: str) -> Branding:
    """The saved branding, else `defaults` (the environment's); one small query when cached."""
    stamp = session.execute(
        select(BrandingSettings.version, BrandingSettings.updated_at).where(
            BrandingSettings.id == BRANDING_ROW_ID
        )
    ).first()
    if stamp is None:
        return defaults
    # The database is part of the key: tests run two stacks in one process.
    key = (str(session.get_bind().engine.url), base_url, stamp.version, stamp.updated_at)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    row = saved_settings(session)
    if row is None:  # deleted between the two queries
        return defaults
    logo = session.get(BrandingLogo, row.logo_sha256) if row.logo_sha256 else None
    branding = make_branding(
        _values_of_row(row), stored_logo_ref(logo, base_url) if logo is not None else None
    )
    with _cache_lock:
        if len(_cache) > 16:
            _cache.clear()
        _cache[key] = branding
    return branding


def current_values(session: Session, defaults: Branding) -> BrandingValues:
    """What the form shows before anyone edits: the saved values, else the environment's."""
    row = saved_settings(session)
    return _values_of_row(row) if row is not None else values_of(defaults)


def current_logo(session: Session) -> BrandingLogo | None:
    row = saved_settings(session)
    return session.get(BrandingLogo, row.logo_sha256) if row and row.logo_sha256 else None


def find_logo(session: Session, sha256: str) -> BrandingLogo | None:
    """A logo that was saved at some time (mail sent earlier still shows it), or None."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        return None
    return session.get(BrandingLogo, sha256)


# --- saving ---------------------------------------------------------------------------------


def save_branding(
    session: Session,
    values: BrandingValues,
    *,
    files: FileStore,
    user: User | None,
    logo: CheckedImage | None = None,
    remove_logo: bool = False,
) -> BrandingSettings:
    """Check and store the values (and a new logo); commits. Raises BrandingInvalid.

    A new logo goes to the file store by content hash before the row points at
    it; if the commit fails, an unreferenced file is all that remains.
    """
    values = check_values(values)
    if logo is not None:
        if len(logo.data) > LOGO_MAX_SIZE:
            raise BrandingInvalid({"logo": "The logo is too large."})
        files.save(io.BytesIO(logo.data), f"logo.{logo.extension}", logo.content_type)
    # Two admins saving the very first time (or the same new logo) at once both insert:
    # the second one's insert fails, and its second try updates what the first stored.
    for attempt in (1, 2):
        try:
            row = _store(session, values, user=user, logo=logo, remove_logo=remove_logo)
            session.commit()
            return row
        except IntegrityError:
            session.rollback()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _store(
    session: Session,
    values: BrandingValues,
    *,
    user: User | None,
    logo: CheckedImage | None,
    remove_logo: bool,
) -> BrandingSettings:
    if logo is not None and session.get(BrandingLogo, logo.sha256) is None:
        session.add(
            BrandingLogo(
                sha256=logo.sha256,
                content_type=logo.content_type,
                width=logo.width,
                height=logo.height,
                size=len(logo.data),
            )
        )
        session.flush()
    row = session.scalar(
        select(BrandingSettings)
        .where(BrandingSettings.id == BRANDING_ROW_ID)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if row is None:
        row = BrandingSettings(id=BRANDING_ROW_ID, version=0)
        session.add(row)
    for field in fields(BrandingValues):
        value = getattr(values, field.name)
        if field.name == "social":
            value = [list(pair) for pair in value]
        setattr(row, field.name, value)
    if logo is not None:
        row.logo_sha256 = logo.sha256
    elif remove_logo:
        row.logo_sha256 = None
    row.version = (row.version or 0) + 1
    row.updated_at = utcnow()
    row.updated_by_id = user.id if user is not None else None
    row.updated_by_email = user.email if user is not None else ""
    session.flush()
    return row
