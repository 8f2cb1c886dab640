"""The public archive: the list of sent circulars, a permanent page for each, the Atom feed.

Pages are found by number; the slug in the URL is decoration, and a wrong or
missing one redirects (301) to the right one, so links survive a new slug rule.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from flask import Response, abort, redirect, render_template, request, url_for
from flask_babel import format_date

from ...archive import (
    ArchiveFilters,
    latest,
    list_archive,
    neighbours,
    published_circular,
    related,
    slugify,
    topics,
    years,
)
from ...atom import ATOM_TYPE, build_feed
from ...extensions import db
from ...languages import circular_language_name, direction
from ...mail.render import markdown_to_html
from ...mail.wording import wording
from ...models import Circular
from ..helpers import attachment_download, settings
from ..i18n import use_subscriber_language
from . import bp


def _page_url(circular: Circular, language: str | None = None) -> str:
    """A version's page: the default version at /circulars/27-slug, others at .../27-slug/ar."""
    if language is None or language == circular.default_language:
        return url_for("public.circular_page", number=circular.number, slug=slugify(circular.title))
    return url_for(
        "public.circular_page",
        number=circular.number,
        slug=slugify(circular.title),
        language=language,
    )


def _published_or_404(number: int) -> Circular:
    circular = published_circular(db.session, number)
    if circular is None:
        abort(404)
    return circular


def _sent_on(circular: Circular) -> str:
    if circular.first_sent_at is None:
        return ""
    local = circular.first_sent_at.astimezone(ZoneInfo(settings().timezone)).date()
    return str(format_date(local, format="long"))


def _filters() -> ArchiveFilters:
    year_text = request.args.get("year", "").strip()
    return ArchiveFilters(
        topic=request.args.get("topic", "").strip()[:100],
        year=int(year_text) if year_text.isdigit() and len(year_text) == 4 else None,
        q=request.args.get("q", "").strip()[:200],
    )


@bp.get("/circulars")
def archive() -> Any:
    filters = _filters()
    page_number = request.args.get("page", "1")
    page = list_archive(db.session, filters, page=int(page_number) if page_number.isdigit() else 1)
    return render_template(
        "public/archive.html",
        page=page,
        filters=filters,
        topics=topics(db.session),
        years=years(db.session),
        sent_on=_sent_on,
        page_url=_page_url,
        language_name=circular_language_name,
    )


@bp.get("/circulars/<int:number>")
def circular_by_number(number: int) -> Any:
    circular = _published_or_404(number)
    return redirect(_page_url(circular), code=301)


@bp.get("/circulars/<int:number>/<language>")
def circular_version_by_number(number: int, language: str) -> Any:
    circular = _published_or_404(number)
    if circular.version(language) is None:
        abort(404)
    return redirect(_page_url(circular, language), code=301)


@bp.get("/circulars/<int:number>-<slug>")
@bp.get("/circulars/<int:number>-<slug>/<language>")
def circular_page(number: int, slug: str, language: str | None = None) -> Any:
    """One language version of a circular; the default one has the path without a language."""
    circular = _published_or_404(number)
    version = circular.version(language or circular.default_language)
    if version is None:
        abort(404)
    if slug != slugify(circular.title) or (language is not None and version.is_default):
        return redirect(_page_url(circular, language), code=301)
    # A reader who has not chosen a language for the pages gets them in the version's,
    # when the pages speak it (Arabic: the whole page right to left).
    use_subscriber_language(version.language)
    previous, following = neighbours(db.session, circular)
    return render_template(
        "public/circular.html",
        circular=circular,
        version=version,
        versions=circular.versions(),
        attachments=circular.attachments_for(version.language),
        heading=wording(version.language).subject(circular.number, version.title),
        language_name=circular_language_name,
        direction=direction,
        body_html=markdown_to_html(version.body_markdown),
        sent_on=_sent_on,
        previous=previous,
        following=following,
        related=related(db.session, circular),
        page_url=_page_url,
    )


@bp.get("/circulars/<int:number>/attachments/<int:attachment_id>")
def archive_attachment(number: int, attachment_id: int) -> Any:
    """Only the attachments of a circular the public may see; always a download, never inline."""
    return attachment_download(_published_or_404(number).id, attachment_id)


@bp.get("/circulars/feed.atom")
def archive_feed() -> Any:
    current = settings()
    body = build_feed(
        latest(db.session),
        base_url=current.base_url,
        org_name=current.org_name,
        feed_path=url_for("public.archive_feed"),
        index_path=url_for("public.archive"),
    )
    return Response(body, mimetype=ATOM_TYPE)
