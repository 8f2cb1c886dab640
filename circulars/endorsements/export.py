"""The endorsements of a circular as CSV, safe to open in a spreadsheet.

Every cell goes through the subscriber export's `neutralise`: a cell starting
with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, so an
organisation called `=HYPERLINK(...)` stays text (OWASP "CSV injection").
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import Endorsement
from ..subscribers.export import neutralise
from .countries import country_name

COLUMNS = (
    "organisation",
    "country_code",
    "country",
    "contact_name",
    "email",
    "comment",
    "status",
    "submissions",
    "submitted_at",
    "confirmed_at",
    "decided_at",
)


def _when(value: datetime | None, zone: ZoneInfo) -> str:
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M") if value else ""


def export_rows(
    session: Session, circular_id: int, *, status: str | None = None, timezone: str = "UTC"
) -> Iterator[str]:
    """CSV text, a header then one line per endorsement (sorted by organisation), in pieces."""
    zone = ZoneInfo(timezone)
    query = select(Endorsement).where(Endorsement.circular_id == circular_id)
    if status:
        query = query.where(Endorsement.status == status)
    query = query.order_by(Endorsement.org_key, Endorsement.country)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for row in session.scalars(query.execution_options(yield_per=500)):
        writer.writerow(
            neutralise(cell)
            for cell in (
                row.organisation,
                row.country,
                country_name(row.country),
                row.contact_name,
                row.email,
                row.comment,
                row.status,
                str(row.submissions),
                _when(row.created_at, zone),
                _when(row.confirmed_at, zone),
                _when(row.decided_at, zone),
            )
        )
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
