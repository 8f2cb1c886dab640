"""Admin pages for bounces and complaints: what came back, how it was read, the raw message."""

from __future__ import annotations

from typing import Any

from flask import abort, render_template, request, send_file
from sqlalchemy import select

from ...extensions import db
from ...models import Bounce, BounceKind
from ...subscribers.bounces import counts_by_kind, raw_file
from ..helpers import paginate, sender_required, settings
from . import bp

KIND_LABELS: dict[str, str] = {
    BounceKind.HARD: "hard bounce",
    BounceKind.SOFT: "soft bounce",
    BounceKind.COMPLAINT: "complaint",
    BounceKind.UNKNOWN: "not a bounce / unreadable",
}


@bp.app_template_global("bounce_counts")
def bounce_counts(send_id: int) -> dict[str, int]:
    """Bounces per kind for one send, for the send page."""
    return counts_by_kind(db.session, send_id)


@bp.get("/bounces")
def bounces() -> Any:
    kind = request.args.get("kind", "")
    q = request.args.get("q", "").strip().lower()[:320]
    query = select(Bounce)
    if kind in set(BounceKind):
        query = query.where(Bounce.kind == kind)
    if q:
        query = query.where(Bounce.email.contains(q, autoescape=True))
    page = paginate(query.order_by(Bounce.id.desc()), per_page=50)
    return render_template("admin/bounces/index.html", page=page, kind=kind, q=q, kinds=KIND_LABELS)


@bp.get("/bounces/<int:bounce_id>/raw")
@sender_required
def bounce_raw(bounce_id: int) -> Any:
    """The message as received, as a download: never rendered, since anyone can send one."""
    bounce = db.session.get(Bounce, bounce_id)
    path = raw_file(settings().bounces_path, bounce.raw_path) if bounce is not None else None
    if path is None:
        abort(404)
    return send_file(
        path,
        mimetype="application/octet-stream",
        as_attachment=True,
        download_name=f"bounce-{bounce_id}.eml",
        max_age=0,
    )
