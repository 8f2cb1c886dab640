"""Partner digests on each stack: who gets which digest with which circulars over simulated
weeks, never empty, never twice (beat firing twice, a worker dying half-way), the real
worker and SMTP server, the admin pages and `circulars digests`.

The clock is injected: digests are run with `now=` and the few things that read the time
themselves (joining, changing frequency, a send's start) are dated to the simulated moment.
"""

from __future__ import annotations

import io
import re
import threading
import time
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from circulars.digests import runs
from circulars.digests.render import summary_of
from circulars.digests.schedule import Schedule, due_moment, following, latest_at_or_before
from circulars.models import (
    Attachment,
    Circular,
    CircularTranslation,
    DigestDelivery,
    DigestDeliveryStatus,
    DigestGroup,
    DigestRun,
    DigestRunStatus,
    MailingList,
    Send,
    Subscription,
    utcnow,
)
from circulars.sending import engine
from circulars.sending.service import create_send
from circulars.subscribers import preferences as prefs
from circulars.subscribers.service import add_to_list
from circulars.subscribers.suppression import suppress

from conftest import PROJECT_ROOT

ORIGIN = prefs.Origin(source="test")


def at(day: int, hour: int = 9, minute: int = 0, month: int = 11) -> datetime:
    """A moment of November (or `month`) 2026, UTC: 2 November 2026 is a Monday."""
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def ctx(app):
    return app.extensions["circulars.send_context"]


class World:
    """A list with digest readers, circulars sent at simulated times, the mail that arrived."""

    def __init__(self, app, session: Session, ctx, smtp, monkeypatch) -> None:
        self.app, self.session, self.ctx, self.smtp = app, session, ctx, smtp
        self.now = at(1, 12)
        # Joining and changing frequency read the clock: they read ours.
        monkeypatch.setattr(prefs, "utcnow", lambda: self.now)
        self.partners = MailingList(slug="partners", name="Partner organisations")
        self.members = MailingList(slug="members", name="Members")
        session.add_all([self.partners, self.members])
        session.commit()
        self.seen = 0

    def join(self, mailing_list, email, *, language="en", delivery="every"):
        subscriber, _ = add_to_list(self.session, mailing_list, email, language=language)
        self.session.flush()
        self.session.execute(
            update(Subscription)
            .where(
                Subscription.subscriber_id == subscriber.id,
                Subscription.list_id == mailing_list.id,
            )
            .values(confirmed_at=self.now, created_at=self.now)
        )
        if delivery != "every":
            prefs.set_delivery(self.session, subscriber, mailing_list.id, delivery, origin=ORIGIN)
        self.session.commit()
        return subscriber

    def frequency(self, subscriber, mailing_list, delivery):
        changed = prefs.set_delivery(
            self.session, subscriber, mailing_list.id, delivery, origin=ORIGIN
        )
        assert changed
        self.session.commit()

    def send(self, title, lists, *, translations=(), body=None, in_archive=True, files=()):
        """A circular sent for real (every-circular readers get it now), dated `now`."""
        circular = Circular(
            title=title,
            body_markdown=body or f"First paragraph of {title}.\n\nSecond paragraph.",
            in_archive=in_archive,
        )
        self.session.add(circular)
        self.session.flush()
        for language, translated in translations:
            self.session.add(
                CircularTranslation(
                    circular_id=circular.id,
                    language=language,
                    title=translated,
                    body_markdown=f"Premier paragraphe ({language}) de {translated}.",
                )
            )
        for name, data in files:
            stored = self.app.extensions["circulars.files"].save(
                io.BytesIO(data), name, "application/pdf"
            )
            self.session.add(
                Attachment(
                    circular_id=circular.id,
                    filename=stored.filename,
                    content_type=stored.content_type,
                    size=stored.size,
                    sha256=stored.sha256,
                )
            )
        self.session.commit()
        send = create_send(self.session, circular.id, [item.id for item in lists])
        self.session.commit()
        for first, last in engine.start_send(self.session, send.id, self.ctx):
            engine.deliver_batch(self.session, send.id, first, last, self.ctx)
        self.session.execute(update(Send).where(Send.id == send.id).values(started_at=self.now))
        self.session.execute(
            update(Circular).where(Circular.id == circular.id).values(first_sent_at=self.now)
        )
        self.session.commit()
        return self.session.get(Circular, circular.id)

    def tick(self, moment):
        """Beat's tick at `moment`: the due digests, run in this process."""
        self.now = moment
        return runs.run_due(self.session, self.ctx, now=moment)

    def new_digests(self):
        """The digests that arrived since the last call: {address: (subject, [numbers])}."""
        messages = self.smtp.messages()
        fresh, self.seen = messages[self.seen :], len(messages)
        got: dict[str, tuple[str, list[int]]] = {}
        for item in fresh:
            if "-bounces+d" not in item.mail_from:
                continue  # a circular, not a digest
            message = item.message
            address = item.rcpt_tos[0]
            assert address not in got, f"two digests for {address} in one tick"
            text = message.get_body(("plain",)).get_content()
            numbers = [int(n) for n in re.findall(r"/circulars/(\d+)-", text)]
            got[address] = (str(message["Subject"]), list(dict.fromkeys(numbers)))
        return got


@pytest.fixture
def world(app, session, ctx, smtp_server, monkeypatch):
    return World(app, session, ctx, smtp_server, monkeypatch)


# --- schedule --------------------------------------------------------------------------------


def test_due_moments_follow_the_list_schedule_in_the_organisation_time_zone():
    plan = Schedule(weekday=0, weekly_hour=9, monthday=1, monthly_hour=9)
    zurich = "Europe/Zurich"
    wednesday = datetime(2026, 12, 9, 12, 0, tzinfo=UTC)
    # 09:00 in Geneva in winter is 08:00 UTC.
    assert latest_at_or_before(plan, "weekly", wednesday, zurich) == datetime(
        2026, 12, 7, 8, 0, tzinfo=UTC
    )
    assert following(plan, "weekly", wednesday, zurich) == datetime(2026, 12, 14, 8, tzinfo=UTC)
    assert following(plan, "monthly", wednesday, zurich) == datetime(2027, 1, 1, 8, tzinfo=UTC)
    # In summer it is 07:00 UTC.
    assert following(plan, "monthly", datetime(2026, 6, 5, tzinfo=UTC), zurich) == datetime(
        2026, 7, 1, 7, tzinfo=UTC
    )
    # Due from its moment, for a day; a digest missed for longer waits for the next period.
    assert due_moment(plan, "weekly", datetime(2026, 12, 7, 7, 59, tzinfo=UTC), zurich) is None
    assert due_moment(plan, "weekly", datetime(2026, 12, 7, 8, 0, tzinfo=UTC), zurich) is not None
    assert due_moment(plan, "weekly", wednesday, zurich) is None
    with pytest.raises(ValueError, match="between 1 and 28"):
        Schedule(monthday=31)
    with pytest.raises(ValueError, match="hour"):
        Schedule(weekly_hour=24)


def test_summary_is_the_first_paragraph_as_plain_text():
    body = (
        "# Heading\n\nThe **Global Compact** talks [resume](https://x.example) on *Monday*."
        "\nNext line.\n\nMore."
    )
    assert summary_of(body) == "The Global Compact talks resume on Monday. Next line."
    long = " ".join(["word"] * 200)
    cut = summary_of(long)
    assert cut.endswith("…") and len(cut) <= 321
    assert summary_of("") == ""


# --- simulated weeks -------------------------------------------------------------------------


def test_simulated_weeks_who_gets_which_digest(world, session, smtp_server):
    w = world
    partners, members = w.partners, w.members
    w.join(partners, "ana@example.org", delivery="weekly")
    w.join(partners, "bea@example.org", language="fr", delivery="monthly")
    carl = w.join(partners, "carl@example.org")  # every circular, for now
    dan = w.join(partners, "dan@example.org", language="ar", delivery="weekly")
    fay = w.join(partners, "fay@example.org", delivery="weekly")
    gus = w.join(partners, "gus@example.org", delivery="weekly")
    w.join(partners, "hal@example.org", delivery="weekly")
    w.join(members, "hal@example.org")  # and every circular of the members' list
    suppress(session, email="gus@example.org", reason="hard_bounce", note="bounced")
    session.commit()
    # Monday 2 November, before anything was sent: the period has a run, and no one a mail.
    [(_run_id, outcome)] = w.tick(at(2, 9, 1))
    assert (outcome.sent, outcome.finished) == (0, True)
    assert w.new_digests() == {}

    w.now = at(3, 10)
    c1 = w.send("Budget consultation", [partners], translations=[("fr", "Consultation budgétaire")])
    w.now = at(5, 15)
    c2 = w.send(
        "Global Compact negotiations",
        [partners],
        translations=[("fr", "Négociations du Pacte mondial"), ("ar", "مفاوضات الميثاق العالمي")],
    )
    w.new_digests()  # (the circulars to carl)

    # Week 1: Monday 9 November.
    got = w.tick(at(9, 9, 1))
    digests = w.new_digests()
    assert {address: numbers for address, (_s, numbers) in digests.items()} == {
        "ana@example.org": [c1.number, c2.number],
        "dan@example.org": [c1.number, c2.number],
        "fay@example.org": [c1.number, c2.number],
        "hal@example.org": [c1.number, c2.number],
    }
    assert len(got) == 1  # one run: partners, weekly (bea's monthly is not due)
    run = session.get(DigestRun, got[0][0])
    assert digests["ana@example.org"][0] == (
        "Partner organisations: weekly digest, 9 November 2026 (2 circulars)"
    )
    dan_text = (
        next(m.message for m in smtp_server.messages() if m.rcpt_tos == ["dan@example.org"])
        .get_body(("plain",))
        .get_content()
    )
    assert "مفاوضات الميثاق العالمي" in dan_text  # C2 has an Arabic version
    assert "Budget consultation" in dan_text  # C1 has none: its default
    assert "الموجز الأسبوعي" in dan_text
    # Rendered once per content and language: (C1, C2) in English and in Arabic.
    assert session.scalar(select(func.count()).where(DigestGroup.run_id == run.id)) == 2

    # Week 2: C3 goes to both lists (hal has it already, from members); carl switches to
    # weekly after it, dan leaves, eve joins after it.
    w.now = at(10, 11)
    c3 = w.send("Week two", [partners, members])
    w.now = at(11, 8)
    w.frequency(carl, partners, "weekly")
    assert prefs.leave_list(session, dan, partners.id, origin=ORIGIN)
    session.commit()
    w.join(partners, "eve@example.org", delivery="weekly")
    w.new_digests()
    w.tick(at(16, 9, 1))
    assert {a: n for a, (_s, n) in w.new_digests().items()} == {
        "ana@example.org": [c3.number],
        "fay@example.org": [c3.number],
    }

    # Week 3: C6 on Wednesday; fay pauses until the 25th; carl then prefers monthly.
    w.now = at(18, 14)
    c6 = w.send("Week three", [partners])
    w.new_digests()
    w.now = at(20, 10)
    fay.paused_until = at(25, 0)  # (the preference centre's pause, as of our clock)
    session.commit()
    w.tick(at(23, 9, 1))
    assert {a: n for a, (_s, n) in w.new_digests().items()} == {
        "ana@example.org": [c6.number],
        "carl@example.org": [c6.number],
        "eve@example.org": [c6.number],
        "hal@example.org": [c6.number],
    }
    w.now = at(24, 12)
    w.frequency(carl, partners, "monthly")

    # Week 4: C4 to members only, C5 to partners. Fay is back and catches up on C6.
    w.now = at(25, 10)
    w.send("Members only", [members])
    w.now = at(27, 10)
    c5 = w.send("Week four", [partners], files=[("agenda.pdf", b"%PDF-1.4 agenda")])
    w.new_digests()
    w.tick(at(30, 9, 1))
    week4 = w.new_digests()
    assert {a: n for a, (_s, n) in week4.items()} == {
        "ana@example.org": [c5.number],
        "eve@example.org": [c5.number],
        "fay@example.org": [c6.number, c5.number],
        "hal@example.org": [c5.number],
    }
    # Beat fires again for the same period: nothing more.
    assert w.tick(at(30, 9, 2)) == []
    assert w.new_digests() == {}

    # 1 December: the monthly digest. bea gets the month in French where it exists;
    # carl only what came after his last weekly digest.
    w.tick(at(1, 9, 1, month=12))
    monthly = w.new_digests()
    assert {a: n for a, (_s, n) in monthly.items()} == {
        "bea@example.org": [c1.number, c2.number, c3.number, c6.number, c5.number],
        "carl@example.org": [c5.number],
    }
    assert monthly["bea@example.org"][0] == (
        "Partner organisations : résumé mensuel du 1 décembre 2026 (5 circulaires)"
    )
    bea_text = (
        next(m.message for m in smtp_server.messages() if m.rcpt_tos == ["bea@example.org"])
        .get_body(("plain",))
        .get_content()
    )
    assert "Négociations du Pacte mondial" in bea_text and "Week two" in bea_text

    # The record: every delivery sent once, each with the circulars it held.
    rows = session.execute(
        select(DigestDelivery.email, DigestDelivery.circular_ids, DigestDelivery.status)
        .join(DigestRun, DigestRun.id == DigestDelivery.run_id)
        .where(DigestRun.period_end == at(30, 9))
    ).all()
    assert sorted((email, status) for email, _ids, status in rows) == [
        (address, "sent") for address in sorted(week4)
    ]
    assert {email: ids for email, ids, _ in rows}["fay@example.org"] == [c6.id, c5.id]
    assert gus.id not in session.scalars(select(DigestDelivery.subscriber_id)).all()


def test_a_digest_is_never_empty(world, session, smtp_server):
    w = world
    w.join(w.partners, "ana@example.org", delivery="weekly")
    w.join(w.members, "member@example.org")
    w.now = at(3)
    w.send("To members only", [w.members])
    w.tick(at(9, 9, 5))
    assert w.new_digests() == {}
    run = session.scalar(select(DigestRun))
    assert (run.status, run.total, run.groups_count) == (DigestRunStatus.DONE, 0, 0)
    # A list without digest readers has no run at all.
    assert session.scalar(select(func.count()).select_from(DigestRun)) == 1


def test_beat_firing_twice_at_once_sends_once(app, world, session, smtp_server):
    w = world
    for index in range(6):
        w.join(w.partners, f"p{index}@example.org", delivery="weekly")
    w.now = at(4)
    w.send("Only one digest", [w.partners])
    w.new_digests()
    moment = at(9, 9, 1)

    # Two beats (or a tick redelivered) at the same moment, each in its own session and thread.
    from circulars.extensions import db

    errors = []

    def beat():
        own = Session(db.engine)
        try:
            runs.run_due(own, w.ctx, now=moment)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=beat) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    runs.run_due(session, w.ctx, now=moment + timedelta(minutes=1))
    digests = w.new_digests()
    assert sorted(digests) == [f"p{index}@example.org" for index in range(6)]
    assert session.scalar(select(func.count()).select_from(DigestRun)) == 1
    assert session.scalar(select(DigestRun.sent_count)) == 6


class WorkerDied(BaseException):
    """Stands for SIGKILL: nothing after it runs, no except clause catches it."""


class DyingMessenger:
    """The real messenger, except that the process "dies" before sending message `die_at`."""

    def __init__(self, inner, die_at):
        self.inner, self.die_at, self.sent = inner, die_at, 0

    def connect(self):
        connection = self.inner.connect()
        outer = self

        class Connection:
            def send(self, envelope_from, recipient, message):
                if outer.sent + 1 == outer.die_at:
                    raise WorkerDied
                connection.send(envelope_from, recipient, message)
                outer.sent += 1

            def close(self):
                connection.close()

        return Connection()


def test_a_worker_dying_between_claim_and_mark_and_a_rerun_send_each_digest_once(
    world, session, smtp_server, monkeypatch
):
    w = world
    readers = [f"r{index}@example.org" for index in range(7)]
    for index, address in enumerate(readers):
        w.join(w.partners, address, language="fr" if index % 2 else "en", delivery="weekly")
    w.now = at(4)
    w.send("Crash test", [w.partners], translations=[("fr", "Essai de panne")])
    w.new_digests()
    moment = at(9, 9, 1)

    # First the snapshot dies after rendering one of its two groups: nothing is kept.
    real_render = runs.render_group
    calls = []

    def render_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise WorkerDied
        return real_render(*args, **kwargs)

    monkeypatch.setattr(runs, "render_group", render_then_die)
    with pytest.raises(WorkerDied):
        w.tick(moment)
    session.rollback()
    run = session.scalar(select(DigestRun))
    assert run.status == DigestRunStatus.PENDING
    assert session.scalar(select(func.count()).select_from(DigestDelivery)) == 0
    monkeypatch.setattr(runs, "render_group", real_render)

    # Then delivery dies before its fourth message: three sent, the rest claimed.
    dying = replace(w.ctx, messenger=DyingMessenger(w.ctx.messenger, die_at=4))
    with pytest.raises(WorkerDied):
        runs.run(session, run.id, dying, now=moment)
    session.rollback()
    assert len(w.new_digests()) == 3
    # A re-run within the lease finds everything held: it sends nothing.
    assert runs.run(session, run.id, w.ctx, now=moment + timedelta(seconds=5)).sent == 0
    # The tick sees the run stalled once the lease is over, and the re-run finishes it.
    later = moment + w.ctx.claim_lease + timedelta(seconds=1)
    assert runs.runs_to_resume(session, later) == [run.id]
    outcome = runs.run(session, run.id, w.ctx, now=later)
    assert (outcome.sent, outcome.finished) == (4, True)
    rest = w.new_digests()
    assert len(rest) == 4
    all_mail = [m for m in smtp_server.messages() if "-bounces+d" in m.mail_from]
    assert sorted(m.rcpt_tos[0] for m in all_mail) == sorted(readers)  # each exactly once
    session.expire_all()
    run = session.get(DigestRun, run.id)
    assert (run.status, run.sent_count, run.total) == (DigestRunStatus.DONE, 7, 7)
    assert runs.runs_to_resume(session, later + timedelta(hours=1)) == []


class SlowMessenger:
    """The real messenger, `delay` seconds a message; just before message `then_at`, `then()`."""

    def __init__(self, inner, delay, then_at, then):
        self.inner, self.delay, self.then_at, self.then, self.sent = inner, delay, then_at, then, 0

    def connect(self):
        connection = self.inner.connect()
        outer = self

        class Connection:
            def send(self, envelope_from, recipient, message):
                outer.sent += 1
                if outer.sent == outer.then_at:
                    outer.then()
                time.sleep(outer.delay)
                connection.send(envelope_from, recipient, message)

            def close(self):
                connection.close()

        return Connection()


def test_a_batch_slower_than_its_lease_keeps_its_rows_from_a_second_worker(
    world, session, smtp_server
):
    """A slow relay (or a tight per-second limit) makes a batch outlast its lease: it renews
    its claim on the rows it has not reached, so the tick does not hand them to another
    worker, which would send them too."""
    from circulars.extensions import db

    w = world
    readers = [f"s{index}@example.org" for index in range(6)]
    for address in readers:
        w.join(w.partners, address, delivery="weekly")
    w.now = at(4)
    w.send("Slow relay", [w.partners])
    w.new_digests()
    moment = at(9, 9, 1)
    runs.create_due_runs(session, moment, w.ctx.timezone)
    run_id = session.scalar(select(DigestRun.id))
    assert runs.snapshot(session, run_id, w.ctx, now=moment)

    # Real time from here on: each message takes 0.4 s, the lease is 1.5 s.
    lease = timedelta(seconds=1.5)
    fast = replace(w.ctx, claim_lease=lease, batch_size=50)
    second = []

    def tick_and_second_worker():
        # Message 5 starts 1.6 s after the claim: past the lease it was claimed for.
        own = Session(db.engine)
        try:
            resumable = runs.runs_to_resume(own, utcnow())
            second.append((resumable, runs.run(own, run_id, fast).sent))
        finally:
            own.close()

    slow = replace(
        fast,
        messenger=SlowMessenger(w.ctx.messenger, 0.4, then_at=5, then=tick_and_second_worker),
    )
    outcome = runs.run(session, run_id, slow)
    assert second == [([], 0)], "the tick saw the slow batch's rows as free and sent them again"
    assert (outcome.sent, outcome.finished) == (6, True)
    assert sorted(w.new_digests()) == readers  # each exactly once


def test_temporary_failures_wait_and_permanent_ones_are_recorded(world, session, smtp_server):
    w = world
    w.join(w.partners, "ok@example.org", delivery="weekly")
    w.join(w.partners, "later@example.org", delivery="weekly")
    w.join(w.partners, "gone@example.org", delivery="weekly")
    w.now = at(4)
    w.send("Failures", [w.partners])
    w.new_digests()
    smtp_server.defer["later@example.org"] = 1
    smtp_server.reject["gone@example.org"] = "550 5.1.1 No such user"
    w.tick(at(9, 9, 1))
    assert sorted(w.new_digests()) == ["ok@example.org"]
    run = session.scalar(select(DigestRun))
    assert run.status == DigestRunStatus.RUNNING
    rows = {row.email: row for row in session.scalars(select(DigestDelivery)).all()}
    assert rows["gone@example.org"].status == DigestDeliveryStatus.FAILED
    assert "550" in rows["gone@example.org"].last_error
    assert rows["later@example.org"].status == DigestDeliveryStatus.PENDING
    assert rows["later@example.org"].attempts == 1
    later = at(9, 9, 1) + runs.RETRY_DELAY + timedelta(seconds=1)
    assert runs.runs_to_resume(session, later) == [run.id]
    runs.run(session, run.id, w.ctx, now=later)
    assert sorted(w.new_digests()) == ["later@example.org"]
    session.expire_all()
    run = session.get(DigestRun, run.id)
    assert (run.status, run.sent_count, run.failed_count) == ("done", 2, 1)


def test_each_digest_is_recorded_before_the_relay_takes_the_next(
    world, session, smtp_server, monkeypatch
):
    """The send engine's rule, kept by digests through the same step (sending.attempt): when
    the relay has taken a digest, every digest it took before is recorded as sent, so a
    crash leaves at most the one in flight unrecorded. On PostgreSQL the marks are
    pipelined on a connection of their own, and committed before the relay's "."."""
    w = world
    for i in range(12):
        w.join(w.partners, f"reader{i:02}@example.org", delivery="weekly")
    w.now = at(4)
    w.send("In order", [w.partners])
    w.new_digests()
    url = session.get_bind().url

    def recorded_sent() -> int:
        # A plain connection of its own: the sink's thread must not wait for the sender's.
        query = "SELECT count(*) FROM digest_deliveries WHERE status = 'sent'"
        if url.get_backend_name() == "sqlite":
            import sqlite3

            with closing(sqlite3.connect(url.database)) as raw:
                return int(raw.execute(query).fetchone()[0])
        import psycopg

        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn) as raw:
            return int(raw.execute(query).fetchone()[0])

    seen: list[tuple[int, int]] = []

    def checking(envelope: Any) -> None:
        if "-bounces+d" in envelope.mail_from:
            seen.append((len(seen), recorded_sent()))

    smtp_server.on_data = checking
    w.tick(at(9, 9, 1))

    assert len(w.new_digests()) == 12
    # When the relay took digest k, the k before it were already recorded.
    assert seen == [(k, k) for k in range(12)]


def test_a_branding_save_during_a_run_leaves_that_run_as_it_began(
    world, session, smtp_server, monkeypatch
):
    """The run is rendered once when it starts; its From name is read then too, so a worker
    that takes the run over after a save on the branding page sends it unchanged."""
    from circulars.branding_settings import save_branding, values_of

    w = world
    for i in range(3):
        w.join(w.partners, f"reader{i}@example.org", delivery="weekly")
    w.now = at(4)
    w.send("Branding", [w.partners])
    w.new_digests()
    moment = at(9, 9, 1)
    runs.create_due_runs(session, moment, w.ctx.timezone)
    session.commit()
    run_id = session.scalar(select(DigestRun.id))
    assert runs.snapshot(session, run_id, w.ctx, now=moment)

    values = values_of(w.ctx.current_branding(session))
    renamed = replace(values, name="Red de Migrantes")
    save_branding(session, renamed, files=w.app.extensions["circulars.files"], user=None)
    runs.deliver(session, run_id, w.ctx, now=moment)

    digests = [item for item in smtp_server.messages() if "-bounces+d" in item.mail_from]
    assert len(digests) == 3
    names = {parseaddr(str(item.message["From"]))[0] for item in digests}
    assert names == {w.ctx.branding.name}
    assert "Red de Migrantes" not in names


# --- command line ----------------------------------------------------------------------------


def test_cli_dry_run_prints_what_is_due_and_sends_nothing(world, runner, session, smtp_server):
    w = world
    for index in range(3):
        w.join(w.partners, f"p{index}@example.org", delivery="weekly")
    w.join(w.partners, "m@example.org", delivery="monthly")
    w.now = at(4)
    first = w.send("One", [w.partners])
    w.now = at(5)
    second = w.send("Two", [w.partners])
    w.new_digests()

    result = runner.invoke(["digests", "--dry-run", "--at", "2026-11-09T09:30"])
    assert result.exit_code == 0, result.output
    assert "As of 2026-11-09 09:30 (UTC)" in result.output
    assert (
        "partners weekly, period 2026-11-02 09:00 to 2026-11-09 09:00: 3 recipients "
        "(of 3 weekly readers), 1 digests to render; "
        f"circulars No. {first.number}, No. {second.number}."
    ) in result.output
    assert "monthly" not in result.output.split("period")[-1]
    assert "Dry run: nothing was sent." in result.output
    assert w.new_digests() == {}
    assert session.scalar(select(func.count()).select_from(DigestRun)) == 0

    # Nothing due on a Wednesday: it says when the next ones are.
    quiet = runner.invoke(["digests", "--dry-run", "--at", "2026-11-11T12:00"])
    assert "No digest is due." in quiet.output
    assert "Next: partners monthly on 2026-12-01 09:00." in quiet.output
    assert "Next: partners weekly on 2026-11-16 09:00." in quiet.output

    # Without --dry-run it sends them, once.
    sent = runner.invoke(["digests", "--at", "2026-11-09T09:30", "--list", "partners"])
    assert sent.exit_code == 0, sent.output
    assert "3 sent, 0 failed" in sent.output
    assert sorted(w.new_digests()) == [f"p{index}@example.org" for index in range(3)]
    again = runner.invoke(["digests", "--at", "2026-11-09T09:40"])
    assert "already sent" in again.output
    assert w.new_digests() == {}


def test_cli_refuses_bad_input(runner, session):
    session.add(MailingList(slug="partners", name="Partners"))
    session.commit()
    assert runner.invoke(["digests", "--dry-run", "--at", "next monday"]).exit_code == 2
    assert runner.invoke(["digests", "--dry-run", "--list", "nope"]).exit_code == 2
    future = runner.invoke(["digests", "--at", "2099-01-01T09:00"])
    assert future.exit_code == 2 and "future" in future.output


# --- admin -----------------------------------------------------------------------------------


def test_list_settings_hold_the_digest_schedule(auth, client, session):
    auth.create_user(role="sender")
    auth.login()
    session.add(MailingList(slug="partners", name="Partners"))
    session.commit()
    url = "/admin/lists/partners/settings"
    form = {"description": "", "welcome_message": "", "public": "y"}
    saved = auth.post_form(
        url,
        url,
        {
            **form,
            "digest_weekday": "4",
            "digest_weekly_hour": "16",
            "digest_monthday": "28",
            "digest_monthly_hour": "7",
        },
    )
    assert saved.status_code == 302
    mailing_list = session.scalar(select(MailingList))
    session.refresh(mailing_list)
    assert (
        mailing_list.digest_weekday,
        mailing_list.digest_weekly_hour,
        mailing_list.digest_monthday,
        mailing_list.digest_monthly_hour,
    ) == (4, 16, 28, 7)
    refused = auth.post_form(
        url,
        url,
        {
            **form,
            "digest_weekday": "9",
            "digest_weekly_hour": "16",
            "digest_monthday": "31",
            "digest_monthly_hour": "24",
        },
    )
    assert refused.status_code == 400
    assert "Not a valid choice" in refused.text
    session.refresh(mailing_list)
    assert (mailing_list.digest_weekday, mailing_list.digest_monthday) == (4, 28)
    page = client.get("/admin/lists/partners/digests")
    assert "Fridays at 16:00" in page.text and "day 28 of each month at 07:00" in page.text


def test_preview_and_history_in_the_admin(world, auth, client, session):
    w = world
    auth.create_user(role="editor")
    auth.login()
    w.join(w.partners, "ana@example.org", delivery="weekly")
    w.join(w.partners, "zoe@example.org", language="fr", delivery="weekly")
    w.now = at(4)
    circular = w.send("Preview me", [w.partners], translations=[("fr", "Aperçu")])
    session.execute(
        update(Subscription).values(digest_since=at(1))
    )  # (joined before the send, as of the real clock the preview uses)
    session.commit()

    page = client.get("/admin/lists/partners/digests")
    assert page.status_code == 200
    assert "2 readers take this list weekly" in page.text
    assert "2 of them would get a digest (2 versions" in page.text
    assert "As <strong>ana@example.org</strong>" in page.text
    assert f"Circular No. {circular.number}: Preview me" in page.text
    assert "srcdoc=" in page.text and "Read the full circular" in page.text
    as_zoe = client.get("/admin/lists/partners/digests?subscriber=zoe@example.org")
    assert "Aperçu" in as_zoe.text and "résumé hebdomadaire" in as_zoe.text
    nobody = client.get("/admin/lists/partners/digests?subscriber=who@example.org")
    assert "who@example.org takes no weekly digest" in nobody.text
    monthly = client.get("/admin/lists/partners/digests?frequency=monthly")
    assert "0 readers take this list monthly" in monthly.text
    # Previewing writes nothing.
    assert session.scalar(select(func.count()).select_from(DigestRun)) == 0

    w.tick(at(9, 9, 1))
    history = client.get("/admin/digests")
    run = session.scalar(select(DigestRun))
    assert f"/admin/digests/{run.id}" in history.text
    assert "Partner organisations" in history.text
    detail = client.get(f"/admin/digests/{run.id}")
    assert detail.status_code == 200
    assert "ana@example.org" in detail.text and "zoe@example.org" in detail.text
    assert "2 sent" in detail.text
    assert client.get("/admin/digests/999999").status_code == 404


def test_a_circular_kept_out_of_the_archive_gets_a_signed_expiring_link(
    world, fresh_client, session, smtp_server
):
    w = world
    w.join(w.partners, "ana@example.org", delivery="weekly")
    w.now = at(4)
    public = w.send("In the archive", [w.partners], files=[("public.pdf", b"%PDF public")])
    private = w.send(
        "Internal matter", [w.partners], in_archive=False, files=[("internal.pdf", b"%PDF secret")]
    )
    w.new_digests()
    w.tick(at(9, 9, 1))
    message = next(m.message for m in smtp_server.messages() if "-bounces+d" in m.mail_from)
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    base = "http://circulars.test"
    assert f"{base}/circulars/{public.number}-in-the-archive" in text
    attachment = session.scalar(select(Attachment).where(Attachment.circular_id == public.id))
    assert f"{base}/circulars/{public.number}/attachments/{attachment.id}" in text
    assert f"/circulars/{private.number}-" not in text
    shared = re.search(r"(http://circulars\.test/circulars/shared/[A-Za-z0-9_.\-]+)", text)
    assert shared and shared.group(1) in html
    assert "not in the public archive" in text
    # The files are linked, never attached.
    assert not [part for part in message.iter_attachments()]

    path = urlsplit(shared.group(1)).path
    page = fresh_client.get(path)
    assert page.status_code == 200
    assert "Internal matter" in page.text and "noindex" in page.headers["X-Robots-Tag"]
    secret = session.scalar(select(Attachment).where(Attachment.circular_id == private.id))
    download = fresh_client.get(f"{path}/attachments/{secret.id}")
    assert download.status_code == 200 and download.data == b"%PDF secret"
    # Another circular's attachment through this link, or a forged token: refused.
    assert fresh_client.get(f"{path}/attachments/{attachment.id}").status_code == 404
    assert fresh_client.get(path[:-3] + "xyz").status_code == 400
    assert fresh_client.get(f"/circulars/{private.number}").status_code == 404


# --- end to end: beat's task on the real worker, the real SMTP server, Chromium -------------


@pytest.mark.integration
def test_the_worker_sends_the_due_digest_and_its_mail_is_right(
    app, world, worker, smtp_server, session, fresh_client, request
):
    """The tick runs on a real Celery worker with the real clock: this hour is made due."""
    from circulars.tasks import DIGEST_TICK

    w = world
    now = datetime.now(UTC)
    due = now.replace(minute=0, second=0, microsecond=0)
    w.partners.digest_weekday, w.partners.digest_weekly_hour = due.weekday(), due.hour
    session.commit()
    w.now = due - timedelta(hours=3)
    reader = w.join(w.partners, "amina@example.org", delivery="weekly")
    session.execute(update(reader.__class__).values(name="Amina Diallo"))
    session.commit()
    w.now = due - timedelta(hours=2)
    first = w.send(
        "Global Compact: last round of negotiations",
        [w.partners],
        body=(
            "The **second round** of negotiations on the Global Compact opens in Geneva on "
            "Monday. Member organisations are invited to send their comments on the draft "
            "text before Friday.\n\nDetails follow."
        ),
        files=[("Draft text.pdf", b"%PDF-1.4 draft" * 50), ("Annex – figures.pdf", b"%PDF 2")],
    )
    w.now = due - timedelta(hours=1)
    second = w.send(
        "Regional consultation in Nairobi",
        [w.partners],
        body="Registration for the regional consultation is open until 15 January.",
    )
    w.send(
        "Board minutes",
        [w.partners],
        in_archive=False,
        body="The minutes of the board meeting are attached for partners only.",
        files=[("Minutes.pdf", b"%PDF minutes")],
    )
    w.new_digests()

    app.extensions["celery"].send_task(DIGEST_TICK)
    deadline = datetime.now(UTC) + timedelta(seconds=60)
    digest = None
    while digest is None and datetime.now(UTC) < deadline:
        digest = next((m for m in smtp_server.messages() if "-bounces+d" in m.mail_from), None)
        threading.Event().wait(0.2)
    assert digest is not None, "no digest arrived"
    threading.Event().wait(1)  # a second tick or a redelivery must not add one
    assert len([m for m in smtp_server.messages() if "-bounces+d" in m.mail_from]) == 1

    message = digest.message
    row = session.scalar(select(DigestDelivery))
    assert digest.mail_from == f"secretariat-bounces+d{row.id}@circulars.test"  # VERP
    assert digest.rcpt_tos == ["amina@example.org"]
    assert message["Subject"] == (
        f"Partner organisations: weekly digest, {due.day} {due:%B %Y} (3 circulars)"
    )
    assert message["List-Id"] == "Partner organisations <partners.circulars.test>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = re.fullmatch(r"<(http://circulars\.test/u/[^>]+)>", message["List-Unsubscribe"])
    assert unsubscribe
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Dear Amina Diallo," in text
    page = (
        f"http://circulars.test/circulars/{first.number}-global-compact-last-round-of-negotiations"
    )
    assert f'href="{page}"' in html
    assert f"/circulars/{second.number}-regional-consultation-in-nairobi" in html
    files = session.scalars(
        select(Attachment).where(Attachment.circular_id == first.id).order_by(Attachment.id)
    ).all()
    for item in files:
        assert (
            f'href="http://circulars.test/circulars/{first.number}/attachments/{item.id}"' in html
        )
    assert "/circulars/shared/" in html  # the circular kept out of the archive
    assert "second round of negotiations on the Global Compact opens in Geneva" in text
    assert not list(message.iter_attachments())

    # One click in the mail client leaves the list the digest is for.
    left = fresh_client.post(
        urlsplit(unsubscribe.group(1)).path, data={"List-Unsubscribe": "One-Click"}
    )
    assert left.status_code == 200
    subscription = session.scalar(select(Subscription))
    session.refresh(subscription)
    assert subscription.status == "unsubscribed"

    # What the reader sees, for the README: the HTML part in Chromium.
    artifacts = PROJECT_ROOT / "tests" / "artifacts"
    artifacts.mkdir(exist_ok=True)
    stack = app.extensions["circulars.settings"].database_url.split(":")[0]
    (artifacts / f"digest-{stack}.html").write_text(html, encoding="utf-8")
    browser = request.getfixturevalue("browser")
    tab = browser.new_page(viewport={"width": 680, "height": 900})
    tab.set_content(html)
    tab.screenshot(path=str(artifacts / f"digest-{stack}.png"), full_page=True)
    tab.close()


def test_a_hard_bounce_of_a_digest_suppresses_the_reader(world, session, smtp_server, tmp_path):
    """The bounce comes back to the digest's VERP address (`+d<id>`); the next digest skips them."""
    from circulars.subscribers.bounces import record
    from circulars.subscribers.suppression import is_suppressed

    w = world
    w.join(w.partners, "ghost@example.org", delivery="weekly")
    w.join(w.partners, "ana@example.org", delivery="weekly")
    w.now = at(4)
    w.send("First", [w.partners])
    w.new_digests()
    w.tick(at(9, 9, 1))
    digest = next(m for m in smtp_server.messages() if m.rcpt_tos == ["ghost@example.org"])
    raw = (
        (PROJECT_ROOT / "tests" / "bounces" / "postfix_user_unknown.eml")
        .read_bytes()
        .replace(b"secretariat-bounces+4242@example.org", digest.mail_from.encode())
    )
    assert digest.mail_from.encode() in raw
    bounce = record(session, raw, source="smtp", raw_dir=tmp_path)
    session.commit()
    assert (bounce.kind, bounce.email, bounce.processed) == ("hard", "ghost@example.org", True)
    assert is_suppressed(session, "ghost@example.org") is not None
    # A bounce naming a digest delivery that does not exist changes nothing.
    stray = raw.replace(digest.mail_from.encode(), b"secretariat-bounces+d999999@example.org")
    assert not record(session, stray, source="smtp", raw_dir=tmp_path).processed

    w.now = at(12)
    w.send("Second", [w.partners])
    w.new_digests()
    w.tick(at(16, 9, 1))
    assert sorted(w.new_digests()) == ["ana@example.org"]
