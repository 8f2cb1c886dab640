"""The public archive: which sent circulars the public may read, and how they are found.

Only circulars that have a number (at least one send has started) and are not
kept out appear. The number identifies a circular's page; the slug is made
from the title for readable links and is never trusted to find anything.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Select, and_, extract, func, or_, select
from sqlalchemy.orm import Session, selectinload

from .models import Circular, CircularTranslation
from .paging import PageNumbers

PER_PAGE = 20
RELATED_COUNT = 3
_SLUG_LENGTH = 60


def slugify(title: str) -> str:
    """Lower-case ASCII words joined by hyphens; "circular" when nothing is left (e.g. Arabic)."""
    folded = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")
    if len(slug) > _SLUG_LENGTH:
        slug = slug[:_SLUG_LENGTH].rsplit("-", 1)[0] or slug[:_SLUG_LENGTH]
    return slug or "circular"


def archive_path(number: int, title: str, language: str | None = None) -> str:
    """The permanent path of a circular's page; the email's "view in browser" link uses it.

    `title` is the default version's (one slug for every version); a `language`
    other than the default names that version's page: ``/circulars/27-slug/ar``.
    """
    path = f"/circulars/{number}-{slugify(title)}"
    return f"{path}/{language}" if language else path


def _is_published() -> ColumnElement[bool]:
    return and_(Circular.number.is_not(None), Circular.in_archive.is_(True))


def _published() -> Select[Circular]:
    return select(Circular).where(_is_published())


@dataclass(frozen=True)
class ArchiveFilters:
    topic: str = ""
    year: int | None = None
    q: str = ""


@dataclass
class ArchivePage(PageNumbers):
    items: Sequence[Circular]
    page: int
    per_page: int
    total: int
    filters: ArchiveFilters = field(default_factory=ArchiveFilters)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filtered(filters: ArchiveFilters) -> Select[Circular]:
    query = _published()
    if filters.topic:
        query = query.where(func.lower(Circular.topic) == filters.topic.strip().lower())
    if filters.year is not None:
        query = query.where(extract("year", Circular.first_sent_at) == filters.year)
    for word in filters.q.split():
        # Every word must appear, in the title or the body of one of its language
        # versions; LIKE is enough at archive sizes.
        pattern = f"%{_escape_like(word)}%"
        in_a_translation = (
            select(CircularTranslation.id)
            .where(
                CircularTranslation.circular_id == Circular.id,
                or_(
                    CircularTranslation.title.ilike(pattern, escape="\\"),
                    CircularTranslation.body_markdown.ilike(pattern, escape="\\"),
                ),
            )
            .exists()
        )
        query = query.where(
            or_(
                Circular.title.ilike(pattern, escape="\\"),
                Circular.body_markdown.ilike(pattern, escape="\\"),
                in_a_translation,
            )
        )
    return query


def list_archive(
    session: Session, filters: ArchiveFilters, page: int = 1, per_page: int = PER_PAGE
) -> ArchivePage:
    """Newest first (by number, which follows the order of first sends)."""
    query = _filtered(filters)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = max(1, page)
    items = session.scalars(
        query.order_by(Circular.number.desc())
        .offset((page - 1) * per_page)
        .limit(per_page)
        .options(selectinload(Circular.translations))
    ).all()
    return ArchivePage(items=items, page=page, per_page=per_page, total=total, filters=filters)


def published_circular(session: Session, number: int) -> Circular | None:
    """The circular with that number, if the public may see it."""
    return session.scalar(
        _published().where(Circular.number == number).options(selectinload(Circular.attachments))
    )


def neighbours(session: Session, circular: Circular) -> tuple[Circular | None, Circular | None]:
    """The previous and next circulars in the archive, skipping those kept out."""
    previous = session.scalars(
        _published().where(Circular.number < circular.number).order_by(Circular.number.desc())
    ).first()
    following = session.scalars(
        _published().where(Circular.number > circular.number).order_by(Circular.number)
    ).first()
    return previous, following


def related(session: Session, circular: Circular, count: int = RELATED_COUNT) -> list[Circular]:
    """The newest other circulars on the same topic."""
    if not circular.topic:
        return []
    return list(
        session.scalars(
            _published()
            .where(
                func.lower(Circular.topic) == circular.topic.lower(),
                Circular.id != circular.id,
            )
            .order_by(Circular.number.desc())
            .limit(count)
        )
    )


def topics(session: Session) -> list[str]:
    """The topics in use in the archive, for the filter's choices."""
    rows = session.scalars(
        select(Circular.topic).where(_is_published(), Circular.topic.is_not(None)).distinct()
    )
    return sorted({row for row in rows if row}, key=str.lower)


def years(session: Session) -> list[int]:
    """The years with at least one circular, newest first."""
    rows = session.scalars(select(Circular.first_sent_at).where(_is_published()))
    return sorted({_aware(value).year for value in rows if value is not None}, reverse=True)


def latest(session: Session, count: int = 20) -> list[Circular]:
    """The newest circulars, for the feed."""
    return list(
        session.scalars(
            _published()
            .order_by(Circular.number.desc())
            .limit(count)
            .options(selectinload(Circular.translations))
        )
    )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
