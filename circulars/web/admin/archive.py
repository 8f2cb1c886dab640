"""A sent circular's topic and place in the public archive, changed from its page.

The rest of a sent circular is part of the record and frozen; whether the public
sees it is not: a circular may have to be withdrawn from the archive after the
fact. Senders and admins only, as it changes what the organisation publishes.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, url_for

from ...extensions import db
from ...models import Circular, utcnow
from ..forms import ArchiveSettingsForm
from ..helpers import sender_required
from . import bp


@bp.post("/circulars/<int:circular_id>/archive")
@sender_required
def archive_settings(circular_id: int) -> Any:
    circular = db.session.get(Circular, circular_id)
    if circular is None:
        abort(404)
    back = redirect(url_for("admin.edit_circular", circular_id=circular.id))
    if circular.is_draft:
        flash("A draft's archive settings are on its form.", "error")
        return back
    form = ArchiveSettingsForm()
    if not form.validate_on_submit():
        errors = [error for messages in form.errors.values() for error in messages]
        flash("Nothing changed: " + " ".join(str(error) for error in errors), "error")
        return back
    circular.topic = (form.topic.data or "").strip() or None
    circular.in_archive = bool(form.in_archive.data)
    circular.updated_at = utcnow()
    db.session.commit()
    if circular.in_archive:
        flash("Saved: the circular is in the public archive.", "success")
    else:
        flash("Saved: the circular is kept out of the public archive.", "success")
    return back
