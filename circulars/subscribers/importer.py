"""Streaming CSV import of subscribers into a list.

The file is read row by row and written in chunks, so memory does not grow
with its size. A bad row is reported with its line number and skipped; a file
that is not a UTF-8 CSV with an `email` header is refused whole, and because
the import runs in one transaction, a refusal found late leaves nothing behind.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..models import MailingList, Subscriber, Subscription, SubscriptionStatus, utcnow
from .addresses import InvalidAddress, normalise_email

KNOWN_COLUMNS = ("email", "name", "language", "organization")
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})?$")
CHUNK = 1000


class ImportRefused(ValueError):
    """The whole file is unusable; nothing was imported."""


@dataclass(frozen=True)
class RejectedRow:
    line: int
    email: str
    reason: str


@dataclass
class ImportReport:
    added: int = 0  # new subscribers created
    subscribed: int = 0  # existing or new subscribers newly put on the list
    already: int = 0  # already on the list
    kept_unsubscribed: int = 0  # had left the list; an import does not bring them back
    duplicates: int = 0  # the same address again further down the file
    rejected: list[RejectedRow] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return self.subscribed + self.already + self.kept_unsubscribed


@dataclass(frozen=True)
class Row:
    line: int
    email: str
    name: str
    language: str
    organization: str
    attributes: dict[str, Any]


def _refuse_binary(binary: IO[bytes]) -> None:
    """Say "binary" rather than "not UTF-8" for a spreadsheet or an image sent by mistake."""
    if not binary.seekable():
        return
    start = binary.tell()
    head = binary.read(8192)
    binary.seek(start)
    if b"\x00" in head or head.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
        raise ImportRefused(
            "The file holds binary data, not CSV text (is it a spreadsheet? Save it as CSV UTF-8)."
        )


def _decoded_lines(binary: IO[bytes]) -> Generator[str, None, None]:
    """Decode line by line, so an encoding error names the line that holds it."""
    _refuse_binary(binary)
    line = 0
    while raw := binary.readline():
        line += 1
        try:
            text = raw.decode("utf-8-sig" if line == 1 else "utf-8")
        except UnicodeDecodeError:
            raise ImportRefused(
                f"The file is not UTF-8 text (line {line} has bytes that are not UTF-8). "
                'Save it as "CSV UTF-8" and try again.'
            ) from None
        if "\x00" in text:
            raise ImportRefused("The file holds binary data, not CSV text.")
        if text:  # a file holding only a byte-order mark is empty
            yield text


def read_rows(binary: IO[bytes], report: ImportReport) -> Iterator[Row]:
    """Yield valid rows; record invalid ones in `report`; raise ImportRefused for the file."""
    lines = _decoded_lines(binary)
    try:
        yield from _parse(csv.reader(lines, strict=True), report)
    finally:
        lines.close()


def _parse(reader: Any, report: ImportReport) -> Iterator[Row]:
    try:
        header = next(reader)
    except StopIteration:
        raise ImportRefused("The file is empty.") from None
    except csv.Error as exc:
        raise ImportRefused(f"The file is not CSV: {exc}.") from None
    columns = [column.strip().lower() for column in header]
    if "email" not in columns:
        raise ImportRefused(
            "The first line must be a header naming the columns, with at least `email` "
            "(for example: email,name,language,organization)."
        )
    if len(set(columns)) != len(columns):
        raise ImportRefused("The header names a column twice.")
    position = {name: columns.index(name) for name in KNOWN_COLUMNS if name in columns}
    extras = [(i, header[i].strip()) for i, name in enumerate(columns) if name not in KNOWN_COLUMNS]

    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            report.rejected.append(RejectedRow(reader.line_num, "", f"not valid CSV: {exc}"))
            continue
        line = reader.line_num
        if not any(value.strip() for value in values):
            continue
        if len(values) != len(columns):
            report.rejected.append(
                RejectedRow(line, "", f"has {len(values)} fields, the header has {len(columns)}")
            )
            continue

        def cell(name: str, row: list[str] = values) -> str:
            return row[position[name]].strip() if name in position else ""

        raw_email = cell("email")
        try:
            email = normalise_email(raw_email)
        except InvalidAddress as exc:
            report.rejected.append(RejectedRow(line, raw_email, f"invalid address: {exc}"))
            continue
        language = cell("language").lower() or "en"
        if not LANGUAGE_RE.match(language):
            report.rejected.append(
                RejectedRow(line, raw_email, f"unknown language code {language!r}")
            )
            continue
        name, organization = cell("name"), cell("organization")
        if len(name) > 200 or len(organization) > 200:
            report.rejected.append(RejectedRow(line, raw_email, "name or organization too long"))
            continue
        attributes = {label: values[i].strip() for i, label in extras if values[i].strip()}
        yield Row(line, email, name, language, organization, attributes)


def _chunks(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _insert(session: Session, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def import_subscribers(
    session: Session, binary: IO[bytes], mailing_list: MailingList
) -> ImportReport:
    """Import into `mailing_list`; the caller commits (or rolls back on ImportRefused)."""
    report = ImportReport()
    seen: set[str] = set()
    for chunk in _chunks(read_rows(binary, report), CHUNK):
        unique: dict[str, Row] = {}
        for row in chunk:
            if row.email in seen:
                report.duplicates += 1
                continue
            seen.add(row.email)
            unique[row.email] = row
        if not unique:
            continue
        now = utcnow()
        inserted = session.execute(
            _insert(session, Subscriber)
            .values(
                [
                    {
                        "email": row.email,
                        "domain": row.email.rpartition("@")[2],
                        "name": row.name,
                        "language": row.language,
                        "organization": row.organization,
                        "attributes": row.attributes,
                        "status": "active",
                        "created_at": now,
                        "updated_at": now,
                    }
                    for row in unique.values()
                ]
            )
            .on_conflict_do_nothing(index_elements=["email"])
            .returning(Subscriber.id)
        ).all()
        report.added += len(inserted)
        ids = dict(
            session.execute(
                select(Subscriber.email, Subscriber.id).where(Subscriber.email.in_(unique))
            ).all()
        )
        existing = dict(
            session.execute(
                select(Subscription.subscriber_id, Subscription.status).where(
                    Subscription.list_id == mailing_list.id,
                    Subscription.subscriber_id.in_(ids.values()),
                )
            ).all()
        )
        new_rows = []
        for email in unique:
            subscriber_id = ids[email]
            status = existing.get(subscriber_id)
            if status is None:
                new_rows.append(
                    {
                        "subscriber_id": subscriber_id,
                        "list_id": mailing_list.id,
                        "status": SubscriptionStatus.CONFIRMED,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            elif status == SubscriptionStatus.UNSUBSCRIBED:
                report.kept_unsubscribed += 1
            else:
                report.already += 1
        if new_rows:
            session.execute(
                _insert(session, Subscription)
                .values(new_rows)
                .on_conflict_do_nothing(index_elements=["subscriber_id", "list_id"])
            )
            report.subscribed += len(new_rows)
    return report
