"""Pause, resume and cancel a send (or its schedule) from its page; senders and admins only."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, url_for
from flask_login import current_user

from ...extensions import db
from ...models import Send
from ...sending import control
from ...sending.service import send_progress
from ...tasks import START_SEND, enqueue
from ..forms import ConfirmForm
from ..helpers import sender_required
from . import bp


def _send_or_404(send_id: int) -> Send:
    send_row = db.session.get(Send, send_id)
    if send_row is None:
        abort(404)
    return send_row


def _back(send_id: int) -> Any:
    return redirect(url_for("admin.show_send", send_id=send_id))


@bp.post("/sends/<int:send_id>/pause")
@sender_required
def pause_send(send_id: int) -> Any:
    _send_or_404(send_id)
    if ConfirmForm().validate_on_submit():
        try:
            control.pause_send(
                db.session, send_id, f"Paused by {current_user.email}.", current_user.id
            )
        except control.ControlRefused as exc:
            flash(str(exc), "error")
        else:
            flash("Paused: workers stop within a second or two. Resume when ready.", "success")
    return _back(send_id)


@bp.post("/sends/<int:send_id>/resume")
@sender_required
def resume_send(send_id: int) -> Any:
    _send_or_404(send_id)
    if ConfirmForm().validate_on_submit():
        try:
            control.resume_send(db.session, send_id)
        except control.ControlRefused as exc:
            flash(str(exc), "error")
        else:
            enqueue(START_SEND, send_id)
            flash("Resumed. No one who already has it gets it again.", "success")
    return _back(send_id)


@bp.route("/sends/<int:send_id>/cancel", methods=["GET", "POST"])
@sender_required
def cancel_send(send_id: int) -> Any:
    """GET asks for confirmation; the POST from that page cancels."""
    send_row = _send_or_404(send_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        try:
            control.cancel_send(db.session, send_id, current_user.id)
        except control.ControlRefused as exc:
            flash(str(exc), "error")
        else:
            db.session.refresh(send_row)
            flash(
                f"Cancelled: {send_row.sent_count} sent, {send_row.failed_count} failed, "
                f"{send_row.cancelled_count} will not be sent.",
                "success",
            )
        return _back(send_id)
    if send_row.status not in control.CANCELLABLE:
        flash(f"Send {send_id} is {send_row.status} and can no longer be cancelled.", "error")
        return _back(send_id)
    return render_template(
        "admin/sends/cancel.html",
        send=send_row,
        counts=send_progress(db.session, send_id),
        form=form,
    )
