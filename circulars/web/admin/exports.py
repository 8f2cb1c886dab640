"""Exporting a list's subscribers as CSV from the admin, streamed as it is read."""

from __future__ import annotations

from typing import Any

from flask import Response, request, stream_with_context

from ...extensions import db
from ...models import SubscriptionStatus, utcnow
from ...storage import safe_filename
from ...subscribers.export import iter_csv, list_members
from ..helpers import sender_required
from . import _list_or_404, bp

STATUSES = {"confirmed", "unconfirmed", "unsubscribed", "all"}


@bp.get("/lists/<slug>/export.csv")
@sender_required
def export_list(slug: str) -> Any:
    """The list's subscribers (confirmed by default; ?status=… for others) as a download."""
    mailing_list = _list_or_404(slug)
    status = request.args.get("status", SubscriptionStatus.CONFIRMED)
    if status not in STATUSES:
        status = SubscriptionStatus.CONFIRMED
    query = list_members(mailing_list.id, None if status == "all" else status)
    name = safe_filename(f"{mailing_list.slug}-{status}-{utcnow():%Y-%m-%d}.csv", "export.csv")
    body = stream_with_context(iter_csv(db.session, query))
    return Response(
        body,
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )
