"""Streaming CSV import of subscribers into a list, at the scale of a million rows.

How a file goes in:

1. **Checking pass.** The file is read once in large binary blocks and only
   decoded, never parsed: it must be UTF-8 (a byte-order mark is allowed),
   hold no NUL byte and not start like a ZIP, PDF, spreadsheet or image. This
   costs about as much as copying the file, and it is what lets a decoding
   error on line 900,000 refuse the file *before anything is written*. A stream
   that cannot seek (standard input) is copied to a temporary file on the way.
2. **Writing pass.** The header must name an `email` column. A reader thread
   parses rows with the csv module straight from the file, validates them and
   takes out the duplicates, handing over chunks of `CHUNK` rows (at most two
   waiting); this thread writes each chunk with set-based `INSERT … ON
   CONFLICT DO NOTHING` (subscribers, subscriptions, consent events): one
   statement per chunk on PostgreSQL, three on SQLite, never one round trip
   per row. So Python parses on one core while the database writes on the
   other. After each chunk the caller's `on_chunk` runs; the background job
   commits there, so the database is never locked for long (SQLite has one
   writer) and progress is visible. A crash half-way leaves a consistent
   prefix, and running the same file again is safe: what is already there is
   skipped by the ON CONFLICT clauses.

Memory stays flat whatever the size of the file: rows are streamed, the
addresses already seen (for "duplicate of line N") live in a private on-disk
SQLite table rather than a Python set, and rejected lines go to `on_reject`
(the job writes them to the report CSV) with only the first few kept in memory.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import queue
import re
import shutil
import sqlite3
import tempfile
import threading
import unicodedata
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from functools import lru_cache
from typing import IO, Any, NamedTuple, cast

from sqlalchemy import Table, bindparam, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..models import (
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from ..models.base import UTCDateTime
from .addresses import InvalidAddress, normalise_email

KNOWN_COLUMNS = ("email", "name", "language", "organization")
#: Other spellings of the known columns, as people write them.
ALIASES = {"organisation": "organization", "e-mail address": "email", "email address": "email"}
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})?$")
#: Rows per write: big enough that statements are few, small enough that a
#: chunk's transaction is short and its statement parameters stay under limits.
CHUNK = 2000
#: From this many accepted rows on, an import on PostgreSQL ends with ANALYZE.
ANALYZE_AFTER = 1000
#: Rejected lines kept in memory for display; all of them go to `on_reject`.
SAMPLE_SIZE = 200
BLOCK = 1 << 20

#: Starts of files that are surely not CSV text, for a clearer message than "not UTF-8".
SIGNATURES = {
    b"PK\x03\x04": "a ZIP archive (an .xlsx or .ods spreadsheet is one)",
    b"PK\x05\x06": "a ZIP archive",
    b"\xd0\xcf\x11\xe0": "an old Excel or Word file",
    b"%PDF-": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip archive",
    b"7z\xbc\xaf": "a 7-Zip archive",
    b"Rar!": "a RAR archive",
    b"\xff\xfe": "UTF-16 text",
    b"\xfe\xff": "UTF-16 text",
}


class ImportRefused(ValueError):
    """The whole file is unusable; nothing was imported."""


@dataclass(frozen=True)
class RejectedRow:
    line: int
    email: str
    reason: str


class Row(NamedTuple):
    """A parsed row (a tuple: made a million times, five times faster than a frozen dataclass)."""

    line: int
    email: str
    name: str
    language: str
    organization: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ImportOptions:
    """Who imports, recorded with each consent event; and whether suppression is overridden."""

    source: str = "import"  # the consent events' source, e.g. "import #12"
    actor_id: int | None = None
    # Set by staff on purpose: suppressed addresses are then added, each override recorded.
    override_reason: str | None = None


@dataclass
class ImportReport:
    rows: int = 0  # data rows read (blank lines are not rows)
    added: int = 0  # new subscribers created
    subscribed: int = 0  # put on the list now (new or existing subscribers)
    already: int = 0  # already on the list
    kept_unsubscribed: int = (
        0  # had left the list (or all mail): an import does not bring them back
    )
    duplicates: int = 0  # the same address again further down the file
    invalid: int = 0  # lines that are not a usable row (address, language, field count)
    suppressed: int = 0  # on the suppression list, left out
    overridden: int = 0  # on the suppression list, added anyway with the override reason
    # The first SAMPLE_SIZE lines of the report; every line goes to `sink`.
    rejected: list[RejectedRow] = field(default_factory=list)
    sink: Callable[[RejectedRow], None] | None = field(default=None, repr=False, compare=False)
    job_id: int | None = field(default=None, compare=False)  # set by the job that ran it

    @property
    def rejected_count(self) -> int:
        """Lines of the file left out for what they hold (not for suppression)."""
        return self.invalid + self.duplicates + self.kept_unsubscribed

    @property
    def accepted(self) -> int:
        return self.subscribed + self.already + self.kept_unsubscribed

    # With `hold`, rejections wait in `pending` until `flush()`, which hands them
    # on in line order (duplicates are found when a chunk is written, after the
    # invalid lines parsed around them).
    hold: bool = field(default=False, repr=False, compare=False)
    pending: list[RejectedRow] = field(default_factory=list, repr=False, compare=False)

    def reject(self, row: RejectedRow, kind: str = "invalid") -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if self.hold:
            self.pending.append(row)
            if len(self.pending) >= 4 * CHUNK and self.sink is not None:
                # A long run of bad lines with no good one between: memory comes first
                # (only a duplicate in the unwritten chunk could then come out of order).
                self.flush()
        else:
            self._emit(row)

    def add(self, chunk: ImportReport) -> None:
        """Count a written chunk in, and hand on its held rejections in line order."""
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(chunk, name))
        for row in sorted(chunk.pending, key=lambda item: item.line):
            self._emit(row)
        chunk.pending.clear()

    def flush(self) -> None:
        for row in sorted(self.pending, key=lambda item: item.line):
            self._emit(row)
        self.pending.clear()

    def _emit(self, row: RejectedRow) -> None:
        if len(self.rejected) < SAMPLE_SIZE:
            self.rejected.append(row)
        if self.sink is not None:
            self.sink(row)


_COUNTS = (
    "rows",
    "added",
    "subscribed",
    "already",
    "kept_unsubscribed",
    "duplicates",
    "invalid",
    "suppressed",
    "overridden",
)


# --- the checking pass --------------------------------------------------------------------


def _not_utf8(line: int) -> ImportRefused:
    return ImportRefused(
        f"The file is not UTF-8 text: line {line} has bytes that are not UTF-8 "
        '(it was probably saved as "CSV" in a local encoding). '
        'Save it as "CSV UTF-8" and try again.'
    )


def _binary(what: str = "binary data") -> ImportRefused:
    return ImportRefused(
        f"The file holds {what}, not CSV text: it holds binary data. "
        'Export the spreadsheet as "CSV UTF-8" and import that file.'
    )


def check_file(binary: IO[bytes]) -> int:
    """Read a seekable file once and refuse it if it is not UTF-8 text; return its size.

    Decoding in 1 MB blocks with the C codec costs little next to the import
    itself, and it is what makes "imports nothing" true for an error found late.
    The stream is left where it started.
    """
    start = binary.tell()
    head = binary.read(8)
    for signature, what in SIGNATURES.items():
        if head.startswith(signature):
            binary.seek(start)
            raise _binary(what)
    binary.seek(start)
    size = 0
    lines_before = 0
    pending = b""
    first = True
    while block := binary.read(BLOCK):
        size += len(block)
        if b"\x00" in block:
            binary.seek(start)
            raise _binary()
        data = pending + block
        if first and data.startswith(codecs.BOM_UTF8):
            data = data[len(codecs.BOM_UTF8) :]
        first = False
        try:
            # final=False stops before a character cut by the end of the block.
            _text, consumed = codecs.utf_8_decode(data, "strict", False)
        except UnicodeDecodeError as exc:
            binary.seek(start)
            raise _not_utf8(lines_before + data.count(b"\n", 0, exc.start) + 1) from None
        lines_before += data.count(b"\n", 0, consumed)
        pending = data[consumed:]
    binary.seek(start)
    if pending:  # the file ends in the middle of a character
        raise _not_utf8(lines_before + 1)
    return size


@contextmanager
def checked(binary: IO[bytes]) -> Iterator[IO[bytes]]:
    """The stream, checked; one that cannot seek is copied to a temporary file first."""
    if binary.seekable():
        check_file(binary)
        yield binary
        return
    with tempfile.TemporaryFile() as spool:
        shutil.copyfileobj(binary, spool, BLOCK)
        spool.seek(0)
        check_file(spool)
        yield spool


# --- parsing ------------------------------------------------------------------------------


def _columns(header: list[str]) -> list[str]:
    columns = [column.strip().lower() for column in header]
    return [ALIASES.get(column, column) for column in columns]


def read_rows(
    binary: IO[bytes], report: ImportReport, *, check: bool = True
) -> Generator[Row, None, None]:
    """Yield valid rows; report invalid ones; raise ImportRefused for the whole file.

    With `check` (the default) the file goes through the checking pass first;
    pass False only for a stream that `checked()` has already vouched for.
    """
    if check:
        with checked(binary) as stream:
            yield from read_rows(stream, report, check=False)
        return
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
    try:
        yield from _parse(csv.reader(text, strict=True), report)
    finally:
        text.detach()  # leave the caller's stream open


def _parse(reader: Any, report: ImportReport) -> Iterator[Row]:
    try:
        header = next(reader)
        while not any(cell.strip() for cell in header):  # blank lines before the header
            header = next(reader)
    except StopIteration:
        raise ImportRefused("The file is empty.") from None
    except csv.Error as exc:
        raise ImportRefused(f"The file is not CSV: {exc}.") from None
    columns = _columns(header)
    if "email" not in columns:
        raise ImportRefused(
            "The first line must be a header with an email column, naming the columns "
            "(for example: email,name,language,organization); other columns are kept as "
            "attributes."
        )
    if len(set(columns)) != len(columns):
        raise ImportRefused("The header names a column twice.")
    position = {name: columns.index(name) for name in KNOWN_COLUMNS if name in columns}
    extras = [(i, header[i].strip()) for i, name in enumerate(columns) if name not in KNOWN_COLUMNS]
    email_at = position["email"]
    name_at = position.get("name")
    language_at = position.get("language")
    organization_at = position.get("organization")
    width = len(columns)

    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            report.rows += 1
            report.reject(RejectedRow(reader.line_num, "", f"not valid CSV: {exc}"))
            continue
        line = reader.line_num
        if len(values) != width or not values[email_at].strip():
            if not any(value.strip() for value in values):
                continue  # a blank line is not a row
            if len(values) != width:
                report.rows += 1
                report.reject(
                    RejectedRow(line, "", f"has {len(values)} fields, the header has {width}")
                )
                continue
        raw_email = values[email_at].strip()
        report.rows += 1
        try:
            email = fast_normalise(raw_email)
        except InvalidAddress as exc:
            report.reject(RejectedRow(line, raw_email, f"invalid address: {exc}"))
            continue
        language = values[language_at].strip().lower() if language_at is not None else ""
        if not language:
            language = "en"
        elif not LANGUAGE_RE.match(language):
            report.reject(RejectedRow(line, raw_email, f"unknown language code {language!r}"))
            continue
        name = values[name_at].strip() if name_at is not None else ""
        organization = values[organization_at].strip() if organization_at is not None else ""
        if len(name) > 200 or len(organization) > 200:
            report.reject(RejectedRow(line, raw_email, "name or organization too long"))
            continue
        attributes = {label: values[i].strip() for i, label in extras if values[i].strip()}
        yield Row(line, email, name, language, organization, attributes)


# --- addresses ----------------------------------------------------------------------------

# A dot-atom local part of printable ASCII (RFC 5322 atext): for these, email-validator's
# checks of the local part are exactly "these characters, no empty dot-separated piece,
# at most 64 of them", so only the domain needs its full (costly) validation, done once per
# domain. Anything else goes through email-validator whole.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


@lru_cache(maxsize=4096)
def _normalised_domain(domain: str) -> str:
    """The domain as email-validator normalises it; raises InvalidAddress."""
    return normalise_email(f"a@{domain}").rpartition("@")[2]


def fast_normalise(raw: str) -> str:
    """`normalise_email`, with the domain's validation cached: same result, a fraction of the cost.

    email-validator spends most of its time on the domain (IDNA, special-use
    names, label rules); a mailing list has few distinct domains, so each is
    validated once. Addresses that are not plain ASCII dot-atoms take the slow
    path, as does every error (so its message is email-validator's own).
    """
    local, at, domain = raw.strip().rpartition("@")
    if (
        at
        and len(local) <= 64
        and domain.isascii()
        and _PLAIN_LOCAL.fullmatch(local)
        and "@" not in domain
    ):
        try:
            normalised = f"{local.lower()}@{_normalised_domain(domain)}"
        except InvalidAddress:
            pass  # the slow path gives the message
        else:
            if len(normalised) <= 254:
                return normalised
    return normalise_email(unicodedata.normalize("NFC", raw))


# --- de-duplication -----------------------------------------------------------------------


class SeenAddresses:
    """Addresses met so far in the file and the line of their first occurrence.

    Kept in a private on-disk SQLite database ("" as its file name: temporary,
    deleted on close), so a million addresses cost disk, not memory.
    """

    def __init__(self) -> None:
        self._db = sqlite3.connect("")
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE seen (email TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID")

    def first_lines(self, rows: list[Row]) -> dict[str, int]:
        """Record `rows`; return the line where each of their addresses first appeared."""
        earlier: dict[str, int] = {}
        emails = [row.email for row in rows]
        for start in range(0, len(emails), 500):
            part = emails[start : start + 500]
            marks = ",".join("?" * len(part))
            earlier.update(
                self._db.execute(f"SELECT email, line FROM seen WHERE email IN ({marks})", part)  # noqa: S608
            )
        new: dict[str, int] = {}
        for row in rows:
            if row.email not in earlier and row.email not in new:
                new[row.email] = row.line
        self._db.executemany("INSERT INTO seen VALUES (?, ?)", new.items())
        earlier.update(new)
        return earlier

    def close(self) -> None:
        self._db.close()


# --- writing ------------------------------------------------------------------------------


def _suppressed_reasons(session: Session, emails: list[str]) -> dict[str, str]:
    """{address: reason in words} for the suppressed ones: two queries per chunk."""
    from .suppression import suppression_reasons_among

    return suppression_reasons_among(session, emails)


def _lift(session: Session, email: str, options: ImportOptions, list_id: int) -> None:
    from .suppression import lift_for

    lift_for(
        session,
        email,
        user_id=options.actor_id,
        reason=options.override_reason or "",
        list_id=list_id,
    )


def import_subscribers(
    session: Session,
    binary: IO[bytes],
    mailing_list: MailingList,
    *,
    options: ImportOptions | None = None,
    on_reject: Callable[[RejectedRow], None] | None = None,
    on_chunk: Callable[[Session, ImportReport, int], None] | None = None,
    more_sessions: Sequence[Session] = (),
) -> ImportReport:
    """Import a CSV into `mailing_list`; raise ImportRefused (nothing written) for a bad file.

    `on_chunk(session, chunk, bytes_read)` runs after each chunk is written, with
    the session that wrote it and that chunk's own counts: commit there to keep
    transactions short, or leave it out to let the caller commit (or roll back)
    the whole import at the end.

    Parsing, validation and de-duplication run in a thread of their own
    (`_Reader`) while this one writes the previous chunk: the database works
    on one core while Python parses on the other. The thread never touches the
    session, so the caller's transaction stays in this thread.

    Each of `more_sessions` (on PostgreSQL, each on a connection of its own)
    gets a writer thread too, taking chunks as they come. A server backend
    spends about 3.5 times the CPU the parsing does, on index and foreign-key
    work per row, so one connection left the second core idle. Writers never
    write the same address (the reader took out the duplicates), so their
    chunks commit in any order; this needs `on_chunk` to commit each one.
    """
    if more_sessions and on_chunk is None:
        raise ValueError("more than one writer needs on_chunk to commit each chunk")
    options = options or ImportOptions()
    report = ImportReport(sink=on_reject)
    merging = threading.Lock()
    # Chunks written out of order wait here, so the rejected lines reach `on_reject` in
    # file order. What waits is a chunk's counts and rejected lines, never its rows.
    waiting: dict[int, ImportReport] = {}
    next_number = 0

    def write(writer: Session, batch: _Batch) -> None:
        nonlocal next_number
        chunk = ImportReport(hold=True, rows=batch.rows_read)
        for rejected, kind in batch.rejected:
            chunk.reject(rejected, kind)
        if batch.rows:
            _write_chunk(writer, batch.rows, mailing_list.id, options, chunk)
        with merging:
            waiting[batch.number] = chunk
            while next_number in waiting:
                report.add(waiting.pop(next_number))
                next_number += 1
        if on_chunk is not None:
            on_chunk(writer, chunk, batch.position)

    with checked(binary) as stream:
        reader = _Reader(stream)
        reader.start()
        helpers = [_Writer(reader, helper, write) for helper in more_sessions]
        try:
            for helper in helpers:
                helper.start()
            while (batch := reader.take()) is not None:
                write(session, batch)
        except _Stopped:
            pass  # a writer thread failed: its error is raised below
        finally:
            reader.close()
            for helper in helpers:
                helper.join()
        for helper in helpers:
            if helper.error is not None:
                raise helper.error
    if report.accepted >= ANALYZE_AFTER and session.get_bind().dialect.name == "postgresql":
        # New rows have no planner statistics until autovacuum comes by; a send
        # started right after a large import planned its recipients query blind
        # (45 s at 8,000 subscribers). ANALYZE samples, so it is quick at any size.
        session.execute(text("ANALYZE subscribers, subscriptions"))
    return report


class _Writer(threading.Thread):
    """Writes chunks with a session of its own until the reader is done or stopped.

    An error stops the reader, so the other writers stop at their next chunk;
    it is raised again in the calling thread once all have stopped.
    """

    def __init__(
        self, reader: _Reader, session: Session, write: Callable[[Session, _Batch], None]
    ) -> None:
        super().__init__(name="csv-import-writer", daemon=True)
        self._reader = reader
        self._session = session
        self._write = write
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while (batch := self._reader.take()) is not None:
                self._write(self._session, batch)
        except _Stopped:
            pass
        except BaseException as exc:
            self.error = exc
            self._reader.stop()


@dataclass
class _Batch:
    """A chunk's worth of the file, parsed: rows to write (first occurrences only),
    the lines rejected among them (invalid or duplicate, with their kind), how
    many rows it held and where in the file it ends."""

    rows: dict[str, Row] = field(default_factory=dict)
    rejected: list[tuple[RejectedRow, str]] = field(default_factory=list)
    rows_read: int = 0
    position: int = 0
    last: bool = False
    number: int = 0  # its place in the file: 0, 1, 2, …
    error: BaseException | None = None


class _Stopped(Exception):
    """The writer gave up; the reader thread ends without reading further."""


class _Reader(threading.Thread):
    """Parses, validates and de-duplicates the file into `_Batch`es, ahead of the writer.

    At most `DEPTH` batches wait in the queue, so memory stays flat however fast
    the reader is. An error (ImportRefused for the header, anything else) is
    handed to the writer as a batch and raised there; `close()` stops the
    thread when the writer ends early.
    """

    DEPTH = 2

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(name="csv-import-reader", daemon=True)
        self._stream = stream
        self._queue: queue.Queue[_Batch] = queue.Queue(maxsize=self.DEPTH)
        self._halt = threading.Event()
        self._taking = threading.Lock()
        self._finished = False
        self._numbered = 0
        self._batch = _Batch()
        self._report = ImportReport(sink=self._rejected)
        self._counted = 0
        self._pending: list[Row] = []
        self._seen: SeenAddresses | None = None

    def run(self) -> None:
        try:
            # Made here: an SQLite connection belongs to the thread that opened it.
            self._seen = SeenAddresses()
            with closing(read_rows(self._stream, self._report, check=False)) as rows:
                for row in rows:
                    self._pending.append(row)
                    if len(self._pending) >= CHUNK:
                        self._send()
                self._send(last=True)
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the writer, which raises it
            with suppress(_Stopped):
                self._put(_Batch(error=exc, last=True))
        finally:
            if self._seen is not None:
                self._seen.close()

    def _rejected(self, row: RejectedRow) -> None:
        self._batch.rejected.append((row, "invalid"))
        # A long run of bad lines with no good one between also moves on by chunks.
        if len(self._batch.rejected) >= CHUNK:
            self._send()

    def _send(self, last: bool = False) -> None:
        """Finish the current batch with the rows read so far: find the duplicates, queue it."""
        batch, self._batch = self._batch, _Batch()
        rows, self._pending = self._pending, []
        assert self._seen is not None
        if rows:
            first = self._seen.first_lines(rows)
            for row in rows:
                if first[row.email] != row.line:
                    batch.rejected.append(
                        (
                            RejectedRow(
                                row.line, row.email, f"duplicate of line {first[row.email]}"
                            ),
                            "duplicates",
                        )
                    )
                else:
                    batch.rows[row.email] = row
        batch.rows_read = self._report.rows - self._counted
        self._counted = self._report.rows
        batch.position = self._stream.tell()
        batch.number, self._numbered = self._numbered, self._numbered + 1
        batch.last = last
        self._put(batch)

    def _put(self, batch: _Batch) -> None:
        while True:
            if self._halt.is_set():
                raise _Stopped
            try:
                self._queue.put(batch, timeout=0.2)
                return
            except queue.Full:
                continue

    def take(self) -> _Batch | None:
        """The next batch for a writer, or None once the last was taken (by any writer).

        Raises the reader's error (to the first writer that meets it), or
        `_Stopped` once a writer has failed.
        """
        with self._taking:
            while not self._finished:
                if self._halt.is_set():
                    raise _Stopped
                try:
                    batch = self._queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                if batch.error is not None or batch.last:
                    self._finished = True
                if batch.error is not None:
                    raise batch.error
                return batch
            return None

    def stop(self) -> None:
        """A writer failed: stop reading, and let the other writers stop at their next chunk."""
        self._halt.set()

    def close(self) -> None:
        self._halt.set()
        self.join()


def _write_chunk(
    session: Session,
    rows: dict[str, Row],
    list_id: int,
    options: ImportOptions,
    report: ImportReport,
) -> None:
    """Write one chunk of unique rows (the reader already took out duplicates)."""
    if session.get_bind().dialect.name != "postgresql":
        _write_rows(session, dict(rows), list_id, options, report)
        return
    # Every statement of the chunk planned afresh for its values: a generic plan that
    # psycopg's prepared statements cached while the table was small would keep scanning
    # it whole as it grows (measured: linear slow-down). Not `plan_cache_mode =
    # force_custom_plan`, which did the same but also re-planned the foreign-key
    # triggers' lookup for every row: a third of the server's CPU (29.0 s against
    # 19.1 s for 200,000 rows).
    raw = session.connection().connection.driver_connection
    threshold = raw.prepare_threshold  # type: ignore[union-attr]
    raw.prepare_threshold = None  # type: ignore[union-attr]
    try:
        # No wait for the WAL flush at each chunk's commit: if the server crashes, the
        # last chunks and their progress are lost together, and running the job again
        # redoes them (the writes are idempotent).
        session.execute(text("SET LOCAL synchronous_commit = off"))
        _write_rows(session, dict(rows), list_id, options, report)
    finally:
        raw.prepare_threshold = threshold  # type: ignore[union-attr]


def _write_rows(
    session: Session,
    rows: dict[str, Row],
    list_id: int,
    options: ImportOptions,
    report: ImportReport,
) -> None:
    # 2. Suppressed addresses are left out, unless staff override with a reason.
    suppressed = _suppressed_reasons(session, list(rows))
    lifted: set[str] = set()
    for email, why in suppressed.items():
        if options.override_reason:
            _lift(session, email, options, list_id)
            lifted.add(email)
            report.overridden += 1
        else:
            row = rows.pop(email)
            report.reject(
                RejectedRow(
                    row.line,
                    email,
                    f"suppressed ({why}): not added; an import with an override reason can add it",
                ),
                "suppressed",
            )
    if not rows:
        return

    now = utcnow()
    postgres = session.get_bind().dialect.name == "postgresql"
    subscribers = cast(Table, Subscriber.__table__)
    subscriptions = cast(Table, Subscription.__table__)

    # 3. Who exists already, and their subscription to this list: one query.
    existing: dict[str, Any] = {}
    subscription_status: dict[str, str | None] = {}
    for found in session.execute(
        select(
            subscribers.c.id,
            subscribers.c.email,
            subscribers.c.name,
            subscribers.c.language,
            subscribers.c.organization,
            subscribers.c.attributes,
            subscribers.c.status,
            subscriptions.c.status.label("subscription"),
        )
        .outerjoin(
            subscriptions,
            (subscriptions.c.subscriber_id == subscribers.c.id)
            & (subscriptions.c.list_id == list_id),
        )
        .where(subscribers.c.email.in_(_json_values(postgres, list(rows))))
    ):
        existing[found.email] = found
        subscription_status[found.email] = found.subscription

    # Fill their empty fields, merge attributes; leave out those who left all mail.
    changes = []
    for email, found in existing.items():
        row = rows[email]
        if found.status != SubscriberStatus.ACTIVE and email not in lifted:
            rows.pop(email)
            left = "is blocked" if found.status == SubscriberStatus.BLOCKED else "left all mail"
            report.reject(
                RejectedRow(row.line, email, f"{left}: not added again; only they can subscribe"),
                "kept_unsubscribed",
            )
            continue
        change: dict[str, Any] = {}
        if row.name and not found.name:
            change["name"] = row.name
        if row.organization and not found.organization:
            change["organization"] = row.organization
        if not found.language:
            change["language"] = row.language
        attributes = dict(found.attributes or {})
        if row.attributes and any(attributes.get(k) != v for k, v in row.attributes.items()):
            attributes.update(row.attributes)
            change["attributes"] = attributes
        if found.status != SubscriberStatus.ACTIVE:  # lifted by the override
            change["status"] = SubscriberStatus.ACTIVE.value
        if change:
            changes.append(
                {
                    "b_id": found.id,
                    "name": change.get("name", found.name),
                    "organization": change.get("organization", found.organization),
                    "language": change.get("language", found.language),
                    "attributes": change.get("attributes", found.attributes or {}),
                    "status": change.get("status", found.status),
                    "updated_at": now,
                }
            )
    if changes:
        # executemany: the SET clause comes from the keys of the parameter dicts.
        session.execute(update(subscribers).where(subscribers.c.id == bindparam("b_id")), changes)

    # 4. Who goes on the list: new subscribers and existing ones not on it yet; confirmed
    #    (staff vouch for the list), never over an unsubscription.
    to_subscribe: list[Row] = []
    for email, row in rows.items():
        status = subscription_status.get(email)
        if status is None:
            to_subscribe.append(row)
        elif status == SubscriptionStatus.UNSUBSCRIBED:
            report.reject(
                RejectedRow(
                    row.line,
                    email,
                    "unsubscribed from this list: not added again; only they can subscribe again",
                ),
                "kept_unsubscribed",
            )
        else:
            report.already += 1
    if not to_subscribe:
        return
    params = {
        "list_id": list_id,
        "now": now,
        "source": options.source,
        "actor_id": options.actor_id,
    }
    if postgres:
        subscribed = _write_pg(session, to_subscribe, existing, params, report)
    else:
        subscribed = _write_sqlite(session, to_subscribe, existing, params, report)
    report.subscribed += subscribed
    report.already += len(to_subscribe) - subscribed


def _new_rows_json(rows: list[Row], existing: dict[str, Any]) -> str:
    """The chunk's rows as one JSON array (one parameter, however many rows), each with
    the id of the subscriber it already is, or null for a new one."""
    return json.dumps(
        [
            {
                "id": existing[row.email].id if row.email in existing else None,
                "email": row.email,
                "domain": row.email.rpartition("@")[2],
                "name": row.name,
                "language": row.language,
                "organization": row.organization,
                "attributes": row.attributes,
            }
            for row in rows
        ],
        ensure_ascii=False,
        check_circular=False,
        separators=(",", ":"),
    )


def _write_pg(
    session: Session,
    rows: list[Row],
    existing: dict[str, Any],
    params: dict[str, Any],
    report: ImportReport,
) -> int:
    """Subscribers, subscriptions and consent events in one statement; returns how many
    were put on the list.

    The subscriptions take the new subscribers' ids from RETURNING rather than
    looking each address up again, and the consent events take theirs from the
    subscriptions' RETURNING, so only the rows really added get one.
    """
    now_type = bindparam("now", type_=UTCDateTime())
    values = {**params, "rows": _new_rows_json(rows, existing)}
    try:
        # Plain inserts first: the look-up has just shown that none of these addresses
        # exists and which are not on the list, so only a concurrent writer (another
        # import, a subscribe form) can collide. ON CONFLICT's speculative insertion
        # costs about 3.6 µs a row on the server even when nothing collides: 40% more
        # than a plain insert, 6% of a large import's server time.
        with session.begin_nested():
            added, subscribed = session.execute(
                text(_WRITE_CHUNK_PLAIN_PG).bindparams(now_type), values
            ).one()
    except IntegrityError as exc:
        if getattr(exc.orig, "sqlstate", None) != UNIQUE_VIOLATION:
            raise
        # Someone else wrote one of these addresses meanwhile: again, skipping theirs.
        added, subscribed = session.execute(
            text(_WRITE_CHUNK_GUARDED_PG).bindparams(now_type), values
        ).one()
    report.added += added
    new = [row.email for row in rows if row.email not in existing]
    if added < len(new):
        # Another import inserted some of these addresses at the same moment (ON
        # CONFLICT skipped them, so RETURNING did not name them): subscribe them by address.
        ids = list(
            session.execute(
                text(_INSERT_SUBSCRIPTIONS_PG).bindparams(now_type),
                {**params, "emails": json.dumps(new, ensure_ascii=False)},
            ).scalars()
        )
        if ids:
            session.execute(
                text(_INSERT_CONSENT_PG).bindparams(now_type), {**params, "ids": json.dumps(ids)}
            )
        subscribed += len(ids)
    return int(subscribed)


def _write_sqlite(
    session: Session,
    rows: list[Row],
    existing: dict[str, Any],
    params: dict[str, Any],
    report: ImportReport,
) -> int:
    """Subscribers, then subscriptions (RETURNING says which are new), then one consent
    event for each of those: the proof of how each person got on the list."""
    now_type = bindparam("now", type_=UTCDateTime())
    if any(row.email not in existing for row in rows):
        result = session.execute(
            text(_INSERT_SUBSCRIBERS_SQLITE).bindparams(now_type),
            {"rows": _new_rows_json(rows, existing), "now": params["now"]},
        )
        report.added += max(result.rowcount, 0)  # type: ignore[attr-defined]
    emails = json.dumps([row.email for row in rows], ensure_ascii=False)
    added_ids = list(
        session.execute(
            text(_INSERT_SUBSCRIPTIONS_SQLITE).bindparams(now_type), {**params, "emails": emails}
        ).scalars()
    )
    if added_ids:
        session.execute(
            text(_INSERT_CONSENT_SQLITE).bindparams(now_type),
            {**params, "ids": json.dumps(added_ids)},
        )
    return len(added_ids)


def _json_values(postgres: bool, values: list[str]) -> Any:
    """A subquery of the strings in one JSON parameter: `IN` without a parameter per value."""
    if postgres:
        elements = func.jsonb_array_elements_text(literal(values, JSONB)).table_valued("value")
    else:
        payload = json.dumps(values, ensure_ascii=False)
        elements = func.json_each(payload).table_valued("value")
    return select(elements.c.value)


# The chunk's rows arrive as one JSON array, unpacked by the database. SQLite needs the
# `WHERE true` to parse INSERT … SELECT … ON CONFLICT.
_INSERT_SUBSCRIBERS_SQLITE = """
INSERT INTO subscribers (email, domain, name, language, organization, attributes, status,
                         suppression_exempt, created_at, updated_at)
SELECT json_extract(value, '$.email'), json_extract(value, '$.domain'),
       json_extract(value, '$.name'), json_extract(value, '$.language'),
       json_extract(value, '$.organization'), json_extract(value, '$.attributes'),
       'active', 0, :now, :now
FROM json_each(:rows) WHERE json_extract(value, '$.id') IS NULL
ON CONFLICT (email) DO NOTHING
"""
# One statement per chunk on PostgreSQL. Data-modifying CTEs all run, each once; the
# foreign-key checks of subscriptions and consent events run at the end of the statement,
# when the new subscribers are there.
#: PostgreSQL's SQLSTATE for a unique index refusing a row.
UNIQUE_VIOLATION = "23505"
_WRITE_CHUNK_PG = """
WITH chunk AS (
    SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
        AS r(id integer, email text, domain text, name text, language text,
             organization text, attributes jsonb)
), added AS (
    INSERT INTO subscribers (email, domain, name, language, organization, attributes, status,
                             suppression_exempt, created_at, updated_at)
    SELECT email, domain, name, language, organization, attributes, 'active', false, :now, :now
    FROM chunk WHERE id IS NULL
    {skip_known_address}
    RETURNING id
), subscribed AS (
    INSERT INTO subscriptions (subscriber_id, list_id, status, delivery, created_at, updated_at,
                               confirmed_at)
    SELECT id, :list_id, 'confirmed', 'every', :now, :now, :now
    FROM (SELECT id FROM added UNION ALL SELECT id FROM chunk WHERE id IS NOT NULL) AS targets
    {skip_known_subscription}
    RETURNING subscriber_id
), consented AS (
    INSERT INTO consent_events (subscriber_id, list_id, action, occurred_at, source, actor_id)
    SELECT subscriber_id, :list_id, 'imported', :now, :source, :actor_id FROM subscribed
)
SELECT (SELECT count(*) FROM added), (SELECT count(*) FROM subscribed)
"""
# Without and with its ON CONFLICT clauses.
_WRITE_CHUNK_PLAIN_PG = _WRITE_CHUNK_PG.format(skip_known_address="", skip_known_subscription="")
_WRITE_CHUNK_GUARDED_PG = _WRITE_CHUNK_PG.format(
    skip_known_address="ON CONFLICT (email) DO NOTHING",
    skip_known_subscription="ON CONFLICT (subscriber_id, list_id) DO NOTHING",
)
_INSERT_SUBSCRIPTIONS_SQLITE = """
INSERT INTO subscriptions (subscriber_id, list_id, status, delivery, created_at, updated_at,
                           confirmed_at)
SELECT id, :list_id, 'confirmed', 'every', :now, :now, :now
FROM subscribers WHERE email IN (SELECT value FROM json_each(:emails))
ON CONFLICT (subscriber_id, list_id) DO NOTHING
RETURNING subscriber_id
"""
_INSERT_SUBSCRIPTIONS_PG = """
INSERT INTO subscriptions (subscriber_id, list_id, status, delivery, created_at, updated_at,
                           confirmed_at)
SELECT id, :list_id, 'confirmed', 'every', :now, :now, :now
FROM subscribers WHERE email IN (SELECT jsonb_array_elements_text(CAST(:emails AS jsonb)))
ON CONFLICT (subscriber_id, list_id) DO NOTHING
RETURNING subscriber_id
"""
_INSERT_CONSENT_SQLITE = """
INSERT INTO consent_events (subscriber_id, list_id, action, occurred_at, source, actor_id)
SELECT value, :list_id, 'imported', :now, :source, :actor_id FROM json_each(:ids)
"""
_INSERT_CONSENT_PG = """
INSERT INTO consent_events (subscriber_id, list_id, action, occurred_at, source, actor_id)
SELECT id::bigint, :list_id, 'imported', :now, :source, :actor_id
FROM jsonb_array_elements_text(CAST(:ids AS jsonb)) AS ids(id)
"""
