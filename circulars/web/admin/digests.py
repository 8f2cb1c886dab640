"""Digests in the admin: a list's next digest (preview), and the history of digest runs."""

from __future__ import annotations

from typing import Any

from flask import abort, render_template, request
from flask_login import current_user
from sqlalchemy import func, select

from ...digests.preview import preview
from ...digests.runs import FREQUENCIES
from ...digests.schedule import Schedule
from ...extensions import db
from ...models import (
    DigestDelivery,
    DigestDeliveryStatus,
    DigestRun,
    MailingList,
    utcnow,
)
from ..helpers import paginate
from . import _list_or_404, _send_context, bp

PER_PAGE = 50


def _frequency() -> str:
    value = request.args.get("frequency", "weekly")
    return value if value in FREQUENCIES else "weekly"


@bp.get("/lists/<slug>/digests")
def list_digests(slug: str) -> Any:
    """The next weekly or monthly digest of a list, shown for a sample reader, and its runs."""
    mailing_list = _list_or_404(slug)
    frequency = _frequency()
    email = request.args.get("subscriber", "").strip()
    shown = preview(
        db.session,
        mailing_list,
        frequency,
        _send_context(),
        utcnow(),
        subscriber_email=email or None,
        viewer_email=current_user.email,
    )
    runs = list(
        db.session.scalars(
            select(DigestRun)
            .where(DigestRun.list_id == mailing_list.id)
            .order_by(DigestRun.period_end.desc(), DigestRun.id.desc())
            .limit(10)
        )
    )
    return render_template(
        "admin/digests/list.html",
        mailing_list=mailing_list,
        frequency=frequency,
        frequencies=FREQUENCIES,
        schedule=Schedule.of(mailing_list),
        shown=shown,
        asked=email,
        runs=runs,
    )


@bp.get("/digests")
def digest_runs() -> Any:
    """Every digest run, newest period first, with its counts."""
    query = (
        select(DigestRun)
        .join(MailingList)
        .order_by(DigestRun.period_end.desc(), DigestRun.id.desc())
    )
    slug = request.args.get("list", "").strip()
    if slug:
        query = query.where(MailingList.slug == slug)
    page = paginate(query, PER_PAGE)
    return render_template("admin/digests/index.html", page=page, slug=slug)


@bp.get("/digests/<int:run_id>")
def digest_run(run_id: int) -> Any:
    """One run: its period and counts, and its recipients (50 a page, failures first)."""
    run = db.session.get(DigestRun, run_id)
    if run is None:
        abort(404)
    counts = dict(
        db.session.execute(
            select(DigestDelivery.status, func.count())
            .where(DigestDelivery.run_id == run.id)
            .group_by(DigestDelivery.status)
        ).all()
    )
    status = request.args.get("status", "")
    query = select(DigestDelivery).where(DigestDelivery.run_id == run.id)
    if status in {item.value for item in DigestDeliveryStatus}:
        query = query.where(DigestDelivery.status == status)
    page = paginate(query.order_by(DigestDelivery.id), PER_PAGE)
    return render_template(
        "admin/digests/show.html",
        run=run,
        counts=counts,
        page=page,
        status=status,
        statuses=[item.value for item in DigestDeliveryStatus],
    )
