"""Streaming CSV export of subscribers, safe to open in a spreadsheet.

Columns: email, name, language, organization, status (the subscriber's),
lists (the short names of the lists they are on, unsubscribed ones left out,
separated by spaces), then one column per custom attribute.

The attribute columns are found by a first pass in the database over the
same selection (`jsonb_object_keys` on PostgreSQL, `json_each` on SQLite):
only the distinct key names come back, so memory holds the header, never the
rows, and every column is known before the first row is written. The rows
then stream with `yield_per`, with the list names fetched per batch.

Cells that a spreadsheet would run as a formula (starting with `=`, `+`, `-`,
`@`, a tab or a carriage return) get a leading `'` (OWASP "CSV injection").
This applies to every cell, the address included, so an address such as
`=x@example.org` comes out as `'=x@example.org`.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterator
from typing import IO, Any

from sqlalchemy import Select, func, select, true
from sqlalchemy.orm import Session

from ..models import MailingList, Subscriber, Subscription, SubscriptionStatus

COLUMNS = ("email", "name", "language", "organization", "status", "lists")
BATCH = 1000
_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: str) -> str:
    """A cell a spreadsheet shows as text: `'` before a formula's first character."""
    return f"'{value}" if value.startswith(_TRIGGERS) else value


def _ids(query: Select[Any]) -> Select[Any]:
    """The selection as a query of subscriber ids, whatever it selected."""
    description = query.column_descriptions
    if len(description) == 1 and description[0].get("expr") is Subscriber:
        query = query.with_only_columns(Subscriber.id)
    return query.order_by(None)


def attribute_keys(session: Session, ids: Select[Any]) -> list[str]:
    """The distinct attribute names of the selected subscribers, sorted (one query)."""
    chosen = select(ids.subquery().c[0])
    if session.get_bind().dialect.name == "postgresql":
        keys = select(func.jsonb_object_keys(Subscriber.attributes).label("key")).where(
            Subscriber.id.in_(chosen), func.jsonb_typeof(Subscriber.attributes) == "object"
        )
        query = select(keys.subquery().c.key).distinct()
    else:
        each = func.json_each(Subscriber.attributes).table_valued("key")
        query = (
            select(each.c.key)
            .select_from(Subscriber)
            .join(each, true())
            .where(Subscriber.id.in_(chosen), func.json_type(Subscriber.attributes) == "object")
            .distinct()
        )
    return sorted(str(key) for key in session.scalars(query))


def iter_csv(
    session: Session, query: Select[Any], *, attributes: list[str] | None = None
) -> Iterator[str]:
    """Yield the CSV text in pieces (one per batch of rows): for streamed responses.

    `query` selects subscriber ids, or Subscriber rows; its own ordering is
    replaced by the address. `attributes` fixes the attribute columns; by
    default they are every key found in the selection.
    """
    ids = _ids(query)
    keys = attribute_keys(session, ids) if attributes is None else attributes
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([neutralise(name) for name in (*COLUMNS, *keys)])
    rows = session.execute(
        select(
            Subscriber.id,
            Subscriber.email,
            Subscriber.name,
            Subscriber.language,
            Subscriber.organization,
            Subscriber.status,
            Subscriber.attributes,
        )
        .where(Subscriber.id.in_(ids.subquery().select()))
        .order_by(Subscriber.email)
        .execution_options(yield_per=BATCH)
    )
    for batch in rows.partitions():
        lists = _lists_of(session, [row.id for row in batch])
        for row in batch:
            attrs = row.attributes if isinstance(row.attributes, dict) else {}
            writer.writerow(
                [
                    neutralise(str(value))
                    for value in (
                        row.email,
                        row.name or "",
                        row.language or "",
                        row.organization or "",
                        row.status or "",
                        " ".join(lists.get(row.id, ())),
                        *(_cell(attrs.get(key)) for key in keys),
                    )
                ]
            )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():  # no rows: the header alone
        yield buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _lists_of(session: Session, subscriber_ids: list[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = defaultdict(list)
    for subscriber_id, slug in session.execute(
        select(Subscription.subscriber_id, MailingList.slug)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(
            Subscription.subscriber_id.in_(subscriber_ids),
            Subscription.status != SubscriptionStatus.UNSUBSCRIBED,
        )
        .order_by(MailingList.slug)
    ):
        found[subscriber_id].append(slug)
    return found


def write_csv(
    session: Session,
    query: Select[Any],
    out: IO[str],
    *,
    attributes: list[str] | None = None,
) -> None:
    """Write the selected subscribers as CSV to a text stream (see `iter_csv`)."""
    for piece in iter_csv(session, query, attributes=attributes):
        out.write(piece)


def list_members(list_id: int, status: str | None = SubscriptionStatus.CONFIRMED) -> Select[Any]:
    """The ids of a list's subscribers, with that subscription status (None: any)."""
    query = select(Subscription.subscriber_id).where(Subscription.list_id == list_id)
    if status is not None:
        query = query.where(Subscription.status == status)
    return query
