"""Render a digest once per group of readers: the same circulars in the same language.

Each circular appears as its number, its title and a summary (the first
paragraph of its body as plain text) in the reader's language where the
circular has a version in it, else in its default language; with a link to
its page in the public archive and links to its attachments there (never the
files themselves). A circular kept out of the archive has no public page, so
its links are signed view links (`/circulars/shared/<token>`) that expire
like the preference links: readers of the list were meant to read it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from ..archive import archive_path
from ..languages import direction
from ..mail.branding import Branding
from ..mail.personalise import Markers
from ..mail.render import (
    RenderedCircular,
    _crlf,
    _inline_css,
    _markdown,
    check_single_line,
    email_environment,
)
from ..mail.wording import long_date, wording
from ..models import Circular, DigestFrequency
from ..subscribers.tokens import TokenError, TokenSigner
from .wording import count_phrase, words

#: A summary longer than this is cut at a word and ends with an ellipsis.
SUMMARY_LENGTH = 320
SHARED_PATH = "/circulars/shared/"
SHARED_PURPOSE = "circular-view"


@dataclass(frozen=True)
class LinkedAttachment:
    filename: str
    size: int
    url: str


@dataclass(frozen=True)
class DigestItem:
    circular_id: int
    number: int
    label: str
    title: str
    summary: str
    url: str
    public: bool
    language: str
    direction: str
    sent_on_text: str
    attachments: tuple[LinkedAttachment, ...]


def summary_of(body_markdown: str, limit: int = SUMMARY_LENGTH) -> str:
    """The first paragraph as plain text (markup, links and images reduced to their words)."""
    tokens = _markdown().parse(body_markdown or "")
    text = ""
    for index, token in enumerate(tokens):
        if token.type == "paragraph_open" and index + 1 < len(tokens):
            inline = tokens[index + 1]
            parts = []
            for child in inline.children or []:
                if child.type in ("text", "code_inline"):
                    parts.append(child.content)
                elif child.type in ("softbreak", "hardbreak"):
                    parts.append(" ")
                elif child.type == "image":
                    parts.append(child.content)
            text = re.sub(r"\s+", " ", "".join(parts)).strip()
            if text:
                break
    if len(text) > limit:
        cut = text[:limit].rsplit(" ", 1)[0] or text[:limit]
        text = cut.rstrip(" ,;:.") + "…"
    return text


def shared_token(signer: TokenSigner, circular_id: int) -> str:
    return signer.make(SHARED_PURPOSE, circular_id)


def read_shared_token(signer: TokenSigner, token: str) -> int:
    """The circular a view link opens; raises TokenError when forged or expired."""
    payload = signer.read(SHARED_PURPOSE, token)
    if payload.list_id is not None:
        raise TokenError("This link is not valid.")
    return payload.subscriber_id


def _version(circular: Circular, language: str) -> tuple[str, str, str]:
    """(language, title, body) of the version a reader of `language` gets."""
    version = circular.version(language) or circular.version(circular.default_language)
    if version is None:  # a default_language with no matching version cannot happen
        return circular.default_language, circular.title, circular.body_markdown
    return version.language, version.title, version.body_markdown


def digest_items(
    session: Session,
    circular_ids: Sequence[int],
    language: str,
    *,
    base_url: str,
    signer: TokenSigner,
    timezone: str,
) -> list[DigestItem]:
    """The circulars of one digest, in the given order, as the reader will see them."""
    found = {
        item.id: item
        for item in session.scalars(
            select(Circular)
            .where(Circular.id.in_(circular_ids))
            .options(selectinload(Circular.attachments), selectinload(Circular.translations))
        )
    }
    base = base_url.rstrip("/")
    zone = ZoneInfo(timezone)
    items = []
    for circular_id in circular_ids:
        circular = found.get(circular_id)
        if circular is None or circular.number is None:
            continue  # deleted since the snapshot: nothing to show
        version_language, title, body = _version(circular, language)
        public = bool(circular.in_archive)
        if public:
            # The reader's version page when it has one (translations), else the default's.
            suffix = None if version_language == circular.default_language else version_language
            url = base + archive_path(circular.number, circular.title, suffix)
            attachment_url = f"{base}/circulars/{circular.number}/attachments/"
        else:
            shared = f"{base}{SHARED_PATH}{shared_token(signer, circular.id)}"
            default = version_language == circular.default_language
            url = shared if default else f"{shared}?lang={version_language}"
            attachment_url = f"{shared}/attachments/"
        sent_on: date = (circular.first_sent_at or datetime.now(zone)).astimezone(zone).date()
        items.append(
            DigestItem(
                circular_id=circular.id,
                number=circular.number,
                label=wording(language).label(circular.number),
                title=title,
                summary=summary_of(body),
                url=url,
                public=public,
                language=version_language,
                direction=direction(version_language),
                sent_on_text=long_date(sent_on, language),
                attachments=tuple(
                    LinkedAttachment(item.filename, item.size, f"{attachment_url}{item.id}")
                    for item in circular.attachments_for(version_language)
                ),
            )
        )
    return items


def digest_subject(
    list_name: str, frequency: str, period_end: date, language: str, count: int
) -> str:
    table = words(language)
    key = "subject.weekly" if frequency == DigestFrequency.WEEKLY else "subject.monthly"
    subject = table[key].format(
        list=list_name, date=long_date(period_end, language), count=count_phrase(language, count)
    )
    check_single_line(subject, "digest subject")
    return subject


def render_digest(
    *,
    items: Sequence[DigestItem],
    list_name: str,
    frequency: str,
    period_end: date,
    language: str,
    branding: Branding,
) -> RenderedCircular:
    """Subject, HTML and text of one digest, with markers where each reader's fields go."""
    table = words(language)
    subject = digest_subject(list_name, frequency, period_end, language, len(items))
    heading_key = "heading.weekly" if frequency == DigestFrequency.WEEKLY else "heading.monthly"
    context = {
        "subject": subject,
        "items": items,
        "list_name": list_name,
        "heading": table[heading_key].format(count=count_phrase(language, len(items))),
        "intro": table["intro"].format(list=list_name),
        "t": table,
        "date_text": long_date(period_end, language),
        "org": branding,
        "words": wording(language),
        "language": language,
        "direction": direction(language),
        "recipient": Markers(),
    }
    env = email_environment()
    html = _inline_css(env.get_template("digest/body.html").render(context), "")
    text = env.get_template("digest/body.txt").render(context)
    return RenderedCircular(subject=subject, html=_crlf(html), text=_crlf(text) + "\r\n")
