"""A circular kept out of the archive, opened from a digest through a signed, expiring link.

Digest readers were meant to read every circular of their list, but one kept
out of the archive has no public page. The digest links it as
/circulars/shared/<token>: the token names the circular only, is signed with
SECRET_KEY and expires with the preference links (UNSUBSCRIBE_TOKEN_MAX_AGE_DAYS).
The page is not indexed and not cached by shared caches.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from flask import abort, make_response, render_template, request
from flask_babel import format_date

from ...digests.render import SHARED_PATH, read_shared_token
from ...extensions import db
from ...languages import direction
from ...mail.render import markdown_to_html
from ...mail.wording import wording
from ...models import Circular
from ...subscribers.tokens import TokenError
from ..helpers import attachment_download, settings
from ..i18n import use_subscriber_language
from . import _link_error, _signer, bp

assert SHARED_PATH == "/circulars/shared/"  # the routes below serve the digest's links


def _circular(token: str) -> Circular:
    circular_id = read_shared_token(_signer(), token)
    circular = db.session.get(Circular, circular_id)
    if circular is None or circular.number is None:
        abort(404)
    return circular


def _private(response: Any) -> Any:
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/circulars/shared/<token>")
def shared_circular(token: str) -> Any:
    try:
        circular = _circular(token)
    except TokenError as exc:
        return _link_error(exc)
    # ?lang= picks the version the digest was written for; anything else is the default.
    version = circular.version(request.args.get("lang")) or circular.version(
        circular.default_language
    )
    if version is None:
        abort(404)
    use_subscriber_language(version.language)
    sent_on = ""
    if circular.first_sent_at is not None:
        local = circular.first_sent_at.astimezone(ZoneInfo(settings().timezone)).date()
        sent_on = str(format_date(local, format="long"))
    html = render_template(
        "public/shared_circular.html",
        token=token,
        circular=circular,
        version=version,
        heading=wording(version.language).subject(circular.number, version.title),
        words=wording(version.language),
        direction=direction(version.language),
        body_html=markdown_to_html(version.body_markdown),
        attachments=circular.attachments_for(version.language),
        sent_on=sent_on,
    )
    return _private(make_response(html))


@bp.get("/circulars/shared/<token>/attachments/<int:attachment_id>")
def shared_attachment(token: str, attachment_id: int) -> Any:
    try:
        circular = _circular(token)
    except TokenError as exc:
        return _link_error(exc)
    return _private(attachment_download(circular.id, attachment_id))
