"""What every page shares: the signed-in user, settings, filters, headers, errors."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from flask import Flask, abort, current_app, render_template, request, send_file
from flask_babel import gettext as _
from flask_login import current_user, login_required
from flask_wtf.csrf import CSRFError
from sqlalchemy import Select, func, select
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from ..config import Settings
from ..extensions import db, login_manager
from ..mail.branding import Branding
from ..models import Attachment, User
from ..paging import PageNumbers
from ..storage import FileStore, format_size
from ..wiring import branding, default_branding

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)


def settings() -> Settings:
    return current_app.extensions["circulars.settings"]  # type: ignore[no-any-return]


def files() -> FileStore:
    return current_app.extensions["circulars.files"]  # type: ignore[no-any-return]


def attachment_download(circular_id: int, attachment_id: int) -> Any:
    """One of this circular's attachments, always as a download under its safe name.

    Sandboxed and never inline, so an uploaded HTML or SVG file cannot run in
    our origin; any other circular's attachment id is a 404.
    """
    attachment = db.session.get(Attachment, attachment_id)
    if attachment is None or attachment.circular_id != circular_id:
        abort(404)
    response = send_file(
        files().path_for(attachment.sha256),
        mimetype=attachment.content_type,
        as_attachment=True,
        download_name=attachment.filename,
    )
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


def page_branding(current: Settings) -> Branding:
    """The saved branding, or the environment's when the database cannot say.

    An error page must render while the database is down, and so must a page of an
    instance whose database is not migrated yet.
    """
    try:
        return branding(current, db.session())
    except SQLAlchemyError as exc:
        db.session.rollback()
        log.warning("branding: using the ORG_* settings, the database did not answer: %s", exc)
        return default_branding(current)


def sender_required(view: F) -> F:
    """Only admins and senders may send or change who receives what."""

    @wraps(view)
    @login_required
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not current_user.can_send():
            abort(403)
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


@dataclass
class Page(PageNumbers):
    items: list[Any]
    page: int
    per_page: int
    total: int


def paginate(query: Select[Any], per_page: int = 25, *, scalars: bool = True) -> Page:
    page = request.args.get("page", 1, type=int) or 1
    page = max(1, page)
    total = (
        db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    )
    paged = query.limit(per_page).offset((page - 1) * per_page)
    items = list(db.session.scalars(paged)) if scalars else list(db.session.execute(paged))
    return Page(items, page, per_page, int(total))


def register_helpers(app: Flask) -> None:
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to continue."
    login_manager.login_message_category = "info"

    @login_manager.user_loader
    def load_user(user_id: str) -> User | None:
        user = db.session.get(User, int(user_id)) if user_id.isdigit() else None
        return user if user is not None and user.active else None

    @app.context_processor
    def inject() -> dict[str, Any]:
        current = settings()
        return {"settings": current, "org": page_branding(current)}

    @app.template_filter("filesize")
    def _filesize(size: int) -> str:
        return format_size(size)

    @app.template_filter("when")
    def _when(value: Any, fmt: str = "%-d %b %Y, %H:%M") -> str:
        if value is None:
            return "—"
        return str(value.astimezone(ZoneInfo(settings().timezone)).strftime(fmt))

    @app.after_request
    def security_headers(response: Any) -> Any:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "frame-ancestors 'self'; form-action 'self'; base-uri 'none'",
        )
        return response

    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError) -> Any:
        return (
            render_template(
                "error.html",
                code=400,
                title=_("The form has expired"),
                message=_(
                    "For your security the form could not be accepted. "
                    "Go back, reload the page and try again."
                ),
            ),
            400,
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        # Public pages show these too, in the reader's language (admin pages are English).
        messages = {
            403: (_("Not allowed"), _("Your role does not allow this. Ask an administrator.")),
            404: (_("Not found"), _("There is nothing at this address.")),
            413: (
                _("File too large"),
                _(
                    "Uploads may be at most %(size)s.",
                    size=format_size(settings().max_upload_size),
                ),
            ),
            429: (
                _("Too many requests"),
                _("Please wait a few minutes, then try again."),
            ),
        }
        title, message = messages.get(error.code or 500, (error.name, error.description or ""))
        return render_template(
            "error.html", code=error.code, title=title, message=message
        ), error.code

    @app.get("/healthz")
    def healthz() -> tuple[str, int]:
        db.session.execute(select(1))
        return "ok", 200
