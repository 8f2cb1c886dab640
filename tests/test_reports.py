"""Send reports and subscriber history: figures, reasons, timeline, CSV, access, history.

The deliveries come from the real engine sending to the test SMTP server (with
some addresses refused for good, one deferred, one subscriber deleted before
its batch), the bounces from real returned messages of the bounce corpus
through the intake's `record`. Only the times are set by hand, so the timeline
buckets are known.
"""

from __future__ import annotations

import csv
import html
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from circulars.models import (
    Bounce,
    Circular,
    Delivery,
    MailingList,
    Send,
    Subscriber,
    Suppression,
)
from circulars.sending import engine, reports
from circulars.sending.reports import bucket_size, send_report, subscriber_history, timeline
from circulars.sending.service import create_send
from circulars.subscribers.bounces import record
from circulars.subscribers.service import add_to_list

from conftest import Auth

CORPUS = Path(__file__).parent / "bounces"
T0 = datetime(2026, 11, 2, 9, 0, 0, tzinfo=UTC)
FORMULA = '=HYPERLINK("http://evil.example/","click")'
REFUSED = "550 5.1.1 <{}>: Recipient address rejected: User unknown"


def returned(name: str, delivery: Delivery) -> bytes:
    """A corpus message about `delivery`: its VERP id and its address put in."""
    raw = (CORPUS / name).read_bytes()
    raw = raw.replace(b"bounces+4242@", f"bounces+{delivery.id}@".encode())
    for placeholder in (b"ghost@example.org", b"full.box@example.org"):
        raw = raw.replace(placeholder, delivery.email.encode())
    return raw


@dataclass
class Scenario:
    send: Send
    members: MailingList
    by_email: dict[str, Delivery]


def sign_in(auth: Any, role: str) -> None:
    auth.create_user(f"{role}@example.org", role)
    auth.login(f"{role}@example.org")


@pytest.fixture
def ctx(app: Any) -> Any:
    return app.extensions["circulars.send_context"]


@pytest.fixture
def scenario(app: Any, session: Any, ctx: Any, smtp_server: Any, tmp_path: Path) -> Scenario:
    """Ten recipients: six accepted, two refused for good, one deferred, one deleted."""
    members = MailingList(slug="members", name="Members")
    session.add(members)
    session.flush()
    names = {
        "a0@example.org": "Zoë Ñúñez-Ødegård",
        "a1@example.org": FORMULA,
        "a2@example.org": "دينا",
    }
    for index in range(10):
        email = f"a{index}@example.org"
        add_to_list(session, members, email, name=names.get(email, f"Person {index}"))
    session.commit()
    circular = Circular(title="Global Compact", body_markdown="Hello.")
    session.add(circular)
    session.commit()
    send = create_send(session, circular.id, [members.id])
    session.commit()
    ranges = engine.start_send(session, send.id, ctx)

    smtp_server.reject["a6@example.org"] = REFUSED.format("a6@example.org")
    smtp_server.reject["a7@example.org"] = REFUSED.format("a7@example.org")
    smtp_server.defer["a8@example.org"] = 99  # stays pending after one attempt
    gone = session.scalar(select(Subscriber).where(Subscriber.email == "a9@example.org"))
    session.delete(gone)  # deleted between the snapshot and its batch
    session.commit()
    for first, last in ranges:
        engine.deliver_batch(session, send.id, first, last, ctx)
    session.expire_all()

    # Known times: started at T0, accepted at +0.2 s (3), +1.5 s (2), +3.9 s (1).
    accepted = session.scalars(
        select(Delivery.id)
        .where(Delivery.send_id == send.id, Delivery.status == "sent")
        .order_by(Delivery.id)
    ).all()
    assert len(accepted) == 6
    offsets = [0.2, 0.2, 0.2, 1.5, 1.5, 3.9]
    for delivery_id, offset in zip(accepted, offsets, strict=True):
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id)
            .values(sent_at=T0 + timedelta(seconds=offset))
        )
    session.execute(update(Send).where(Send.id == send.id).values(started_at=T0))
    session.commit()

    by_email = {
        row.email: row
        for row in session.scalars(select(Delivery).where(Delivery.send_id == send.id))
    }
    raw_dir = tmp_path / "bounces"

    def came_back(corpus_file: str, email: str, source: str = "smtp") -> None:
        record(session, returned(corpus_file, by_email[email]), source=source, raw_dir=raw_dir)

    # Two hard bounces (same reply, each naming its own address), a soft bounce twice
    # and then a complaint for a3, and an out-of-office reply for a4.
    came_back("postfix_user_unknown.eml", "a0@example.org")
    came_back("postfix_user_unknown.eml", "a1@example.org")
    came_back("postfix_mailbox_full_delayed.eml", "a3@example.org", "imap")
    came_back("postfix_mailbox_full_delayed.eml", "a3@example.org", "imap")
    came_back("arf_abuse_complaint.eml", "a3@example.org")
    came_back("out_of_office.eml", "a4@example.org", "pop3")
    session.commit()
    return Scenario(session.get(Send, send.id), members, by_email)


def test_counts_by_status_and_by_bounce_kind(session, scenario):
    report = send_report(session, scenario.send)
    # Every status is listed (a newer one, such as cancelled, with 0); these hold the rows.
    assert {status for status in report.by_status} >= {"pending", "sent", "failed"}
    assert {k: n for k, n in report.by_status.items() if n} == {
        "pending": 1,
        "sent": 6,
        "failed": 3,
    }
    assert report.total == 10
    kinds = {kind: (t.recipients, t.messages) for kind, t in report.bounces.items()}
    assert kinds == {"hard": (2, 2), "soft": (1, 2), "complaint": (1, 1), "unknown": (1, 1)}
    assert report.bounce_rate("hard") == pytest.approx(2 / 6)


def test_failure_reasons_group_replies_that_differ_only_by_the_address(session, scenario):
    report = send_report(session, scenario.send)
    assert [(r.text, r.count) for r in report.failure_reasons] == [
        ("550 5.1.1 <address>: Recipient address rejected: User unknown", 2),
        ("subscriber deleted before sending", 1),
    ]
    assert report.other_failures == 0
    # The deferred one is still waiting, with the temporary reply on record.
    assert scenario.by_email["a8@example.org"].last_error.startswith("451")


def test_bounce_reasons_by_kind_code_and_diagnostic(session, scenario):
    report = send_report(session, scenario.send)
    reasons = [(r.kind, r.code, r.count) for r in report.bounce_reasons]
    assert reasons[0] == ("hard", "5.1.1", 2)  # the most frequent first, addresses blanked
    assert "<address>" in report.bounce_reasons[0].text
    assert "a0@example.org" not in report.bounce_reasons[0].text
    assert ("soft", "4.2.2", 2) in reasons
    assert ("complaint", "", 1) in reasons
    assert sum(r.count for r in report.bounce_reasons) + report.other_bounces == 6


def test_timeline_counts_per_second_for_a_short_send(session, scenario):
    report = send_report(session, scenario.send)
    line = report.timeline
    assert line.seconds == 1
    assert [(b.start, b.count) for b in line.buckets] == [
        (T0, 3),
        (T0 + timedelta(seconds=1), 2),
        (T0 + timedelta(seconds=2), 0),
        (T0 + timedelta(seconds=3), 1),
    ]
    assert line.peak == 3 and line.peak_rate == 3.0
    assert report.first_sent_at == T0 + timedelta(milliseconds=200)
    assert report.last_sent_at == T0 + timedelta(milliseconds=3900)


def test_timeline_uses_minutes_for_a_long_send(session, scenario):
    sent = [row for row in scenario.by_email.values() if row.status == "sent"]
    times = [
        T0 + timedelta(seconds=10),
        T0 + timedelta(seconds=10),
        T0 + timedelta(minutes=7),
        T0 + timedelta(minutes=7, seconds=59),
        T0 + timedelta(hours=1, minutes=1),
        T0 + timedelta(hours=2),
    ]
    for row, when in zip(sent, times, strict=True):
        session.execute(update(Delivery).where(Delivery.id == row.id).values(sent_at=when))
    session.execute(
        update(Send)
        .where(Send.id == scenario.send.id)
        .values(finished_at=T0 + timedelta(hours=2, seconds=30))
    )
    session.commit()
    session.expire_all()
    report = send_report(session, session.get(Send, scenario.send.id))
    line = report.timeline
    # Two hours do not fit in 60 bars of 2 minutes: 5-minute bars, on whole minutes.
    assert line.seconds == 300 and line.unit == "5 min"
    assert len(line.buckets) == 25
    assert all(b.start.minute % 5 == 0 and b.start.second == 0 for b in line.buckets)
    counts = {b.start: b.count for b in line.buckets if b.count}
    assert counts == {
        T0: 2,
        T0 + timedelta(minutes=5): 2,
        T0 + timedelta(hours=1): 1,
        T0 + timedelta(hours=2): 1,
    }
    assert report.duration == timedelta(hours=2, seconds=30)
    assert report.average_rate == pytest.approx(6 / 7230)


def test_bucket_size_grows_with_the_span():
    assert bucket_size(0) == 1
    assert bucket_size(59) == 1
    assert bucket_size(61) == 2
    assert bucket_size(600) == 10
    assert bucket_size(3600) == 60
    assert bucket_size(86400) == 1800
    assert bucket_size(30 * 86400) == 86400


def test_timeline_of_a_send_that_has_sent_nothing(session, scenario):
    session.execute(
        update(Delivery).where(Delivery.send_id == scenario.send.id).values(status="pending")
    )
    session.commit()
    line = timeline(session, scenario.send.id, T0)
    assert line.buckets == [] and line.peak == 0


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_has_every_delivery_with_its_bounce_and_neutralised_formulas(
    auth, client, session, scenario
):
    sign_in(auth, "sender")
    response = client.get(f"/admin/sends/{scenario.send.id}/deliveries.csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    assert response.headers["Cache-Control"] == "no-store"
    text = response.get_data(as_text=True)
    assert text.splitlines()[0] == (
        "email,name,list,status,attempts,sent_at,last_error,"
        "bounce_kind,bounce_code,bounce_diagnostic,language"
    )
    rows = {row["email"]: row for row in read_csv(text)}
    assert len(rows) == 10
    assert rows["a0@example.org"]["name"] == "Zoë Ñúñez-Ødegård"
    assert rows["a2@example.org"]["name"] == "دينا"
    assert rows["a1@example.org"]["name"] == "'" + FORMULA  # shown as text, never run
    assert rows["a0@example.org"] | {"bounce_diagnostic": ""} == {
        "email": "a0@example.org",
        "name": "Zoë Ñúñez-Ødegård",
        "list": "Members",
        "status": "sent",
        "attempts": "1",
        "sent_at": "2026-11-02T09:00:00Z",
        "last_error": "",
        "bounce_kind": "hard",
        "bounce_code": "5.1.1",
        "bounce_diagnostic": "",
        "language": "en",
    }
    assert "a0@example.org" in rows["a0@example.org"]["bounce_diagnostic"]
    assert rows["a6@example.org"]["status"] == "failed"
    assert rows["a6@example.org"]["last_error"] == REFUSED.format("a6@example.org")
    assert rows["a8@example.org"]["status"] == "pending"
    assert rows["a9@example.org"]["last_error"] == "subscriber deleted before sending"
    # Soft bounces twice, then a complaint: the complaint is the telling one.
    assert rows["a3@example.org"]["bounce_kind"] == "complaint"
    assert rows["a4@example.org"]["bounce_kind"] == "unknown"
    assert rows["a5@example.org"]["bounce_kind"] == ""


def test_csv_streams_in_batches(session, scenario, monkeypatch):
    monkeypatch.setattr(reports, "CSV_BATCH", 3)
    pieces = list(reports.iter_deliveries_csv(session, scenario.send.id))
    # The header, then one piece per batch of three rows (10 rows: 4 batches).
    assert len(pieces) == 5
    assert all(len(read_csv(pieces[0] + piece)) <= 3 for piece in pieces[1:])
    assert len(read_csv("".join(pieces))) == 10


def test_report_page_shows_counts_reasons_and_an_accessible_chart(
    auth, client, session, scenario, smtp_server
):
    sign_in(auth, "sender")
    page = client.get(f"/admin/sends/{scenario.send.id}/report")
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert re.search(r'id="count-sent">6<', page.text)
    assert re.search(r'id="count-failed">3<', page.text)
    assert re.search(r'id="count-pending">1<', page.text)
    assert "550 5.1.1 <address>: Recipient address rejected: User unknown" in text
    assert "subscriber deleted before sending" in text
    assert '<svg viewBox="0 0 46 120"' in page.text  # four bars of 10 with gaps of 2
    assert page.text.count("<rect ") == 4
    assert 'role="img"' in page.text and "<title" in page.text
    assert "<td>3</td>" in page.text  # the figures as a table too
    assert f"/admin/sends/{scenario.send.id}/deliveries.csv" in page.text
    # Linked from the send page, the list of sends and the circular.
    for source in (
        f"/admin/sends/{scenario.send.id}",
        "/admin/sends",
        f"/admin/circulars/{scenario.send.circular_id}",
    ):
        assert f"/admin/sends/{scenario.send.id}/report" in client.get(source).text, source


def test_report_page_escapes_what_servers_said(auth, client, session, scenario):
    target = scenario.by_email["a6@example.org"]
    session.execute(
        update(Delivery)
        .where(Delivery.id == target.id)
        .values(last_error='550 <script>alert("x")</script>')
    )
    session.commit()
    sign_in(auth, "admin")
    page = client.get(f"/admin/sends/{scenario.send.id}/report")
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert" in page.text


def test_report_of_a_send_not_started_yet(auth, client, session):
    members = MailingList(slug="members", name="Members")
    session.add(members)
    session.flush()
    add_to_list(session, members, "only@example.org", name="Only")
    circular = Circular(title="Not yet", body_markdown="Soon.")
    session.add(circular)
    session.commit()
    queued = create_send(session, circular.id, [members.id])
    session.commit()
    report = send_report(session, queued)
    assert report.total == 0 and report.duration is None and report.average_rate is None
    assert report.timeline.buckets == [] and report.failure_reasons == []
    sign_in(auth, "sender")
    page = client.get(f"/admin/sends/{queued.id}/report")
    assert page.status_code == 200
    assert "No message has been accepted yet." in page.text
    assert "not finished" in page.text
    csv_text = client.get(f"/admin/sends/{queued.id}/deliveries.csv").get_data(as_text=True)
    assert csv_text.splitlines() == [",".join(reports.CSV_COLUMNS)]


def test_report_of_an_unknown_send_is_404(auth, client):
    sign_in(auth, "admin")
    assert client.get("/admin/sends/999999/report").status_code == 404
    assert client.get("/admin/sends/999999/deliveries.csv").status_code == 404


@pytest.mark.parametrize("suffix", ["report", "deliveries.csv"])
def test_reports_need_sign_in_and_the_sender_role(app, client, session, scenario, suffix):
    url = f"/admin/sends/{scenario.send.id}/{suffix}"
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and "/admin/login" in anonymous.headers["Location"]
    expected = {"editor": 403, "sender": 200, "admin": 200}
    for role, status in expected.items():
        own_client = type(client)(app, app.response_class)
        sign_in(Auth(own_client, session), role)
        assert own_client.get(url).status_code == status, role
        # The link is offered only to those who may follow it.
        listed = f"/admin/sends/{scenario.send.id}/report" in own_client.get("/admin/sends").text
        assert listed == (status == 200), role


# --- subscriber history ------------------------------------------------------------------


def test_subscriber_history_lists_deliveries_and_bounces_newest_first(
    auth, client, session, scenario, ctx, tmp_path
):
    person = session.scalar(select(Subscriber).where(Subscriber.email == "a3@example.org"))
    # The complaint suppressed a3; lift that so the second circular reaches them.
    session.execute(delete(Suppression))
    session.commit()
    # A second circular to the same person, later; and a bounce that names no delivery.
    second = Circular(title="Follow-up <b>note</b>", body_markdown="Again.")
    session.add(second)
    session.commit()
    send2 = create_send(session, second.id, [scenario.members.id])
    session.commit()
    for first, last in engine.start_send(session, send2.id, ctx):
        engine.deliver_batch(session, send2.id, first, last, ctx)
    later = T0 + timedelta(days=3)
    session.execute(
        update(Delivery)
        .where(Delivery.send_id == send2.id, Delivery.status == "sent")
        .values(sent_at=later)
    )
    session.execute(
        update(Bounce)
        .where(Bounce.subscriber_id == person.id)
        .values(received_at=T0 + timedelta(hours=1))
    )
    stray = Bounce(
        email="a3@example.org",
        kind="hard",
        status_code="5.2.1",
        diagnostic="mailbox disabled",
        source="pop3",
        received_at=T0 + timedelta(days=5),
    )
    session.add(stray)
    session.commit()

    history = subscriber_history(session, person.id, person.email, per_page=50)
    summary = [(e.event, e.status, e.circular_number) for e in history.entries]
    assert history.total == 6
    assert summary[0] == ("bounce", "hard", None)  # the stray one, newest
    assert summary[1] == ("delivery", "sent", 2)
    assert [e.event for e in history.entries[2:5]] == ["bounce"] * 3
    assert summary[-1] == ("delivery", "sent", 1)
    assert history.entries[-1].circular == "Circular No. 1: Global Compact"
    assert {e.status for e in history.entries[2:5]} == {"soft", "complaint"}
    dates = [e.at for e in history.entries]
    assert dates == sorted(dates, reverse=True)

    # Pages of two: three pages, the last holding the oldest delivery.
    page3 = subscriber_history(session, person.id, person.email, page=3, per_page=2)
    assert page3.pages == 3 and not page3.has_next and page3.has_prev
    assert [(e.event, e.circular_number) for e in page3.entries][-1] == ("delivery", 1)
    # Someone else's history does not include a3's bounces.
    other = session.scalar(select(Subscriber).where(Subscriber.email == "a5@example.org"))
    assert all(
        e.event == "delivery" for e in subscriber_history(session, other.id, other.email).entries
    )

    sign_in(auth, "sender")
    page = client.get(f"/admin/subscribers/{person.id}")
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert "Complaint received" in text and "Soft bounce received" in text
    assert "mailbox disabled" in text and "not tied to a send" in text
    assert "Circular No. 2: Follow-up <b>note</b>" in text
    assert "Follow-up <b>note" not in page.text  # escaped in the page


def test_subscriber_history_pages_on_the_admin_page(auth, client, session, scenario):
    person = session.scalar(select(Subscriber).where(Subscriber.email == "a4@example.org"))
    for index in range(30):
        session.add(
            Bounce(
                email=person.email,
                kind="soft",
                status_code="4.2.2",
                diagnostic=f"mailbox full #{index:02d}",
                source="imap",
                received_at=T0 + timedelta(days=1, minutes=index),
            )
        )
    session.commit()
    sign_in(auth, "admin")
    first = client.get(f"/admin/subscribers/{person.id}")
    # The out-of-office reply (received now), then the 30 soft bounces, then the delivery.
    assert "Page 1 of 2 · 32 in all" in first.text
    assert "mailbox full #29" in first.text and "mailbox full #06" in first.text
    assert "mailbox full #05" not in first.text and "Sent to them" not in first.text
    second = client.get(f"/admin/subscribers/{person.id}?page=2")
    assert "mailbox full #05" in second.text and "mailbox full #06" not in second.text
    assert "Sent to them" in second.text  # the delivery, oldest, is on the last page


def test_history_survives_a_deleted_send_row(session, scenario):
    """Bounces whose delivery went with its send stay in the history, untied."""
    person = session.scalar(select(Subscriber).where(Subscriber.email == "a0@example.org"))
    session.execute(delete(Send).where(Send.id == scenario.send.id))
    session.commit()
    history = subscriber_history(session, person.id, person.email)
    assert [(e.event, e.send_id) for e in history.entries] == [("bounce", None)]
