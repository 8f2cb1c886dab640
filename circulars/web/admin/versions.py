"""A draft's language versions: add, edit and remove them, the default language, and
which version each attachment goes with.

The rules (known languages, one version per language, one-line titles, nothing
changes once sent) live in circulars/language_versions.py; these views turn a
refusal into a message next to the field or a flash, and change nothing.
"""

from __future__ import annotations

import hashlib
from typing import Any

from flask import abort, flash, redirect, render_template, url_for
from sqlalchemy.exc import IntegrityError

from ...extensions import db
from ...language_versions import (
    TranslationRefused,
    add_version,
    remove_version,
    set_attachment_language,
    set_default_language,
    update_version,
)
from ...languages import CIRCULAR_LANGUAGES, circular_language, circular_language_name, direction
from ...models import Attachment, Circular
from ..forms import ConfirmForm, LanguageChoiceForm, VersionForm
from . import bp


@bp.context_processor
def _language_helpers() -> dict[str, Any]:
    """For the draft page's Languages card and attachment choices."""
    return {
        "language_name": circular_language_name,
        "circular_languages": CIRCULAR_LANGUAGES,
        "language_direction": direction,
    }


def _circular_or_404(circular_id: int) -> Circular:
    circular = db.session.get(Circular, circular_id)
    if circular is None:
        abort(404)
    return circular


def _back(circular: Circular, anchor: str = "languages") -> Any:
    return redirect(url_for("admin.edit_circular", circular_id=circular.id) + f"#{anchor}")


def _sent(circular: Circular) -> Any:
    flash("This circular has been sent; its language versions can no longer change.", "error")
    return _back(circular)


def _digest(title: str, body: str) -> str:
    """What an edit form started from, to tell whether the version changed since. A form
    from before this check carries none and is saved as before."""
    return hashlib.sha256(f"{title}\0{body}".encode()).hexdigest()


def _form_page(circular: Circular, form: VersionForm, language: str | None, status: int) -> Any:
    available = [
        (code, name) for code, name in CIRCULAR_LANGUAGES.items() if code not in circular.languages
    ]
    return (
        render_template(
            "admin/circulars/version.html",
            circular=circular,
            form=form,
            language=language,
            available=available,
            direction=direction,
        ),
        status,
    )


@bp.route("/circulars/<int:circular_id>/versions/new", methods=["GET", "POST"])
def new_version(circular_id: int) -> Any:
    circular = _circular_or_404(circular_id)
    if not circular.is_draft:
        return _sent(circular)
    form = VersionForm()
    if form.validate_on_submit():
        try:
            item = add_version(
                db.session, circular, form.language.data, form.title.data, form.body.data
            )
            db.session.commit()
        except TranslationRefused as exc:
            db.session.rollback()
            circular = _circular_or_404(circular_id)
            form.language.errors = [*form.language.errors, str(exc)]
        except IntegrityError:
            # Someone added the same language at the same moment; theirs stays.
            db.session.rollback()
            circular = _circular_or_404(circular_id)
            form.language.errors = [
                *form.language.errors,
                "Someone else added this language just now; edit their version instead.",
            ]
        else:
            flash(f"{circular_language_name(item.language)} version added.", "success")
            return _back(circular)
    elif not form.is_submitted():
        return _form_page(circular, form, None, 200)
    return _form_page(circular, form, None, 400)


@bp.route("/circulars/<int:circular_id>/versions/<language>", methods=["GET", "POST"])
def edit_version(circular_id: int, language: str) -> Any:
    circular = _circular_or_404(circular_id)
    version = circular.version(circular_language(language))
    if version is None:
        abort(404)
    if not circular.is_draft:
        return _sent(circular)
    form = VersionForm()
    if not form.is_submitted():
        form.title.data, form.body.data = version.title, version.body_markdown
        form.base.data = _digest(version.title, version.body_markdown)
        return _form_page(circular, form, version.language, 200)
    if form.validate_on_submit():
        if form.base.data and form.base.data != _digest(version.title, version.body_markdown):
            # Someone saved this version in between: keep theirs, show this text for copying.
            form.title.errors = [
                *form.title.errors,
                "Someone else saved this version after you opened it. Nothing was overwritten: "
                "reload the page to see their version, and copy your changes from below.",
            ]
            return _form_page(circular, form, version.language, 409)
        try:
            update_version(db.session, circular, version.language, form.title.data, form.body.data)
        except TranslationRefused as exc:
            db.session.rollback()
            circular = _circular_or_404(circular_id)
            form.title.errors = [*form.title.errors, str(exc)]
        else:
            db.session.commit()
            flash(f"{circular_language_name(version.language)} version saved.", "success")
            return _back(circular)
    return _form_page(circular, form, version.language, 400)


@bp.post("/circulars/<int:circular_id>/versions/<language>/delete")
def delete_version(circular_id: int, language: str) -> Any:
    circular = _circular_or_404(circular_id)
    if ConfirmForm().validate_on_submit():
        try:
            remove_version(db.session, circular, language)
        except TranslationRefused as exc:
            db.session.rollback()
            flash(f"Not removed: {exc}", "error")
        else:
            db.session.commit()
            flash(f"{circular_language_name(language)} version removed.", "success")
    return _back(_circular_or_404(circular_id))


@bp.post("/circulars/<int:circular_id>/default-language")
def default_language(circular_id: int) -> Any:
    circular = _circular_or_404(circular_id)
    form = LanguageChoiceForm()
    if form.validate_on_submit():
        try:
            set_default_language(db.session, circular, form.language.data)
        except TranslationRefused as exc:
            db.session.rollback()
            flash(f"Nothing changed: {exc}", "error")
        else:
            db.session.commit()
            name = circular_language_name(circular.default_language)
            flash(f"The default version is now {name}.", "success")
    else:
        flash("Nothing changed: the form had expired; try again.", "error")
    return _back(_circular_or_404(circular_id))


@bp.post("/circulars/<int:circular_id>/attachments/<int:attachment_id>/language")
def attachment_language(circular_id: int, attachment_id: int) -> Any:
    circular = _circular_or_404(circular_id)
    attachment = db.session.get(Attachment, attachment_id)
    if attachment is None or attachment.circular_id != circular.id:
        abort(404)
    form = LanguageChoiceForm()
    if form.validate_on_submit():
        try:
            set_attachment_language(db.session, circular, attachment, form.language.data)
        except TranslationRefused as exc:
            db.session.rollback()
            flash(f"Nothing changed: {exc}", "error")
        else:
            db.session.commit()
            which = (
                "every version"
                if attachment.language is None
                else f"the {circular_language_name(attachment.language)} version"
            )
            flash(f"{attachment.filename} now goes with {which}.", "success")
    else:
        flash("Nothing changed: the form had expired; try again.", "error")
    return _back(_circular_or_404(circular_id), "attachments")
