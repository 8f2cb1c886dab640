"""The whole path through a real Celery worker and a real SMTP server, on each stack."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.integration

NAMES = ["Amina", "Li Wei", "José", "Сергей", "سارة", "O'Hara & Sons <Ltd>"]


def write_csv(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    lines = ["email,name,language,organization"]
    for email, name, language, organization in rows:
        quoted = [
            f'"{value}"' if "," in value or '"' in value else value
            for value in (email, name, language, organization)
        ]
        lines.append(",".join(quoted))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def two_overlapping_lists(runner, tmp_path):
    """200 subscribers: 0-129 on members, 70-199 on partners (60 on both)."""
    assert (
        runner.invoke(["lists", "create", "members", "--name", "Member organisations"]).exit_code
        == 0
    )
    assert runner.invoke(["lists", "create", "partners", "--name", "Partners"]).exit_code == 0
    people = [
        (f"person{i:03d}@example.org", f"{NAMES[i % len(NAMES)]} {i}", "en", f"Org {i % 17}")
        for i in range(200)
    ]
    members = write_csv(tmp_path / "members.csv", people[:130])
    partners = write_csv(tmp_path / "partners.csv", people[70:])
    result = runner.invoke(["subscribers", "import", str(members), "--list", "members"])
    assert result.exit_code == 0, result.output
    assert "130 subscribed (130 new)" in result.output
    result = runner.invoke(["subscribers", "import", str(partners), "--list", "partners"])
    assert result.exit_code == 0, result.output
    assert "130 subscribed (70 new)" in result.output
    return [email for email, *_ in people]


def test_send_reaches_every_subscriber_exactly_once(
    app, runner, worker, smtp_server, client, tmp_path, two_overlapping_lists
):
    body = tmp_path / "body.md"
    body.write_text("Dear colleagues,\n\nThe **second round** starts now.\n", encoding="utf-8")
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 800)  # about 200 KB, every byte value
    annex = tmp_path / "Déclaration finale – annexe.pdf"
    annex.write_bytes(b"%PDF-1.4 annex\n" + b"\x00\xff" * 5000)

    result = runner.invoke(
        [
            "circulars",
            "create",
            "--title",
            "Global Compact: last round of negotiations",
            "--body",
            str(body),
            "--attach",
            str(report),
            "--attach",
            str(annex),
            "--list",
            "members",
            "--list",
            "partners",
        ]
    )
    assert result.exit_code == 0, result.output
    circular_id = int(result.output.strip())

    result = runner.invoke(
        [
            "send",
            str(circular_id),
            "--list",
            "members",
            "--list",
            "partners",
            "--wait",
            "--timeout",
            "240",
        ]
    )
    assert result.exit_code == 0, result.output
    assert "200 sent, 0 failed, of 200 recipients" in result.output

    received = smtp_server.wait_for(200, timeout=30)
    assert len(received) == 200
    per_recipient = Counter(rcpt for item in received for rcpt in item.rcpt_tos)
    assert set(per_recipient) == set(two_overlapping_lists)
    assert set(per_recipient.values()) == {1}

    expected = {report.name: report.read_bytes(), annex.name: annex.read_bytes()}
    message_ids = set()
    for item in received:
        message = item.message
        # Envelope: VERP return path naming the delivery.
        assert re.fullmatch(r"secretariat-bounces\+\d+@circulars\.test", item.mail_from)
        assert parseaddr(message["To"])[1] == item.rcpt_tos[0]
        assert message["Subject"] == "Circular No. 1: Global Compact: last round of negotiations"
        assert message["From"] == "Migrant Rights Network <secretariat@circulars.test>"
        message_ids.add(message["Message-ID"])
        assert message["List-Id"] in (
            "Member organisations <members.circulars.test>",
            "Partners <partners.circulars.test>",
        )
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert (
            "=?"
            not in item.data.split(b"\r\n\r\n", 1)[0]
            .decode()
            .split("List-Unsubscribe:")[1]
            .split("\r\nList-Unsubscribe-Post")[0]
        )
        assert message.get_content_type() == "multipart/mixed"
        text = message.get_body(preferencelist=("plain",)).get_content()
        html = message.get_body(preferencelist=("html",)).get_content()
        assert "second round" in text and "<strong>second round</strong>" in html
        assert "%%CIRCULARS" not in text and "%%CIRCULARS" not in html
        attachments = {
            part.get_filename(): part.get_payload(decode=True)
            for part in message.iter_attachments()
        }
        assert {name: hashlib.sha256(data).hexdigest() for name, data in attachments.items()} == {
            name: hashlib.sha256(data).hexdigest() for name, data in expected.items()
        }
    assert len(message_ids) == 200

    # The one-click link of one message unsubscribes that person from that list, and only that.
    target = next(item for item in received if item.rcpt_tos == ["person100@example.org"])
    url = target.message["List-Unsubscribe"].strip("<>").split(">")[0]
    path = urlsplit(url).path
    fresh = app.test_client()  # no cookies, no CSRF token: as a mail provider posts it
    response = fresh.post(path, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200

    from circulars.extensions import db
    from circulars.models import MailingList, Subscriber, Subscription

    subscriber = db.session.query(Subscriber).filter_by(email="person100@example.org").one()
    statuses = {
        db.session.get(MailingList, sub.list_id).slug: sub.status
        for sub in db.session.query(Subscription).filter_by(subscriber_id=subscriber.id)
    }
    list_slug = target.message["List-Id"].split("<")[1].split(".")[0]
    assert statuses[list_slug] == "unsubscribed"
    other = {"members", "partners"} - {list_slug}
    assert all(statuses[slug] == "confirmed" for slug in other)
    db.session.commit()

    # Sending the same circular again reaches no one twice.
    result = runner.invoke(["send", str(circular_id), "--list", "members", "--list", "partners"])
    assert result.exit_code == 2
    assert "No one would receive it" in result.output


def test_permanent_and_temporary_failures(app, runner, worker, smtp_server, tmp_path):
    runner.invoke(["lists", "create", "members", "--name", "Members"])
    rows = [(f"m{i}@example.org", f"M {i}", "en", "") for i in range(20)]
    result = runner.invoke(
        ["subscribers", "import", str(write_csv(tmp_path / "m.csv", rows)), "--list", "members"]
    )
    assert result.exit_code == 0
    smtp_server.reject["m3@example.org"] = (
        "550 5.1.1 <m3@example.org>: Recipient address rejected: User unknown"
    )
    smtp_server.defer["m7@example.org"] = 2  # refused twice with 451, then accepted
    body = tmp_path / "b.md"
    body.write_text("Hello.", encoding="utf-8")
    circular_id = int(
        runner.invoke(
            ["circulars", "create", "--title", "Faults", "--body", str(body), "--list", "members"]
        ).output
    )

    result = runner.invoke(["send", str(circular_id), "--wait", "--timeout", "120"])
    assert result.exit_code == 1, result.output  # one delivery failed
    assert "19 sent, 1 failed, of 20 recipients" in result.output
    delivered = Counter(rcpt for item in smtp_server.messages() for rcpt in item.rcpt_tos)
    assert "m3@example.org" not in delivered
    assert delivered["m7@example.org"] == 1
    assert sum(delivered.values()) == 19

    from circulars.extensions import db
    from circulars.models import Delivery

    failed = db.session.query(Delivery).filter_by(status="failed").one()
    assert failed.email == "m3@example.org"
    assert failed.last_error.startswith("550 5.1.1")
    deferred = db.session.query(Delivery).filter_by(email="m7@example.org").one()
    assert deferred.status == "sent" and deferred.attempts == 3
    db.session.commit()
