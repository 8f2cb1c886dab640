"""Language versions of a circular: adding, changing and removing them, and who reads which.

A circular's own title and body are its default-language version; each
translation adds one more language with its own title and body, sharing the
number and the shared attachments. Every change here is refused once the
circular has been sent (a sent circular is part of the record), and bad input
raises TranslationRefused before anything is changed. The caller commits.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, case, func, literal, or_, select
from sqlalchemy.orm import QueryableAttribute, Session

from .languages import CIRCULAR_LANGUAGES, base_language, circular_language
from .mail.render import RenderError, check_single_line
from .models import Attachment, Circular, CircularTranslation, Subscriber, utcnow
from .sending.service import recipients_query

TITLE_MAX = 300
BODY_MAX = 500_000


class TranslationRefused(ValueError):
    """The change cannot be made; the message says why in words an editor understands."""


def checked_language(code: str | None) -> str:
    """The version code for `code`, or TranslationRefused naming the codes that work."""
    language = circular_language(code)
    if language is None:
        known = ", ".join(CIRCULAR_LANGUAGES)
        raise TranslationRefused(f"Unknown language code {code!r}; use one of: {known}.")
    return language


def checked_title(title: str | None) -> str:
    """A title fit for a Subject header: one line, 1 to 300 characters."""
    value = title or ""
    try:
        check_single_line(value, "title")
    except RenderError as exc:
        raise TranslationRefused(str(exc)) from exc
    value = value.strip()
    if not value or len(value) > TITLE_MAX:
        raise TranslationRefused(f"The title must have 1 to {TITLE_MAX} characters.")
    return value


def checked_body(body: str | None) -> str:
    value = body or ""
    if len(value) > BODY_MAX:
        raise TranslationRefused(f"The body must have at most {BODY_MAX:,} characters.")
    return value


def _editable(circular: Circular) -> None:
    if not circular.is_draft:
        raise TranslationRefused(
            "This circular has been sent; its language versions can no longer change."
        )


def _touch(circular: Circular) -> None:
    circular.revision += 1
    circular.updated_at = utcnow()


def translation(circular: Circular, language: str) -> CircularTranslation | None:
    for item in circular.translations:
        if item.language == language:
            return item
    return None


def add_version(
    session: Session, circular: Circular, language: str | None, title: str | None, body: str | None
) -> CircularTranslation:
    """One more language; refused for the default language or one it already has."""
    _editable(circular)
    code = checked_language(language)
    clean_title, clean_body = checked_title(title), checked_body(body)
    if code == circular.default_language or translation(circular, code) is not None:
        name = CIRCULAR_LANGUAGES[code]
        raise TranslationRefused(f"This circular has a version in {name} already; edit that one.")
    item = CircularTranslation(language=code, title=clean_title, body_markdown=clean_body)
    circular.translations.append(item)
    _touch(circular)
    session.flush()
    return item


def update_version(
    session: Session, circular: Circular, language: str | None, title: str | None, body: str | None
) -> None:
    """Change one version's title and body (the default one too)."""
    _editable(circular)
    code = checked_language(language)
    clean_title, clean_body = checked_title(title), checked_body(body)
    if code == circular.default_language:
        circular.title, circular.body_markdown = clean_title, clean_body
    else:
        item = translation(circular, code)
        if item is None:
            raise TranslationRefused(f"This circular has no version in {CIRCULAR_LANGUAGES[code]}.")
        item.title, item.body_markdown, item.updated_at = clean_title, clean_body, utcnow()
    _touch(circular)
    session.flush()


def remove_version(session: Session, circular: Circular, language: str | None) -> None:
    """Drop a translation; the default version stays, and so do attachments until moved."""
    _editable(circular)
    code = checked_language(language)
    if code == circular.default_language:
        raise TranslationRefused(
            "The default version cannot be removed; make another language the default first."
        )
    item = translation(circular, code)
    if item is None:
        raise TranslationRefused(f"This circular has no version in {CIRCULAR_LANGUAGES[code]}.")
    own = [a.filename for a in circular.attachments if a.language == code]
    if own:
        raise TranslationRefused(
            f"The version in {CIRCULAR_LANGUAGES[code]} has its own attachments "
            f"({', '.join(own)}); remove them or share them with every version first."
        )
    circular.translations.remove(item)
    _touch(circular)
    session.flush()


def set_default_language(session: Session, circular: Circular, language: str | None) -> None:
    """Make `language` the default.

    When the circular has a version in that language, it trades places with the
    current default (whose title and body become a translation); otherwise the
    circular's own text is simply said to be in that language.
    """
    _editable(circular)
    code = checked_language(language)
    if code == circular.default_language:
        return
    item = translation(circular, code)
    if item is not None:
        old = (circular.default_language, circular.title, circular.body_markdown)
        circular.title, circular.body_markdown = item.title, item.body_markdown
        item.language, item.title, item.body_markdown = old
        item.updated_at = utcnow()
    circular.default_language = code
    _touch(circular)
    session.flush()


def set_attachment_language(
    session: Session, circular: Circular, attachment: Attachment, language: str | None
) -> None:
    """An attachment for every version (None or "") or for one of the circular's languages."""
    _editable(circular)
    if attachment.circular_id != circular.id:
        raise TranslationRefused("That attachment belongs to another circular.")
    code = None if not language else checked_language(language)
    if code is not None and code not in circular.languages:
        raise TranslationRefused(
            f"This circular has no version in {CIRCULAR_LANGUAGES[code]}; add one first."
        )
    attachment.language = code
    _touch(circular)
    session.flush()


def version_for(subscriber_language: str | None, languages: Sequence[str], default: str) -> str:
    """The version a reader gets: their language's (``fr-CA`` reads ``fr``), else the default."""
    wanted = base_language(subscriber_language)
    return wanted if wanted in languages else default


def version_column(
    language: ColumnElement[str] | QueryableAttribute[str], languages: Sequence[str], default: str
) -> ColumnElement[str]:
    """`version_for` in SQL, for the recipient snapshot's INSERT ... SELECT.

    Subscribers' codes are stored as given (``ar``, ``pt-br``, ``zh_TW``): a code
    matches a version when it is that language alone or followed by a region.
    """
    others = [code for code in languages if code != default]
    if not others:
        return literal(default)
    lowered = func.lower(language)
    whens = [
        (
            or_(
                lowered == code,
                func.substr(lowered, 1, len(code) + 1).in_([f"{code}-", f"{code}_"]),
            ),
            literal(code),
        )
        for code in others
    ]
    return case(*whens, else_=literal(default))


def recipients_by_version(
    session: Session, circular: Circular, list_ids: Sequence[int]
) -> dict[str, int]:
    """How many of a send's recipients would get each version, as the snapshot chooses."""
    if not list_ids:
        return {}
    chosen = version_column(Subscriber.language, circular.languages, circular.default_language)
    recipients = (
        recipients_query(circular.id, list_ids)
        .add_columns(chosen.label("version"))
        .group_by(Subscriber.language)
        .subquery()
    )
    rows = session.execute(
        select(recipients.c.version, func.count()).group_by(recipients.c.version)
    )
    counts = {str(language): int(count) for language, count in rows}
    return {code: counts[code] for code in circular.languages if code in counts}
