"""Admin report of a send (counts, reasons, the sending rate over time) and its CSV."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Response, abort, render_template, stream_with_context

from ...extensions import db
from ...models import BounceKind, Send
from ...sending.reports import CSV_COLUMNS, Timeline, iter_deliveries_csv, send_report
from ...storage import safe_filename
from ..helpers import sender_required
from . import bp

# The chart's drawing box, in SVG user units; the page scales it to the width available.
CHART_HEIGHT = 120
BAR_WIDTH = 10
BAR_GAP = 2

BOUNCE_LABELS: dict[str, str] = {
    BounceKind.HARD: "Hard bounces",
    BounceKind.SOFT: "Soft bounces",
    BounceKind.COMPLAINT: "Complaints",
    BounceKind.UNKNOWN: "Other replies",
}


@dataclass(frozen=True)
class Bar:
    x: int
    y: float
    height: float
    count: int
    start: Any


def bars(line: Timeline) -> list[Bar]:
    """Bar geometry for the inline SVG chart: heights relative to the busiest bucket."""
    peak = line.peak or 1
    drawn = []
    for index, bucket in enumerate(line.buckets):
        height = CHART_HEIGHT * bucket.count / peak
        # A bucket with a few messages next to a huge peak still shows as a sliver.
        if bucket.count and height < 1:
            height = 1.0
        drawn.append(
            Bar(
                x=index * (BAR_WIDTH + BAR_GAP),
                y=round(CHART_HEIGHT - height, 2),
                height=round(height, 2),
                count=bucket.count,
                start=bucket.start,
            )
        )
    return drawn


def time_format(line: Timeline) -> str:
    """Labels precise enough for the bucket size, with the date when the send spans days."""
    span_days = len(line.buckets) * line.seconds >= 86400
    clock = "%H:%M:%S" if line.seconds < 60 else "%H:%M"
    return f"%-d %b {clock}" if span_days else clock


def _send_or_404(send_id: int) -> Send:
    found = db.session.get(Send, send_id)
    if found is None:
        abort(404)
    return found


@bp.get("/sends/<int:send_id>/report")
@sender_required
def send_report_page(send_id: int) -> Any:
    send_row = _send_or_404(send_id)
    report = send_report(db.session, send_row)
    line = report.timeline
    return render_template(
        "admin/sends/report.html",
        send=send_row,
        report=report,
        bars=bars(line),
        chart_width=max(1, len(line.buckets) * (BAR_WIDTH + BAR_GAP) - BAR_GAP),
        chart_height=CHART_HEIGHT,
        bar_width=BAR_WIDTH,
        time_format=time_format(line),
        bounce_labels=BOUNCE_LABELS,
        csv_columns=CSV_COLUMNS,
    )


@bp.get("/sends/<int:send_id>/deliveries.csv")
@sender_required
def send_deliveries_csv(send_id: int) -> Any:
    """Every delivery of the send, streamed as it is read (sending.reports)."""
    send_row = _send_or_404(send_id)
    number = send_row.circular.number
    name = safe_filename(
        f"send-{send_row.id}-circular-{number if number is not None else 'draft'}.csv",
        "deliveries.csv",
    )
    body = stream_with_context(iter_deliveries_csv(db.session, send_row.id))
    return Response(
        body,
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )
