"""The send engine called directly (no worker): snapshot, batches, re-runs, failures."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from circulars.models import (
    Circular,
    Delivery,
    MailingList,
    Send,
    Subscriber,
    Subscription,
    utcnow,
)
from circulars.sending import engine
from circulars.sending.service import create_send
from circulars.subscribers.service import add_to_list, unsubscribe


@pytest.fixture
def ctx(app):
    return app.extensions["circulars.send_context"]


@pytest.fixture
def two_lists(session):
    members = MailingList(slug="members", name="Members")
    partners = MailingList(slug="partners", name="Partners")
    session.add_all([members, partners])
    session.flush()
    for index in range(10):
        add_to_list(session, members, f"p{index}@example.org", name=f"Person {index}")
    for index in range(5, 15):
        add_to_list(session, partners, f"p{index}@example.org", name=f"Person {index}")
    session.commit()
    return members, partners


def start(session, ctx, lists, title="Update"):
    circular = Circular(title=title, body_markdown="Hello **all**.")
    session.add(circular)
    session.commit()
    send = create_send(session, circular.id, [item.id for item in lists])
    session.commit()
    return send, engine.start_send(session, send.id, ctx)


def run_all(session, ctx, send_id, ranges):
    return [engine.deliver_batch(session, send_id, first, last, ctx) for first, last in ranges]


def test_snapshot_deduplicates_and_leaves_out_unsubscribed(session, ctx, two_lists):
    members, partners = two_lists
    p0 = session.scalar(select(Subscriber).where(Subscriber.email == "p0@example.org"))
    unsubscribe(session, p0.id, members.id)  # p0 was on members only
    p14 = session.scalar(select(Subscriber).where(Subscriber.email == "p14@example.org"))
    p14.status = "blocked"
    session.commit()

    send, ranges = start(session, ctx, two_lists)
    session.refresh(send)
    assert send.status == "running"
    assert send.total == 13  # 15 people, less p0 (unsubscribed) and p14 (blocked)
    emails = session.scalars(select(Delivery.email).where(Delivery.send_id == send.id)).all()
    assert len(emails) == len(set(emails)) == 13
    # People on both lists get it through the list with the lowest id.
    through = dict(session.execute(select(Delivery.email, Delivery.list_id)).all())
    assert through["p7@example.org"] == members.id
    assert through["p12@example.org"] == partners.id
    # SEND_BATCH_SIZE is 50 in the test stacks: one range covering all.
    assert len(ranges) == 1


def test_batches_send_once_and_a_rerun_sends_nothing_twice(session, ctx, two_lists, smtp_server):
    send, ranges = start(session, ctx, two_lists)
    outcomes = run_all(session, ctx, send.id, ranges)
    assert sum(o.sent for o in outcomes) == 15
    assert len(smtp_server.messages()) == 15
    session.expire_all()
    assert session.get(Send, send.id).status == "done"
    assert session.get(Send, send.id).sent_count == 15

    again = run_all(session, ctx, send.id, ranges)
    assert sum(o.sent for o in again) == 0
    assert len(smtp_server.messages()) == 15
    # Starting again after the end queues no batch.
    assert engine.start_send(session, send.id, ctx) == []


def test_rendering_happens_once_per_send(session, ctx, two_lists, smtp_server, monkeypatch):
    send, ranges = start(session, ctx, two_lists)

    def no_more_rendering(*args, **kwargs):
        raise AssertionError("rendered per batch")

    monkeypatch.setattr(engine, "render_circular", no_more_rendering)
    engine._prepared.clear()
    outcomes = run_all(session, ctx, send.id, ranges)
    assert sum(o.sent for o in outcomes) == 15
    bodies = {
        item.message.get_body(preferencelist=("html",)).get_content()
        for item in smtp_server.messages()
    }
    # Same template, personalised: every body differs only by the recipient's fields.
    assert len(bodies) == 15
    assert all("Hello <strong>all</strong>." in body for body in bodies)


def test_a_claimed_range_is_not_sent_by_a_second_runner(session, ctx, two_lists, smtp_server):
    send, ranges = start(session, ctx, two_lists)
    first, last = ranges[0]
    # Another runner holds the claim (its lease has not expired): this one leaves the rows alone.
    session.execute(
        update(Delivery)
        .where(Delivery.send_id == send.id)
        .values(claimed_until=engine.utcnow() + timedelta(minutes=5))
    )
    session.commit()
    outcome = engine.deliver_batch(session, send.id, first, last, ctx)
    assert outcome.sent == 0 and smtp_server.messages() == []
    # Once the lease has run out (the other runner died), the rows are taken over.
    session.execute(
        update(Delivery)
        .where(Delivery.send_id == send.id)
        .values(claimed_until=engine.utcnow() - timedelta(seconds=1))
    )
    session.commit()
    outcome = engine.deliver_batch(session, send.id, first, last, ctx)
    assert outcome.sent == 15
    assert engine.stalled_sends(session, timedelta(0)) == []


def test_unreachable_relay_defers_everything(app, session, two_lists, smtp_server):
    from dataclasses import replace

    from circulars.config import SmtpRelay
    from circulars.mail.transport import SmtpMessenger

    from conftest import free_port

    ctx = replace(
        app.extensions["circulars.send_context"],
        messenger=SmtpMessenger(SmtpRelay("127.0.0.1", free_port(), "none"), timeout=2),
    )
    send, ranges = start(session, ctx, two_lists)
    outcome = engine.deliver_batch(session, send.id, *ranges[0], ctx)
    assert outcome.retry and outcome.deferred == 15 and outcome.sent == 0
    assert "cannot connect" in outcome.error
    statuses = Counter(session.scalars(select(Delivery.status)))
    assert statuses == {"pending": 15}
    # The sweeper sees a running send that nobody holds.
    assert engine.stalled_sends(session, timedelta(0)) == [send.id]
    # Giving up records why, and the send ends with its counts.
    assert engine.fail_pending(session, send.id, *ranges[0], "gave up") == 15
    session.expire_all()
    finished = session.get(Send, send.id)
    assert (finished.status, finished.sent_count, finished.failed_count) == ("done", 0, 15)


def test_a_subscriber_deleted_after_the_snapshot_is_not_mailed(
    session, ctx, two_lists, smtp_server
):
    send, ranges = start(session, ctx, two_lists)
    gone = session.scalar(select(Subscriber).where(Subscriber.email == "p3@example.org"))
    session.delete(gone)
    session.commit()
    run_all(session, ctx, send.id, ranges)
    recipients = {r for item in smtp_server.messages() for r in item.rcpt_tos}
    assert "p3@example.org" not in recipients and len(recipients) == 14
    failed = session.scalar(select(Delivery).where(Delivery.email == "p3@example.org"))
    assert failed.status == "failed" and "deleted" in failed.last_error
    assert session.scalar(select(Subscription).where(Subscription.subscriber_id == gone.id)) is None


def test_the_sweeper_leaves_a_moving_send_alone_and_restarts_an_abandoned_one(
    session, ctx, two_lists
):
    send, ranges = start(session, ctx, two_lists)
    assert len(ranges) == 1
    ids = list(session.scalars(select(Delivery.id).order_by(Delivery.id)))
    # A batch is at work on the first five rows; the other ten wait in the queue.
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(ids[:5]))
        .values(claimed_until=engine.utcnow() + timedelta(minutes=5))
    )
    session.commit()
    assert engine.stalled_sends(session, timedelta(0)) == []
    # A send only just started is never swept, whatever its rows.
    assert engine.stalled_sends(session, timedelta(hours=1)) == []
    # The worker was killed: its lease runs out and nothing else holds a row.
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(ids[:5]))
        .values(claimed_until=engine.utcnow() - timedelta(seconds=1))
    )
    session.commit()
    assert engine.stalled_sends(session, timedelta(0)) == [send.id]
    # Once everything is sent there is nothing to restart.
    run_all(session, ctx, send.id, ranges)
    assert engine.stalled_sends(session, timedelta(0)) == []


def test_a_batch_slower_than_its_lease_keeps_its_rows(session, ctx, two_lists, smtp_server):
    """Else the sweeper would hand the rows it has not reached to a second batch."""
    ctx = replace(ctx, claim_lease=timedelta(seconds=1.2))
    send, ranges = start(session, ctx, two_lists)
    assert len(ranges) == 1
    smtp_server.delay = 0.25  # 15 messages: about 4 s, three leases
    outcomes = []

    def deliver() -> None:
        with Session(session.get_bind()) as own:
            outcomes.append(engine.deliver_batch(own, send.id, *ranges[0], ctx))

    batch = threading.Thread(target=deliver)
    batch.start()
    try:
        time.sleep(2.6)  # past two leases: only a renewed claim is still live
        assert batch.is_alive()
        pending = session.scalars(
            select(Delivery.claimed_until).where(
                Delivery.send_id == send.id, Delivery.status == "pending"
            )
        ).all()
        session.commit()
        assert pending and all(until > engine.utcnow() for until in pending)
        assert engine.stalled_sends(session, timedelta(0)) == []
    finally:
        batch.join(30)
    assert outcomes[0].sent == 15
    received = Counter(message.rcpt_tos[0] for message in smtp_server.messages())
    assert len(received) == 15 and set(received.values()) == {1}


def test_marks_land_and_leave_no_prepared_statement_behind(app, session, ctx, two_lists):
    """Marks of every shape commit; on PostgreSQL they run as prepared statements that
    `close` deallocates, and a name left on a pooled connection does not stop a batch."""
    from sqlalchemy import create_engine, text

    from circulars.sending.marks import PipelinedMarks, SessionMarks, marks_for

    send, _ = start(session, ctx, two_lists)
    ids = session.scalars(select(Delivery.id).where(Delivery.send_id == send.id)).all()
    session.commit()
    if session.get_bind().dialect.name != "postgresql":
        assert isinstance(marks_for(session), SessionMarks)
    now = utcnow()

    def mark_all(marks, first):
        marks.record(ids[first], status="sent", attempts=1, sent_at=now, claimed_until=None)
        marks.record(ids[first + 1], status="failed", attempts=3, last_error="550 no")
        marks.record(ids[first + 2], attempts=1, last_error="451 later", claimed_until=None)
        marks.record(ids[first + 3], status="sent", attempts=2, sent_at=now, claimed_until=None)
        marks.close()

    if session.get_bind().dialect.name == "postgresql":
        # One pooled connection, so each batch gets the one the batch before used.
        url = session.get_bind().url
        single = create_engine(url, pool_size=1, max_overflow=0)
        try:

            def pipelined():
                connection = single.connect().execution_options(isolation_level="AUTOCOMMIT")
                return PipelinedMarks(connection)

            def prepared_names():
                with single.connect() as connection:
                    return connection.scalars(
                        text("SELECT name FROM pg_prepared_statements ORDER BY name")
                    ).all()

            connection = single.connect().execution_options(isolation_level="AUTOCOMMIT")
            marks = PipelinedMarks(connection)
            marks.record(ids[0], status="sent", attempts=1, sent_at=now, claimed_until=None)
            marks.confirm()
            held = connection.exec_driver_sql("SELECT name FROM pg_prepared_statements")
            assert "circulars_mark_0" in held.scalars().all()  # while the batch runs
            marks.close()
            assert [n for n in prepared_names() if n.startswith("circulars_mark")] == []
            mark_all(pipelined(), 4)
            # A name left behind (a batch that could not clean up) is replaced, not an error.
            with single.connect() as connection:
                connection.exec_driver_sql("PREPARE circulars_mark_0 AS SELECT 1").close()
                connection.commit()
            mark_all(pipelined(), 8)
            assert [n for n in prepared_names() if n.startswith("circulars_mark")] == []
        finally:
            single.dispose()
    else:
        session.execute(
            update(Delivery).where(Delivery.id == ids[0]).values(status="sent", attempts=1)
        )
        session.commit()
        mark_all(marks_for(session), 4)
        mark_all(marks_for(session), 8)
    rows = {
        row.id: row
        for row in session.scalars(
            select(Delivery)
            .where(Delivery.id.in_(ids[:12]))
            .execution_options(populate_existing=True)
        )
    }
    for first in (4, 8):
        sent, failed, deferred, again = (rows[ids[first + n]] for n in range(4))
        assert (sent.status, sent.attempts) == ("sent", 1) and sent.sent_at is not None
        assert (failed.status, failed.attempts, failed.last_error) == ("failed", 3, "550 no")
        assert (deferred.status, deferred.attempts) == ("pending", 1)
        assert deferred.last_error == "451 later"
        assert (again.status, again.attempts) == ("sent", 2)
    assert rows[ids[0]].status == "sent"
