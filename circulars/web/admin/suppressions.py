"""Admin pages for the suppression list: browse, search, block an address or domain,
remove an entry, and the record of overrides (who put a suppressed address back, and why)."""

from __future__ import annotations

import contextlib
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, or_, select
from wtforms import StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from ...extensions import db
from ...models import (
    MailingList,
    Subscriber,
    Suppression,
    SuppressionKind,
    SuppressionOverride,
    SuppressionReason,
    User,
)
from ...subscribers.addresses import InvalidAddress, normalise_email
from ...subscribers.suppression import (
    REASON_LABELS,
    hash_value,
    normalise_domain,
    suppress,
    unsuppress,
)
from ..forms import ConfirmForm, single_line
from ..helpers import paginate, sender_required
from . import bp


class BlockForm(FlaskForm):
    value = StringField(
        "Address or domain",
        validators=[DataRequired("Enter an address or a domain."), Length(max=320), single_line],
    )
    note = TextAreaField("Note (why)", validators=[Length(max=2000)])


class RemoveForm(FlaskForm):
    reason = StringField("Why remove it?", validators=[Length(max=500), single_line])


def _affected(kind: str, value: str | None) -> int:
    """How many subscribers this entry keeps from being mailed."""
    if value is None:
        return 0
    if kind == SuppressionKind.ADDRESS:
        return int(db.session.scalar(select(func.count()).where(Subscriber.email == value)) or 0)
    return int(
        db.session.scalar(
            select(func.count()).where(Subscriber.domain == value, ~Subscriber.suppression_exempt)
        )
        or 0
    )


def _search(q: str) -> Any:
    """Entries matching the search: a part of the value, or an exact address by its hash
    (which finds deleted entries, whose address is no longer stored)."""
    query = select(Suppression, User.email).outerjoin(User, User.id == Suppression.created_by_id)
    if not q:
        return query
    needle = q.strip().lower()
    matches = [Suppression.value.contains(needle, autoescape=True)]
    try:
        matches.append(Suppression.value_hash == hash_value(normalise_email(needle)))
    except InvalidAddress:
        with contextlib.suppress(InvalidAddress):
            matches.append(Suppression.value_hash == hash_value(normalise_domain(needle)))
    return query.where(or_(*matches))


def _render(form: BlockForm, status: int = 200) -> Any:
    q = request.args.get("q", "").strip()[:320]
    kind = request.args.get("kind", "")
    reason = request.args.get("reason", "")
    query = _search(q)
    if kind in set(SuppressionKind):
        query = query.where(Suppression.kind == kind)
    if reason in set(SuppressionReason):
        query = query.where(Suppression.reason == reason)
    page = paginate(query.order_by(Suppression.id.desc()), per_page=50, scalars=False)
    return (
        render_template(
            "admin/suppressions/index.html",
            page=page,
            q=q,
            kind=kind,
            reason=reason,
            form=form,
            reasons=REASON_LABELS,
        ),
        status,
    )


@bp.get("/suppressions")
def suppressions() -> Any:
    return _render(BlockForm())


@bp.post("/suppressions")
@sender_required
def add_suppression() -> Any:
    form = BlockForm()
    if not form.validate_on_submit():
        return _render(form, 400)
    raw = (form.value.data or "").strip()
    is_address = "@" in raw and not raw.startswith("@")
    try:
        if is_address:
            row = suppress(
                db.session,
                email=raw,
                reason=SuppressionReason.BLOCKED,
                note=form.note.data or "",
                user_id=current_user.id,
            )
        else:
            row = suppress(
                db.session,
                domain=raw,
                reason=SuppressionReason.BLOCKED,
                note=form.note.data or "",
                user_id=current_user.id,
            )
    except InvalidAddress as exc:
        db.session.rollback()
        what = "address" if is_address else "domain"
        form.value.errors.append(f"Not a valid {what}: {exc}")
        return _render(form, 400)
    affected = _affected(row.kind, row.value)
    db.session.commit()
    shown = row.value or raw
    kept = (
        "" if row.reason == SuppressionReason.BLOCKED else f" (kept as {REASON_LABELS[row.reason]})"
    )
    flash(
        f"Blocked {shown}{kept}: {affected} subscriber{'s' if affected != 1 else ''} affected. "
        "Nothing more will be sent to "
        + ("this address." if row.kind == SuppressionKind.ADDRESS else "this domain."),
        "success",
    )
    return redirect(url_for("admin.suppressions"))


def _entry_or_404(suppression_id: int) -> Suppression:
    row = db.session.get(Suppression, suppression_id)
    if row is None:
        abort(404)
    return row


@bp.route("/suppressions/<int:suppression_id>/remove", methods=["GET", "POST"])
@sender_required
def remove_suppression(suppression_id: int) -> Any:
    row = _entry_or_404(suppression_id)
    form = RemoveForm()
    if form.validate_on_submit():
        shown = row.value or "the deleted address"
        unsuppress(
            db.session,
            row.id,
            current_user.id,
            reason=form.reason.data or "removed from the suppression list",
        )
        db.session.commit()
        flash(f"Removed {shown} from the suppression list.", "success")
        return redirect(url_for("admin.suppressions"))
    return render_template(
        "admin/suppressions/remove.html",
        row=row,
        form=form,
        affected=_affected(row.kind, row.value),
        reasons=REASON_LABELS,
    ), 200 if request.method == "GET" else 400


@bp.get("/suppressions/overrides")
def suppression_overrides() -> Any:
    query = (
        select(SuppressionOverride, User.email, MailingList)
        .outerjoin(User, User.id == SuppressionOverride.user_id)
        .outerjoin(MailingList, MailingList.id == SuppressionOverride.list_id)
        .order_by(SuppressionOverride.id.desc())
    )
    q = request.args.get("q", "").strip()[:320]
    if q:
        query = query.where(SuppressionOverride.email.contains(q.lower(), autoescape=True))
    page = paginate(query, per_page=50, scalars=False)
    return render_template(
        "admin/suppressions/overrides.html",
        page=page,
        q=q,
        reasons=REASON_LABELS,
        confirm_form=ConfirmForm(),
    )
