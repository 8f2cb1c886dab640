"""Sign-on statements in the admin: open and close a circular for endorsement, decide on the
endorsements, export them as CSV, and put a statement's "Endorsed by" list into a draft.

Anyone signed in may look; opening, closing, deciding and exporting (it holds
contact details) are for senders and admins. Inserting the list into a draft
is part of editing a draft, so editors may do it.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Response,
    abort,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, or_, select
from wtforms import IntegerField, SelectMultipleField, StringField
from wtforms.validators import DataRequired, NumberRange, Optional

from ...endorsements.countries import country_name
from ...endorsements.export import export_rows
from ...endorsements.service import (
    EndorsementRefused,
    close_endorsement,
    decide,
    endorsement_markdown,
    is_open,
    open_for_endorsement,
    status_counts,
)
from ...extensions import db
from ...models import Circular, Endorsement, EndorsementStatus, User, utcnow
from ...sending.control import ControlRefused, parse_send_time
from ..forms import single_line
from ..helpers import paginate, sender_required, settings
from . import bp

#: The filters of the list, in the order of its tabs; "confirmed" is the one needing action.
FILTERS = {
    EndorsementStatus.CONFIRMED: "Awaiting approval",
    EndorsementStatus.APPROVED: "Approved",
    EndorsementStatus.REJECTED: "Rejected",
    EndorsementStatus.PENDING_CONFIRMATION: "Email not confirmed yet",
}
ALL = "all"


class OpenForm(FlaskForm):
    closes_at = StringField("Closes at (optional)", validators=[Optional(), single_line])


class DecideForm(FlaskForm):
    ids = SelectMultipleField("Endorsements", coerce=int, validate_choice=False)
    action = StringField("Action", validators=[DataRequired()])


class InsertForm(FlaskForm):
    number = IntegerField("Circular No.", validators=[DataRequired(), NumberRange(min=1)])


def _circular_or_404(circular_id: int) -> Circular:
    circular = db.session.get(Circular, circular_id)
    if circular is None:
        abort(404)
    return circular


def _status_filter() -> str:
    wanted = request.args.get("status", EndorsementStatus.CONFIRMED)
    return wanted if wanted in FILTERS or wanted == ALL else EndorsementStatus.CONFIRMED


bp.add_app_template_global(is_open, "endorsement_is_open")


@bp.app_template_global("endorsement_sources")
def endorsement_sources() -> list[tuple[int, str, int]]:
    """(number, title, approved count) of every circular with approved endorsements."""
    rows = db.session.execute(
        select(Circular.number, Circular.title, func.count(Endorsement.id))
        .join(Endorsement, Endorsement.circular_id == Circular.id)
        .where(Endorsement.status == EndorsementStatus.APPROVED, Circular.number.is_not(None))
        .group_by(Circular.id, Circular.number, Circular.title)
        .order_by(Circular.number.desc())
    ).all()
    return [(int(number), title, int(count)) for number, title, count in rows]


@bp.get("/circulars/<int:circular_id>/endorsements")
def endorsements(circular_id: int) -> Any:
    circular = _circular_or_404(circular_id)
    if circular.is_draft:
        flash("A draft cannot be opened for endorsement; send it first.", "error")
        return redirect(url_for("admin.edit_circular", circular_id=circular.id))
    status = _status_filter()
    q = request.args.get("q", "").strip()[:200]
    query = select(Endorsement).where(Endorsement.circular_id == circular.id)
    if status != ALL:
        query = query.where(Endorsement.status == status)
    if q:
        pattern = f"%{q}%"
        query = query.where(
            or_(
                Endorsement.organisation.ilike(pattern),
                Endorsement.email.ilike(pattern),
                Endorsement.contact_name.ilike(pattern),
            )
        )
    page = paginate(query.order_by(Endorsement.org_key, Endorsement.country), per_page=50)
    deciders = {
        user.id: user.email
        for user in db.session.scalars(
            select(User).where(
                User.id.in_({row.decided_by_id for row in page.items if row.decided_by_id})
            )
        )
    }
    return render_template(
        "admin/endorsements/index.html",
        circular=circular,
        page=page,
        status=status,
        q=q,
        filters=FILTERS,
        counts=status_counts(db.session, circular.id),
        is_open=is_open(circular),
        open_form=OpenForm(),
        decide_form=DecideForm(),
        country_name=country_name,
        deciders=deciders,
        timezone=settings().timezone,
    )


def _back(circular: Circular) -> Any:
    return redirect(url_for("admin.endorsements", circular_id=circular.id))


@bp.post("/circulars/<int:circular_id>/endorsements/open")
@sender_required
def open_endorsements(circular_id: int) -> Any:
    circular = _circular_or_404(circular_id)
    form = OpenForm()
    if not form.validate_on_submit():
        flash("Nothing changed: the form had expired; try again.", "error")
        return _back(circular)
    closes_at = None
    text = (form.closes_at.data or "").strip()
    try:
        if text:
            closes_at = parse_send_time(text, settings().timezone)
        open_for_endorsement(circular, closes_at)
    except (ControlRefused, EndorsementRefused) as exc:
        db.session.rollback()
        flash(f"Not opened: {exc}", "error")
        return _back(circular)
    circular.updated_at = utcnow()
    db.session.commit()
    if not circular.in_archive:
        flash(
            "Open for endorsement, but the circular is kept out of the public archive: "
            "nobody can reach the form until it is shown there.",
            "error",
        )
    elif closes_at is None:
        flash("Open for endorsement until you close it.", "success")
    else:
        flash("Open for endorsement until the closing time.", "success")
    return _back(circular)


@bp.post("/circulars/<int:circular_id>/endorsements/close")
@sender_required
def close_endorsements(circular_id: int) -> Any:
    circular = _circular_or_404(circular_id)
    if FlaskForm().validate_on_submit():
        close_endorsement(circular)
        circular.updated_at = utcnow()
        db.session.commit()
        flash("Closed: the form no longer takes endorsements.", "success")
    return _back(circular)


@bp.post("/circulars/<int:circular_id>/endorsements/decide")
@sender_required
def decide_endorsements(circular_id: int) -> Any:
    circular = _circular_or_404(circular_id)
    form = DecideForm()
    status = request.form.get("status", EndorsementStatus.CONFIRMED)
    back = redirect(
        url_for(
            "admin.endorsements",
            circular_id=circular.id,
            status=status if status in FILTERS or status == ALL else None,
        )
    )
    if not form.validate_on_submit() or form.action.data not in ("approve", "reject"):
        flash("Nothing changed: the form was not valid; try again.", "error")
        return back
    if not form.ids.data:
        flash("Nothing changed: tick at least one endorsement.", "error")
        return back
    approve = form.action.data == "approve"
    outcome = decide(
        db.session, circular.id, form.ids.data, approve=approve, user_id=current_user.id
    )
    db.session.commit()
    verb = "Approved" if approve else "Rejected"
    message = f"{verb} {outcome.changed} endorsement{'s' if outcome.changed != 1 else ''}."
    if outcome.unchanged:
        message += f" {outcome.unchanged} already were."
    if outcome.unconfirmed:
        message += f" {outcome.unconfirmed} left as they are: their address is not confirmed yet."
    flash(message, "success" if outcome.changed else "error")
    return back


@bp.get("/circulars/<int:circular_id>/endorsements.csv")
@sender_required
def export_endorsements(circular_id: int) -> Any:
    circular = _circular_or_404(circular_id)
    status = _status_filter()
    rows = export_rows(
        db.session,
        circular.id,
        status=None if status == ALL else status,
        timezone=settings().timezone,
    )
    # Built from the number and the filter only: nothing typed by anyone reaches the header.
    name = f"circular-{circular.number or circular.id}-endorsements-{status}.csv"
    return Response(
        stream_with_context(rows),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@bp.post("/circulars/<int:circular_id>/insert-endorsements")
def insert_endorsements(circular_id: int) -> Any:
    """Append a statement's "Endorsed by" list (as it stands now) to the end of a draft's body."""
    circular = _circular_or_404(circular_id)
    back = redirect(url_for("admin.edit_circular", circular_id=circular.id))
    if not circular.is_draft:
        flash("A sent circular can no longer be changed.", "error")
        return back
    form = InsertForm()
    if not form.validate_on_submit():
        flash("Nothing inserted: choose a circular.", "error")
        return back
    source = db.session.scalar(select(Circular).where(Circular.number == form.number.data))
    if source is None:
        flash(f"Nothing inserted: there is no Circular No. {form.number.data}.", "error")
        return back
    markdown = endorsement_markdown(db.session, source)
    body = circular.body_markdown.rstrip()
    circular.body_markdown = f"{body}\n\n{markdown}" if body else markdown
    circular.revision += 1
    circular.updated_at = utcnow()
    db.session.commit()
    flash(
        f"Inserted the endorsement list of Circular No. {source.number} at the end of the body.",
        "success",
    )
    return back
