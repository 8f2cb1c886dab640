"""The organisation's logo, served to mail clients and pages by content hash."""

from __future__ import annotations

from typing import Any

from flask import abort, send_file

from ...branding_settings import find_logo
from ...extensions import db
from ...images import EXTENSIONS
from ..helpers import files
from . import bp

#: A logo's address names its content, so it never changes: caches may keep it for a year.
ONE_YEAR = 365 * 24 * 3600


@bp.get("/branding/logo/<name>")
def branding_logo(name: str) -> Any:
    """Only logos that were saved on the branding page (the current one or an earlier one,
    which mail already sent still shows); never any other file of the store."""
    sha256, _, extension = name.partition(".")
    logo = find_logo(db.session, sha256)
    if logo is None or EXTENSIONS.get(logo.content_type) != extension:
        abort(404)
    db.session.rollback()
    response = send_file(
        files().path_for(logo.sha256),
        mimetype=logo.content_type,
        max_age=ONE_YEAR,
        etag=logo.sha256,
        conditional=True,
    )
    response.headers["Cache-Control"] = f"public, max-age={ONE_YEAR}, immutable"
    return response
