"""CSV import and export on both stacks: refusals that import nothing, the report of rejected
lines, attributes, suppression, the background job (admin and a real worker), and export
with formula-injection neutralised."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import time
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from circulars.models import (
    ConsentEvent,
    ImportJob,
    ImportStatus,
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    SuppressionOverride,
    SuppressionReason,
    utcnow,
)
from circulars.subscribers.export import list_members, neutralise, write_csv
from circulars.subscribers.import_jobs import (
    STALL_AFTER,
    create_job,
    run_job,
    store_upload,
    sweep_jobs,
)
from circulars.subscribers.service import add_to_list, unsubscribe
from circulars.subscribers.suppression import suppress
from circulars.tasks import RUN_IMPORT

from conftest import csrf_token

FORMULA = '=HYPERLINK("http://evil.example","x")'


# --- helpers ------------------------------------------------------------------------------


def make_list(session: Any, slug: str = "members", name: str = "Members") -> MailingList:
    item = MailingList(slug=slug, name=name)
    session.add(item)
    session.commit()
    return item


def count(session: Any, model: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def instance(app: Any) -> Path:
    return Path(app.extensions["circulars.settings"].instance_path)


def run_file(
    app: Any,
    session: Any,
    mailing_list: MailingList,
    content: bytes,
    writers: int = 2,
    **job: Any,
) -> ImportJob:
    """Store `content` as an upload and run its job as the worker does (two writers on
    PostgreSQL, as IMPORT_WRITERS by default); return the job."""
    path, size = store_upload(io.BytesIO(content), instance(app), 1 << 30)
    created = create_job(
        session,
        list_id=mailing_list.id,
        filename="people.csv",
        stored_path=path,
        size=size,
        **job,
    )
    session.commit()
    run_job(session, created.id, instance(app), writers=writers)
    session.expire_all()
    found = session.get(ImportJob, created.id)
    assert found is not None
    return found


def report_lines(job: ImportJob) -> list[list[str]]:
    assert job.report_path is not None
    with open(job.report_path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def emails(session: Any) -> set[str]:
    return set(session.scalars(select(Subscriber.email)))


def sign_in(auth: Any) -> Any:
    auth.create_user("admin@example.org", "admin")
    assert auth.login("admin@example.org").status_code == 302
    return auth


def post_import(
    auth: Any, content: bytes, list_id: int, *, filename: str = "people.csv", reason: str = ""
) -> Any:
    page = auth.client.get("/admin/imports/new")
    assert page.status_code == 200
    response = auth.client.post(
        "/admin/imports/new",
        data={
            "file": (io.BytesIO(content), filename),
            "list_id": str(list_id),
            "override_reason": reason,
            "csrf_token": csrf_token(page.text),
        },
        content_type="multipart/form-data",
    )
    response.request.environ["wsgi.input"].close()
    return response


# --- files refused whole ------------------------------------------------------------------


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("xl/worksheets/sheet1.xml", "<worksheet/>")
    return buffer.getvalue()


GOOD_ROWS = "".join(f"p{i}@example.org,Person {i}\n" for i in range(2, 5000)).encode()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        # A latin-1 byte on line 5,000: found by the checking pass before any write.
        (b"email,name\n" + GOOD_ROWS + "zoë@example.org,Zoë\n".encode("latin-1"), "line 5000"),
        (b"name,organization\nAna,Red\nBob,Org\n", "header with an email column"),
        (bytes(range(256)) * 40, "binary"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "PDF"),
        (_zip_bytes(), "ZIP"),
        (b"", "empty"),
        (b"\xef\xbb\xbf", "empty"),
    ],
    ids=["latin1-line-5000", "no-header", "garbage", "pdf", "zip", "empty", "bom-only"],
)
def test_a_bad_file_is_refused_whole_and_imports_nothing(app, session, content, message):
    members = make_list(session)
    if not content:
        # An empty upload is refused before a job exists; the importer refuses one too.
        from circulars.subscribers.importer import ImportRefused, import_subscribers

        with pytest.raises(ImportRefused, match=message):
            import_subscribers(session, io.BytesIO(content), members)
        return
    job = run_file(app, session, members, content)

    assert job.status == ImportStatus.FAILED
    assert message in (job.error or "")
    assert count(session, Subscriber) == 0
    assert count(session, Subscription) == 0
    assert count(session, ConsentEvent) == 0
    # The refused upload is not kept; there is no report for a file that was never read.
    assert not Path(job.stored_path).exists()
    assert job.report_path is None


def test_not_utf8_message_is_clear(app, session):
    members = make_list(session)
    job = run_file(
        app,
        session,
        members,
        "email,name\nana@example.org,Ana\nrené@example.org,René\n".encode("cp1252"),
    )
    assert job.error is not None
    assert job.error.startswith("The file is not UTF-8 text: line 3 has bytes that are not UTF-8")
    assert "CSV UTF-8" in job.error


# --- rows ---------------------------------------------------------------------------------


def test_rejected_lines_report_names_lines_and_reasons_in_file_order(app, session):
    members = make_list(session)
    job = run_file(
        app,
        session,
        members,
        b"email,name,language\n"  # 1
        b"ana@example.org,Ana,es\n"  # 2
        b"not-an-address,Bob,en\n"  # 3
        b"ANA@Example.org,Ana again,es\n"  # 4: the same address, other case
        b"carla@example.org,Carla,klingon\n"  # 5
        b"dan@example.org,Dan\n"  # 6: two fields
        b"ana@example.org,Ana thrice,es\n"  # 7
        b"eve@example.org,Eve,fr\n",  # 8
    )

    assert job.status == ImportStatus.DONE
    assert (job.rows, job.imported, job.subscribed, job.rejected) == (7, 2, 2, 5)
    lines = report_lines(job)
    assert lines[0] == ["line", "email", "reason"]
    assert [(line, email) for line, email, _ in lines[1:]] == [
        ("3", "not-an-address"),
        ("4", "ana@example.org"),
        ("5", "carla@example.org"),
        ("6", ""),
        ("7", "ana@example.org"),
    ]
    reasons = {line: reason for line, _, reason in lines[1:]}
    assert reasons["3"].startswith("invalid address")
    assert reasons["4"] == "duplicate of line 2"
    assert reasons["7"] == "duplicate of line 2"
    assert "language" in reasons["5"]
    assert reasons["6"] == "has 2 fields, the header has 3"
    assert emails(session) == {"ana@example.org", "eve@example.org"}
    ana = session.scalar(select(Subscriber).where(Subscriber.email == "ana@example.org"))
    assert (ana.name, ana.language) == ("Ana", "es")  # the first occurrence wins


def test_duplicates_are_found_across_chunks(app, session, monkeypatch):
    from circulars.subscribers import importer

    monkeypatch.setattr(importer, "CHUNK", 3)
    members = make_list(session)
    rows = [f"p{i}@example.org" for i in range(10)] + ["p1@example.org", "P8@EXAMPLE.ORG"]
    job = run_file(app, session, members, ("email\n" + "\n".join(rows) + "\n").encode())
    assert (job.subscribed, job.rejected) == (10, 2)
    assert [row[2] for row in report_lines(job)[1:]] == [
        "duplicate of line 3",
        "duplicate of line 10",
    ]


def test_a_long_run_of_bad_lines_moves_on_by_chunks_and_keeps_file_order(app, session, monkeypatch):
    """Parsing runs ahead in a thread: a run of bad lines with no good one between still
    arrives in chunk-sized batches (memory stays flat), and the report keeps file order."""
    from circulars.subscribers import importer

    monkeypatch.setattr(importer, "CHUNK", 3)
    members = make_list(session)
    lines = ["email,name"] + [f"bad{i},Bad" for i in range(2, 22)]  # lines 2-21: no @
    lines += ["ok1@example.org,A", "bad,B", "OK1@example.org,again", "ok2@example.org,C"]
    progress: list[tuple[int, int]] = []

    def on_chunk(writer: Any, chunk: Any, position: int) -> None:
        progress.append((chunk.rows, chunk.rejected_count))
        writer.commit()

    rejected: list[int] = []
    report = importer.import_subscribers(
        session,
        io.BytesIO(("\n".join(lines) + "\n").encode()),
        members,
        on_reject=lambda row: rejected.append(row.line),
        on_chunk=on_chunk,
    )
    assert (report.rows, report.subscribed, report.invalid, report.duplicates) == (24, 2, 21, 1)
    assert rejected == [*range(2, 22), 23, 24]
    assert len(progress) >= 20 // 3
    assert sum(rows for rows, _ in progress) == 24
    assert max(rows for rows, _ in progress) <= 2 * 3
    assert emails(session) == {"ok1@example.org", "ok2@example.org"}


def test_an_error_while_writing_stops_the_reading_thread(app, session, monkeypatch):
    import threading

    from circulars.subscribers import importer

    monkeypatch.setattr(importer, "CHUNK", 2)
    members = make_list(session)
    content = ("email\n" + "".join(f"p{i}@example.org\n" for i in range(200))).encode()

    def on_chunk(writer: Any, chunk: Any, position: int) -> None:
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError, match="database went away"):
        importer.import_subscribers(session, io.BytesIO(content), members, on_chunk=on_chunk)
    assert not [t for t in threading.enumerate() if t.name == "csv-import-reader"]


def _mixed_file() -> bytes:
    """Enough rows for many small chunks: bad lines, duplicates in later chunks, a
    suppressed address and someone already on the list."""
    lines = ["email,name,country"]
    for i in range(2, 302):
        if i % 29 == 0:
            lines.append(f"bad{i},No At,Mali")
        elif i % 31 == 0:
            lines.append(f"P{i - 20}@Example.org,Again,Peru")
        else:
            lines.append(f"p{i}@example.org,Person {i},Nepal")
    lines.append("blocked@example.org,Blocked,Mali")
    lines.append("kept@example.org,Kept,Mali")
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("writers", [1, 2])
def test_several_writers_import_the_same_as_one(app, session, monkeypatch, writers):
    """On PostgreSQL each writer has a connection of its own and chunks commit in any
    order; the job's counts, the report and the rows are those of a single writer."""
    import threading

    from circulars.subscribers import importer

    monkeypatch.setattr(importer, "CHUNK", 7)
    threads: set[str] = set()
    write_chunk = importer._write_chunk

    def recording(*args: Any, **kwargs: Any) -> None:
        threads.add(threading.current_thread().name)
        write_chunk(*args, **kwargs)

    monkeypatch.setattr(importer, "_write_chunk", recording)
    members = make_list(session)
    suppress(session, email="blocked@example.org", reason=SuppressionReason.HARD_BOUNCE)
    add_to_list(session, members, "kept@example.org")
    session.commit()

    job = run_file(app, session, members, _mixed_file(), writers=writers)

    assert job.status == ImportStatus.DONE, job.error
    bad = [i for i in range(2, 302) if i % 29 == 0]
    again = [i for i in range(2, 302) if i % 31 == 0 and i % 29]
    new = 300 - len(bad) - len(again)
    assert (job.rows, job.imported, job.subscribed) == (302, new, new)
    assert (job.rejected, job.suppressed) == (len(bad) + len(again), 1)
    lines = report_lines(job)[1:]
    # In file order, whichever writer wrote which chunk first.
    assert [int(line[0]) for line in lines] == sorted([*bad, *again, 302])
    assert [line for line in lines if line[0] == "62"] == [
        ["62", "p42@example.org", "duplicate of line 42"]
    ]
    assert count(session, Subscription) == new + 1
    assert count(session, ConsentEvent) == new + 1  # one each, and one for the first add
    assert "blocked@example.org" not in emails(session)
    postgres = session.get_bind().dialect.name == "postgresql"
    assert len(threads) == (2 if postgres and writers == 2 else 1)


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
def test_an_error_in_a_second_writer_fails_the_job_and_stops_every_thread(
    app, session, monkeypatch
):
    import threading

    from circulars.subscribers import importer

    monkeypatch.setattr(importer, "CHUNK", 5)
    write_chunk = importer._write_chunk

    def failing_in_the_helper(*args: Any, **kwargs: Any) -> None:
        if threading.current_thread().name == "csv-import-writer":
            raise RuntimeError("connection lost")
        write_chunk(*args, **kwargs)

    monkeypatch.setattr(importer, "_write_chunk", failing_in_the_helper)
    members = make_list(session)
    content = ("email\n" + "".join(f"p{i}@example.org\n" for i in range(400))).encode()

    with pytest.raises(RuntimeError, match="connection lost"):
        run_file(app, session, members, content, writers=2)

    session.rollback()
    job = session.scalar(select(ImportJob))
    assert job is not None and job.status == ImportStatus.FAILED
    assert "RuntimeError" in (job.error or "")
    # What was committed before the error is counted, and no more.
    assert job.subscribed == count(session, Subscription) < 400
    assert not [
        t for t in threading.enumerate() if t.name in ("csv-import-reader", "csv-import-writer")
    ]


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
def test_a_large_import_on_postgresql_leaves_planner_statistics(app, session):
    """Without them, a send right after the import plans its recipients query blind."""
    assert session.get_bind().dialect.name == "postgresql"
    members = make_list(session)
    session.execute(text("ANALYZE subscribers"))
    session.commit()

    def estimated_rows() -> float:
        return float(
            session.scalar(text("SELECT reltuples FROM pg_class WHERE relname = 'subscribers'"))
        )

    assert estimated_rows() == 0
    lines = ["email"] + [f"person{number}@example.org" for number in range(1500)]
    job = run_file(app, session, members, "\n".join(lines).encode())
    assert job.status == "done"
    session.commit()
    assert estimated_rows() == 1500


def test_addresses_are_normalised(app, session):
    members = make_list(session)
    run_file(
        app,
        session,
        members,
        "email\n  Ana.Pérez@EXAMPLE.org \nbob@BÜCHER.example.org\nzoe\u0301@example.org\n".encode(),
    )
    assert emails(session) == {
        "ana.pérez@example.org",
        "bob@bücher.example.org",
        "zoé@example.org",  # NFC: e + combining acute became é
    }
    stored = session.scalar(select(Subscriber).where(Subscriber.email == "bob@bücher.example.org"))
    assert stored.domain == "bücher.example.org"


def test_extra_columns_become_attributes_and_merge_into_existing_ones(app, session):
    members = make_list(session)
    old = Subscriber(
        email="ana@example.org",
        name="Ana Old",
        organization="",
        language="es",
        attributes={"country": "Peru", "since": "2010"},
    )
    session.add(old)
    session.commit()
    job = run_file(
        app,
        session,
        members,
        "email,name,organisation,country,city,Member since\n"
        "ana@example.org,Ana New,Red Migrante,Perú,,\n"
        "bob@example.org,Bob,Org B,Chile,Santiago,2019\n".encode(),
    )

    assert (job.imported, job.subscribed) == (1, 2)
    session.expire_all()
    ana = session.scalar(select(Subscriber).where(Subscriber.email == "ana@example.org"))
    # Name kept (it was set); organisation filled (it was empty); attributes merged,
    # empty cells ignored.
    assert (ana.name, ana.organization, ana.language) == ("Ana Old", "Red Migrante", "es")
    assert ana.attributes == {"country": "Perú", "since": "2010"}
    bob = session.scalar(select(Subscriber).where(Subscriber.email == "bob@example.org"))
    assert bob.organization == "Org B"
    assert bob.attributes == {"country": "Chile", "city": "Santiago", "Member since": "2019"}


def test_imported_subscriptions_are_confirmed_with_one_consent_event_each(app, session):
    members = make_list(session)
    already = make_list(session, "partners", "Partners")
    add_to_list(session, members, "old@example.org")
    session.commit()
    job = run_file(
        app, session, members, b"email\nana@example.org\nold@example.org\nbob@example.org\n"
    )

    assert (job.rows, job.imported, job.subscribed, job.rejected) == (3, 2, 2, 0)
    subscriptions = session.scalars(
        select(Subscription).where(Subscription.list_id == members.id)
    ).all()
    assert {item.status for item in subscriptions} == {SubscriptionStatus.CONFIRMED}
    assert all(
        item.confirmed_at is not None
        for item in subscriptions
        if item.subscriber.email != "old@example.org"
    )
    events = session.scalars(
        select(ConsentEvent).where(ConsentEvent.source == f"import #{job.id}")
    ).all()
    assert sorted(session.get(Subscriber, e.subscriber_id).email for e in events) == [
        "ana@example.org",
        "bob@example.org",
    ]
    assert {(e.action, e.list_id) for e in events} == {("imported", members.id)}
    assert count(session, Subscription) == 3 and already.id  # nothing on the other list


def test_an_address_added_by_someone_else_meanwhile_is_still_put_on_the_list(
    app, session, monkeypatch
):
    """Another import (or the admin) can insert an address between the look-up of who
    exists and the insert: ON CONFLICT skips it, and it is still subscribed, with its
    consent event, like the others."""
    from circulars.subscribers import importer

    members = make_list(session)
    session.add(Subscriber(email="bob@example.org", name="Bob", language="en"))
    session.commit()
    real = importer._json_values
    # The look-up of existing subscribers finds no one, as if bob arrived just after it.
    monkeypatch.setattr(importer, "_json_values", lambda postgres, values: real(postgres, []))
    job = run_file(app, session, members, b"email\nana@example.org\nbob@example.org\n")

    assert (job.imported, job.subscribed, job.rejected) == (1, 2, 0)
    bob = session.scalar(select(Subscriber).where(Subscriber.email == "bob@example.org"))
    assert bob.name == "Bob"
    on_list = session.scalars(
        select(Subscriber.email)
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(Subscription.list_id == members.id)
    )
    assert set(on_list) == {"ana@example.org", "bob@example.org"}
    events = session.scalars(
        select(ConsentEvent.subscriber_id).where(ConsentEvent.action == "imported")
    )
    assert sorted(events) == sorted(
        session.scalars(
            select(Subscriber.id).where(
                Subscriber.email.in_(["ana@example.org", "bob@example.org"])
            )
        )
    )


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
def test_a_subscription_made_elsewhere_between_look_up_and_insert_is_no_error(
    app, session, monkeypatch
):
    """PostgreSQL writes a chunk with plain inserts first (no ON CONFLICT, which costs
    more); a row someone else commits in between makes it write the chunk again,
    skipping theirs, instead of failing the import."""
    from sqlalchemy.orm import Session as PlainSession

    from circulars.subscribers import importer

    members = make_list(session)
    carol = Subscriber(email="carol@example.org", name="Carol", language="en")
    session.add(carol)
    session.commit()
    carol_id = carol.id
    real = importer._write_pg

    def subscribed_elsewhere_first(writer: Any, *args: Any, **kwargs: Any) -> int:
        # Carol joins the list (and dan appears) on another connection, committed,
        # after the look-up found carol off the list and dan nowhere.
        with PlainSession(bind=writer.get_bind()) as other:
            other.add(Subscription(subscriber_id=carol_id, list_id=members.id, status="confirmed"))
            other.add(Subscriber(email="dan@example.org", name="Dan", language="en"))
            other.commit()
        monkeypatch.setattr(importer, "_write_pg", real)
        return real(writer, *args, **kwargs)

    monkeypatch.setattr(importer, "_write_pg", subscribed_elsewhere_first)
    content = b"email\nana@example.org\ncarol@example.org\ndan@example.org\n"
    job = run_file(app, session, members, content)

    assert job.status == ImportStatus.DONE, job.error
    # ana new; dan put on the list though someone else created him; carol already there.
    assert (job.imported, job.subscribed, job.rejected) == (1, 2, 0)
    on_list = session.scalars(
        select(Subscriber.email)
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(Subscription.list_id == members.id)
    )
    assert sorted(on_list) == ["ana@example.org", "carol@example.org", "dan@example.org"]
    imported = session.scalars(
        select(Subscriber.email)
        .join(ConsentEvent, ConsentEvent.subscriber_id == Subscriber.id)
        .where(ConsentEvent.action == "imported")
    )
    assert sorted(imported) == ["ana@example.org", "dan@example.org"]


def test_people_who_left_the_list_are_not_put_back(app, session):
    members = make_list(session)
    gone, _ = add_to_list(session, members, "gone@example.org")
    session.commit()
    unsubscribe(session, gone.id, members.id)
    session.commit()
    job = run_file(app, session, members, b"email\ngone@example.org\nnew@example.org\n")

    assert (job.subscribed, job.rejected) == (1, 1)
    line = report_lines(job)[1]
    assert line[:2] == ["2", "gone@example.org"]
    assert "unsubscribed from this list" in line[2]
    status = session.scalar(
        select(Subscription.status).where(Subscription.subscriber_id == gone.id)
    )
    assert status == SubscriptionStatus.UNSUBSCRIBED


def test_running_the_same_file_again_changes_nothing(app, session):
    members = make_list(session)
    content = b"email,name\nana@example.org,Ana\nbob@example.org,Bob\n"
    first = run_file(app, session, members, content)
    second = run_file(app, session, members, content)
    assert (first.subscribed, second.subscribed, second.imported) == (2, 0, 0)
    assert count(session, Subscription) == 2
    assert count(session, ConsentEvent) == 2


# --- suppression --------------------------------------------------------------------------


def test_suppressed_addresses_are_left_out_and_reported(app, session):
    members = make_list(session)
    suppress(session, email="bounced@example.org", reason=SuppressionReason.HARD_BOUNCE)
    suppress(session, domain="closed.example.org", reason=SuppressionReason.BLOCKED)
    session.commit()
    job = run_file(
        app,
        session,
        members,
        b"email\nana@example.org\nbounced@example.org\nanyone@closed.example.org\n",
    )

    assert (job.subscribed, job.suppressed, job.rejected) == (1, 2, 0)
    lines = report_lines(job)[1:]
    assert [(line, email) for line, email, _ in lines] == [
        ("3", "bounced@example.org"),
        ("4", "anyone@closed.example.org"),
    ]
    assert "suppressed (hard bounce)" in lines[0][2]
    assert emails(session) == {"ana@example.org"}
    assert count(session, SuppressionOverride) == 0


def test_with_an_override_reason_suppressed_addresses_are_added_and_recorded(app, session, auth):
    staff = auth.create_user("staff@example.org", "admin")
    members = make_list(session)
    suppress(session, email="bounced@example.org", reason=SuppressionReason.HARD_BOUNCE)
    session.commit()
    job = run_file(
        app,
        session,
        members,
        b"email\nana@example.org\nbounced@example.org\n",
        user_id=staff.id,
        override_reason="Asked again by phone on 2 May",
    )

    assert (job.subscribed, job.suppressed) == (2, 0)
    override = session.scalar(select(SuppressionOverride))
    assert (override.email, override.list_id, override.user_id, override.reason) == (
        "bounced@example.org",
        members.id,
        staff.id,
        "Asked again by phone on 2 May",
    )
    assert override.suppression_reason == SuppressionReason.HARD_BOUNCE


def test_the_cli_override_option(runner, session, tmp_path):
    make_list(session)
    suppress(session, email="bounced@example.org", reason=SuppressionReason.HARD_BOUNCE)
    session.commit()
    path = tmp_path / "p.csv"
    path.write_text("email\nbounced@example.org\n", encoding="utf-8")

    result = runner.invoke(["subscribers", "import", str(path), "--list", "members"])
    assert result.exit_code == 0
    assert "p.csv:2: bounced@example.org: suppressed (hard bounce)" in result.output
    assert "1 suppressed and left out" in result.output
    result = runner.invoke(
        [
            "subscribers", "import", str(path), "--list", "members",
            "--override-suppression", "Asked again",
        ]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 subscribed" in result.output and "1 added anyway by override" in result.output
    assert session.scalar(select(SuppressionOverride.reason)) == "Asked again"


# --- formula injection, export ------------------------------------------------------------


def test_formula_cells_are_kept_as_text_and_neutralised_on_export(app, session, runner):
    members = make_list(session)
    job = run_file(
        app,
        session,
        members,
        (
            "email,name,organization,note\n"
            f'ana@example.org,"{FORMULA.replace(chr(34), chr(34) * 2)}",-Org,+SUM(A1)\n'
            "bob@example.org,Bob,Plain,@attack\n"
        ).encode(),
    )
    assert job.subscribed == 2
    ana = session.scalar(select(Subscriber).where(Subscriber.email == "ana@example.org"))
    assert ana.name == FORMULA  # stored exactly as given
    assert ana.attributes == {"note": "+SUM(A1)"}

    out = io.StringIO()
    write_csv(session, list_members(members.id), out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["email", "name", "language", "organization", "status", "lists", "note"]
    assert rows[1] == [
        "ana@example.org",
        "'" + FORMULA,
        "en",
        "'-Org",
        "active",
        "members",
        "'+SUM(A1)",
    ]
    assert rows[2] == ["bob@example.org", "Bob", "en", "Plain", "active", "members", "'@attack"]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("=1+2", "'=1+2"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(1)", "'@SUM(1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("a=1", "a=1"),
        ("", ""),
        ("Ana", "Ana"),
    ],
)
def test_neutralise(value, shown):
    assert neutralise(value) == shown


def test_cli_export_writes_the_list_to_stdout_or_a_file(runner, session, tmp_path):
    members = make_list(session)
    partners = make_list(session, "partners", "Partners")
    ana, _ = add_to_list(session, members, "ana@example.org", name="Ana", language="es")
    ana.attributes = {"country": "Perú"}
    add_to_list(session, partners, "ana@example.org")
    add_to_list(session, members, "bob@example.org", name="Bob", organization="=cmd")
    gone, _ = add_to_list(session, members, "gone@example.org")
    session.commit()
    unsubscribe(session, gone.id, members.id)
    session.commit()

    result = runner.invoke(["subscribers", "export", "--list", "members"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "email,name,language,organization,status,lists,country",
        "ana@example.org,Ana,es,,active,members partners,Perú",
        "bob@example.org,Bob,en,'=cmd,active,members,",
    ]
    out = tmp_path / "all.csv"
    result = runner.invoke(
        ["subscribers", "export", "--list", "members", "--status", "unsubscribed", "-o", str(out)]
    )
    assert result.exit_code == 0
    # No attribute column: nobody in this selection has one.
    assert out.read_text(encoding="utf-8").splitlines()[1:] == ["gone@example.org,,en,,active,"]
    result = runner.invoke(["subscribers", "export", "--list", "nope"])
    assert result.exit_code == 2 and "unknown list 'nope'" in result.output


def test_export_of_a_list_with_no_one_is_the_header(session, runner):
    make_list(session)
    result = runner.invoke(["subscribers", "export", "--list", "members"])
    assert result.output.splitlines() == ["email,name,language,organization,status,lists"]


def test_admin_exports_a_list_as_a_download(app, session, auth):
    sign_in(auth)
    members = make_list(session)
    add_to_list(session, members, "ana@example.org", name=FORMULA)
    session.commit()
    page = auth.client.get("/admin/lists/members")
    assert 'href="/admin/lists/members/export.csv"' in page.text

    response = auth.client.get("/admin/lists/members/export.csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="members-confirmed-')
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[1][:2] == ["ana@example.org", "'" + FORMULA]


def test_editors_cannot_export_or_import(app, session, auth):
    auth.create_user("editor@example.org", "editor")
    auth.login("editor@example.org")
    make_list(session)
    assert auth.client.get("/admin/lists/members/export.csv").status_code == 403
    assert auth.client.get("/admin/imports/new").status_code == 403


# --- the admin: upload, job page, report --------------------------------------------------


def test_admin_import_is_a_background_job_with_a_progress_page_and_report(
    app, session, auth, enqueued
):
    sign_in(auth)
    members = make_list(session)
    content = b"email,name\nana@example.org,Ana\nnot-an-address,X\nana@example.org,Again\n"
    response = post_import(auth, content, members.id, filename="../../Mitglieder Liste.csv")

    assert response.status_code == 302
    job = session.scalar(select(ImportJob))
    assert response.headers["Location"].endswith(f"/admin/imports/{job.id}")
    assert enqueued == [(RUN_IMPORT, (job.id,))]
    assert job.status == ImportStatus.QUEUED and job.filename == "Mitglieder Liste.csv"
    stored = Path(job.stored_path)
    assert stored.parent == instance(app) / "imports" and stored.read_bytes() == content

    page = auth.client.get(f"/admin/imports/{job.id}")
    assert page.status_code == 200
    assert '<meta http-equiv="refresh"' in page.text  # moves without JavaScript too
    assert auth.client.get(f"/admin/imports/{job.id}.json").json["status"] == "queued"

    run_job(session, job.id, instance(app))  # what the task does
    progress = auth.client.get(f"/admin/imports/{job.id}.json").json
    assert progress == {
        "id": job.id,
        "status": "done",
        "percent": 100,
        "rows": 3,
        "imported": 1,
        "subscribed": 1,
        "rejected": 2,
        "suppressed": 0,
        "error": None,
    }
    page = auth.client.get(f"/admin/imports/{job.id}")
    assert 'http-equiv="refresh"' not in page.text
    assert "Download rejected lines" in page.text
    report = auth.client.get(f"/admin/imports/{job.id}/rejected.csv")
    assert report.status_code == 200
    assert report.headers["Content-Disposition"] == (
        f"attachment; filename=import-{job.id}-rejected-Mitglieder_Liste.csv"
    )
    assert report.text.splitlines()[1:] == [
        "3,not-an-address,invalid address: An email address must have an @-sign.",
        "4,ana@example.org,duplicate of line 2",
    ]
    history = auth.client.get("/admin/imports")
    assert f'href="/admin/imports/{job.id}"' in history.text
    assert "Mitglieder Liste.csv" in history.text
    assert not stored.exists()  # the upload goes once imported


def test_admin_import_needs_a_csrf_token_and_a_file(app, session, auth, enqueued):
    sign_in(auth)
    members = make_list(session)
    response = auth.client.post(
        "/admin/imports/new",
        data={"file": (io.BytesIO(b"email\na@example.org\n"), "p.csv"), "list_id": members.id},
        content_type="multipart/form-data",
    )
    response.request.environ["wsgi.input"].close()
    assert response.status_code == 400
    assert count(session, ImportJob) == 0
    page = auth.client.get("/admin/imports/new")
    response = auth.client.post(
        "/admin/imports/new",
        data={"list_id": members.id, "csrf_token": csrf_token(page.text)},
    )
    assert response.status_code == 400 and "Choose a CSV file." in response.text
    response = post_import(auth, b"", members.id)
    assert response.status_code == 400 and "The file is empty." in response.text
    assert enqueued == [] and count(session, ImportJob) == 0


def test_admin_import_of_a_refused_file_shows_why(app, session, auth, enqueued):
    sign_in(auth)
    members = make_list(session)
    post_import(auth, "email\nrené@example.org\n".encode("latin-1"), members.id)
    job = session.scalar(select(ImportJob))
    run_job(session, job.id, instance(app))
    page = auth.client.get(f"/admin/imports/{job.id}")
    assert "failed" in page.text
    assert "The file is not UTF-8 text: line 2" in page.text
    assert count(session, Subscriber) == 0


def _big_csv(path: Path, size: int) -> int:
    """A CSV of about `size` bytes: 10,000 rows with a long notes column."""
    rows = 10_000
    pad = "x" * (size // rows - 40)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("email,name,notes\n")
        for i in range(rows):
            out.write(f"p{i:05d}@example.org,P {i},{pad}\n")
    return rows


def test_a_50_mb_file_through_the_admin_is_imported(app, session, auth, enqueued, tmp_path):
    sign_in(auth)
    members = make_list(session)
    path = tmp_path / "big.csv"
    rows = _big_csv(path, 50 * 1024 * 1024)
    content = path.read_bytes()
    assert len(content) > 50_000_000  # above MAX_UPLOAD_SIZE (2 MB in the tests)

    response = post_import(auth, content, members.id, filename="big.csv")
    del content
    assert response.status_code == 302
    job = session.scalar(select(ImportJob))
    assert job.total_bytes == path.stat().st_size
    run_job(session, job.id, instance(app))
    session.expire_all()
    job = session.get(ImportJob, job.id)
    assert (job.status, job.rows, job.subscribed, job.rejected) == ("done", rows, rows, 0)
    assert job.processed_bytes == job.total_bytes


def test_a_file_over_the_import_limit_is_refused_cleanly(
    app, session, auth, enqueued, tmp_path, monkeypatch
):
    settings = app.extensions["circulars.settings"]
    monkeypatch.setitem(
        app.extensions,
        "circulars.settings",
        dataclasses.replace(settings, import_max_size=10 * 1024 * 1024),
    )
    sign_in(auth)
    members = make_list(session)
    path = tmp_path / "big.csv"
    _big_csv(path, 50 * 1024 * 1024)

    stored_before = set((instance(app) / "imports").glob("*"))
    response = post_import(auth, path.read_bytes(), members.id, filename="big.csv")
    assert response.status_code == 413
    assert "larger than the import limit of 10.0 MB" in response.text
    assert "<h1>Import subscribers</h1>" in response.text  # the form again, not an error page
    assert count(session, ImportJob) == 0 and enqueued == []
    assert set((instance(app) / "imports").glob("*")) == stored_before  # nothing kept

    # The list page's form, too.
    page = auth.client.get("/admin/lists/members")
    with path.open("rb") as handle:
        response = auth.client.post(
            "/admin/lists/members/import",
            data={"file": (handle, "big.csv"), "csrf_token": csrf_token(page.text)},
            content_type="multipart/form-data",
        )
    response.request.environ["wsgi.input"].close()
    assert response.status_code == 303
    page = auth.client.get(response.headers["Location"])
    assert "Nothing was imported: The file is larger than the import limit" in page.text
    assert count(session, ImportJob) == 0


def test_the_list_page_form_runs_small_files_at_once_and_big_ones_in_the_background(
    app, session, auth, enqueued, tmp_path
):
    sign_in(auth)
    make_list(session)
    page = auth.client.get("/admin/lists/members")
    response = auth.client.post(
        "/admin/lists/members/import",
        data={
            "file": (io.BytesIO(b"email\nana@example.org\nbad\n"), "p.csv"),
            "csrf_token": csrf_token(page.text),
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 200
    assert "Download all rejected lines (CSV)" in response.text
    assert emails(session) == {"ana@example.org"}
    assert enqueued == []

    path = tmp_path / "big.csv"
    _big_csv(path, 2 * 1024 * 1024)
    with path.open("rb") as handle:
        response = auth.client.post(
            "/admin/lists/members/import",
            data={"file": (handle, "big.csv"), "csrf_token": csrf_token(page.text)},
            content_type="multipart/form-data",
        )
    response.request.environ["wsgi.input"].close()
    assert response.status_code == 302
    job = session.scalar(select(ImportJob).order_by(ImportJob.id.desc()))
    assert response.headers["Location"].endswith(f"/admin/imports/{job.id}")
    assert enqueued == [(RUN_IMPORT, (job.id,))]


def test_the_report_of_a_job_is_only_served_for_that_job(app, session, auth):
    sign_in(auth)
    assert auth.client.get("/admin/imports/999").status_code == 404
    assert auth.client.get("/admin/imports/999/rejected.csv").status_code == 404


# --- stalled jobs -------------------------------------------------------------------------


def test_the_sweep_fails_silent_running_jobs_and_requeues_lost_ones(app, session):
    members = make_list(session)
    path, size = store_upload(io.BytesIO(b"email\na@example.org\n"), instance(app), 1 << 20)
    long_ago = utcnow() - STALL_AFTER - timedelta(minutes=1)
    lost = create_job(session, list_id=members.id, filename="a.csv", stored_path=path, size=size)
    lost.created_at = long_ago
    silent = create_job(session, list_id=members.id, filename="b.csv", stored_path=path, size=size)
    silent.status, silent.started_at = ImportStatus.RUNNING, long_ago
    busy = create_job(session, list_id=members.id, filename="c.csv", stored_path=path, size=size)
    busy.status, busy.started_at = ImportStatus.RUNNING, utcnow()
    fresh = create_job(session, list_id=members.id, filename="d.csv", stored_path=path, size=size)
    session.commit()

    requeue, failed = sweep_jobs(session)

    assert requeue == [lost.id]
    assert failed == [silent.id]
    session.expire_all()
    assert session.get(ImportJob, silent.id).status == ImportStatus.FAILED
    assert "stopped making progress" in session.get(ImportJob, silent.id).error
    assert session.get(ImportJob, busy.id).status == ImportStatus.RUNNING
    assert session.get(ImportJob, fresh.id).status == ImportStatus.QUEUED
    # A failed job whose file is still there can be run again.
    result = run_job(session, silent.id, instance(app))
    assert result is None  # not queued: only "Run again" queues it
    from circulars.subscribers.import_jobs import retry_job

    assert retry_job(session, silent.id)
    session.commit()
    outcome = run_job(session, silent.id, instance(app))
    assert outcome is not None and outcome.status == ImportStatus.DONE


# --- end to end, with a real worker -------------------------------------------------------


def test_an_import_from_the_admin_runs_on_the_worker(app, session, auth, worker):
    sign_in(auth)
    members = make_list(session)
    rows = "".join(f"person{i}@example.org,Person {i},Country {i % 7}\n" for i in range(5000))
    content = (
        "email,name,country\n" + rows + "bad-address,X,Y\nperson7@example.org,Dup,Z\n"
    ).encode()
    response = post_import(auth, content, members.id)
    assert response.status_code == 302
    job_id = session.scalar(select(ImportJob.id))

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        progress = auth.client.get(f"/admin/imports/{job_id}.json").json
        if progress["status"] in ("done", "failed"):
            break
        time.sleep(0.3)
    assert progress["status"] == "done", (progress, worker.log_path.read_text()[-2000:])
    assert (
        progress["rows"],
        progress["imported"],
        progress["subscribed"],
        progress["rejected"],
    ) == (
        5002,
        5000,
        5000,
        2,
    )
    page = auth.client.get(f"/admin/imports/{job_id}")
    assert "done" in page.text and "Download rejected lines" in page.text
    assert count(session, Subscription) == 5000
    person = session.scalar(select(Subscriber).where(Subscriber.email == "person8@example.org"))
    assert person.attributes == {"country": "Country 1"}
    assert person.status == SubscriberStatus.ACTIVE
    assert os.path.exists(session.get(ImportJob, job_id).report_path)
