"""Bounces and complaints: a corpus of real-world formats, the policy, and both intakes.

The messages in tests/bounces/ are written for these tests after the formats
Postfix, Exim, Exchange, Gmail and qmail use; their VERP address names delivery
4242, which each test replaces with a delivery it created.
"""

from __future__ import annotations

import re
import smtplib
import socketserver
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from circulars.models import (
    Bounce,
    Circular,
    Delivery,
    MailingList,
    Send,
    SendStatus,
    Subscriber,
    Suppression,
    utcnow,
)
from circulars.subscribers.bounce_intake import (
    BounceIntake,
    BounceReceiver,
    mailbox_from_url,
    poll,
)
from circulars.subscribers.bounces import BouncePolicy, classify, record
from circulars.subscribers.suppression import is_suppressed

from conftest import free_port

CORPUS = Path(__file__).parent / "bounces"

# file -> (kind, address the report names, status code, suppression reason or None)
EXPECTED = {
    "postfix_user_unknown.eml": ("hard", "ghost@example.org", "5.1.1", "hard_bounce"),
    "exim_plain.eml": ("hard", "nobody.here@example.org", "5.1.1", "hard_bounce"),
    "exim_failed_recipients_only.eml": ("hard", "closed.account@example.org", "", "hard_bounce"),
    "exchange_recipnotfound.eml": (
        "hard",
        "former.staff@partner.example.org",
        "5.1.10",
        "hard_bounce",
    ),
    "gmail_nosuchuser.eml": ("hard", "no.such.person@gmail.example.org", "5.1.1", "hard_bounce"),
    "qmail_no_mailbox.eml": ("hard", "departed@example.org", "5.1.1", "hard_bounce"),
    "postfix_mailbox_full_delayed.eml": ("soft", "full.box@example.org", "4.2.2", None),
    "arf_abuse_complaint.eml": ("complaint", "annoyed.reader@isp.example.net", "", "complaint"),
    "out_of_office.eml": ("unknown", "", "", None),
    "garbage_binary.eml": ("unknown", "", "", None),
    "garbage_truncated_mime.eml": ("unknown", "", "", None),
    "garbage_empty.eml": ("unknown", "", "", None),
}


def corpus(name: str, delivery_id: int | None = None) -> bytes:
    raw = (CORPUS / name).read_bytes()
    if delivery_id is not None:
        raw = raw.replace(b"bounces+4242@", f"bounces+{delivery_id}@".encode())
    return raw


def crlf(raw: bytes) -> bytes:
    """As it travels over SMTP (the files are stored with bare LF line ends)."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.fixture
def make_delivery(session):
    """A sent delivery to `email` (subscriber created on the way), as the engine leaves it."""
    members = MailingList(slug="members", name="Members")
    circular = Circular(title="Circular for bounces")
    session.add_all([members, circular])
    session.flush()
    send = Send(circular_id=circular.id, status=SendStatus.DONE)
    session.add(send)
    session.flush()

    def make(email: str) -> Delivery:
        subscriber = session.scalar(select(Subscriber).where(Subscriber.email == email))
        if subscriber is None:
            subscriber = Subscriber(email=email)
            session.add(subscriber)
            session.flush()
        delivery = Delivery(
            send_id=send.id,
            subscriber_id=subscriber.id,
            list_id=members.id,
            email=email,
            status="sent",
            sent_at=utcnow(),
        )
        session.add(delivery)
        session.commit()
        return delivery

    make.send = send  # type: ignore[attr-defined]
    return make


def test_every_corpus_file_is_expected():
    assert sorted(p.name for p in CORPUS.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_classification_of_each_format(name):
    kind, address, code, _reason = EXPECTED[name]
    verdict = classify(corpus(name))
    assert verdict.kind == kind
    assert verdict.email == address
    assert verdict.status_code == code
    if kind != "unknown" or name.startswith(("out_", "garbage_truncated")):
        assert verdict.delivery_id == 4242  # the VERP address found
    if kind in ("hard", "soft"):
        assert verdict.diagnostic  # the reason in words, for the admin page


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_format_suppresses_the_right_subscriber(session, make_delivery, tmp_path, name):
    kind, address, code, reason = EXPECTED[name]
    target = address or "someone@example.org"
    bystander = make_delivery("bystander@example.org")
    delivery = make_delivery(target)

    bounce = record(session, corpus(name, delivery.id), source="smtp", raw_dir=tmp_path)
    session.commit()

    assert bounce.kind == kind
    assert (tmp_path / bounce.raw_path).read_bytes() == corpus(name, delivery.id)
    found = is_suppressed(session, target)
    if reason is None:
        assert found is None
    else:
        assert found is not None and found.reason == reason
        assert bounce.processed
        assert bounce.subscriber_id == delivery.subscriber_id
        assert bounce.email == target
        assert bounce.status_code == code
    assert is_suppressed(session, bystander.email) is None


def test_acts_on_the_address_we_sent_to_not_the_one_the_bounce_quotes(
    session, make_delivery, tmp_path
):
    # The delivery went to ana@; the (forged or forwarded) report names ghost@.
    delivery = make_delivery("ana@example.org")
    make_delivery("ghost@example.org")
    record(
        session, corpus("postfix_user_unknown.eml", delivery.id), source="smtp", raw_dir=tmp_path
    )
    session.commit()
    assert is_suppressed(session, "ana@example.org") is not None
    assert is_suppressed(session, "ghost@example.org") is None


def test_a_bounce_naming_no_delivery_of_ours_is_stored_and_ignored(
    session, make_delivery, tmp_path
):
    make_delivery("ghost@example.org")
    raw = corpus("postfix_user_unknown.eml").replace(b"-bounces+4242@", b"-nobody@")
    bounce = record(session, raw, source="smtp", raw_dir=tmp_path)
    session.commit()
    assert bounce.kind == "hard" and bounce.delivery_id is None and not bounce.processed
    assert is_suppressed(session, "ghost@example.org") is None


def test_soft_bounces_suppress_when_they_reach_the_limit_within_the_window(
    session, make_delivery, tmp_path
):
    policy = BouncePolicy(soft_limit=3, soft_window_days=14)
    delivery = make_delivery("full.box@example.org")
    raw = corpus("postfix_mailbox_full_delayed.eml", delivery.id)

    old = record(session, raw, source="smtp", raw_dir=tmp_path, policy=policy)
    old.received_at = utcnow() - timedelta(days=20)  # outside the window: does not count
    stray = raw.replace(b"-bounces+", b"-elsewhere+")  # names no delivery: does not count
    assert not record(session, stray, source="smtp", raw_dir=tmp_path, policy=policy).processed
    session.commit()
    for _ in range(2):
        record(session, raw, source="smtp", raw_dir=tmp_path, policy=policy)
        session.commit()
        assert is_suppressed(session, "full.box@example.org") is None
    record(session, raw, source="smtp", raw_dir=tmp_path, policy=policy)
    session.commit()
    found = is_suppressed(session, "full.box@example.org")
    assert found is not None and found.reason == "soft_bounce"
    assert "3 soft bounces in 14 days" in found.note


def test_a_hard_bounce_after_a_complaint_keeps_the_complaint(session, make_delivery, tmp_path):
    delivery = make_delivery("annoyed.reader@isp.example.net")
    record(session, corpus("arf_abuse_complaint.eml", delivery.id), source="imap", raw_dir=tmp_path)
    raw = corpus("postfix_user_unknown.eml", delivery.id)
    record(session, raw, source="smtp", raw_dir=tmp_path)
    session.commit()
    rows = session.scalars(select(Suppression)).all()
    assert [row.reason for row in rows] == ["complaint"]


# --- the SMTP / LMTP receiver ------------------------------------------------------------


@pytest.fixture
def intake(app, tmp_path):
    from circulars.extensions import db

    engine = db.engine
    return BounceIntake(lambda: Session(engine), tmp_path / "bounces", BouncePolicy())


@pytest.fixture
def receiver(intake) -> Iterator[BounceReceiver]:
    server = BounceReceiver(intake, "127.0.0.1", free_port())
    server.start()
    yield server
    server.stop()


def test_smtp_receiver_end_to_end(session, make_delivery, receiver, intake):
    delivery = make_delivery("ghost@example.org")
    garbage = make_delivery("someone@example.org")
    with smtplib.SMTP(receiver.hostname, receiver.port, timeout=10) as smtp:
        smtp.sendmail(
            "",
            [f"secretariat-bounces+{delivery.id}@circulars.test"],
            crlf(corpus("postfix_user_unknown.eml", 1)),  # envelope wins over a stale header
        )
        # Garbage, even to an address that is not a bounce address, is stored (250).
        smtp.sendmail("", [f"secretariat-bounces+{garbage.id}@circulars.test"], b"\x00\xff\xfe")
        smtp.sendmail("x@example.org", ["postmaster@circulars.test"], corpus("garbage_empty.eml"))
        assert smtp.noop()[0] == 250  # the receiver is still there

    session.expire_all()
    rows = session.scalars(select(Bounce).order_by(Bounce.id)).all()
    assert [(row.kind, row.delivery_id, row.source) for row in rows] == [
        ("hard", delivery.id, "smtp"),
        ("unknown", garbage.id, "smtp"),
        ("unknown", None, "smtp"),
    ]
    assert (intake.raw_dir / rows[1].raw_path).read_bytes().startswith(b"\x00\xff\xfe")
    assert is_suppressed(session, "ghost@example.org").reason == "hard_bounce"
    assert is_suppressed(session, "someone@example.org") is None


def test_lmtp_receiver_answers_per_recipient(session, make_delivery, intake):
    delivery = make_delivery("departed@example.org")
    server = BounceReceiver(intake, "127.0.0.1", free_port(), lmtp=True)
    server.start()
    try:
        with smtplib.LMTP(server.hostname, server.port, timeout=10) as lmtp:
            refused = lmtp.sendmail(
                "",
                [f"x-bounces+{delivery.id}@circulars.test"],
                crlf(corpus("qmail_no_mailbox.eml")),
            )
        assert refused == {}
    finally:
        server.stop()
    session.expire_all()
    row = session.scalar(select(Bounce))
    assert row.kind == "hard" and row.source == "lmtp"
    assert is_suppressed(session, "departed@example.org") is not None


def test_receiver_answers_451_when_the_database_is_down(tmp_path):
    broken = create_engine(f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}")
    down = BounceIntake(lambda: Session(broken), tmp_path / "bounces")
    server = BounceReceiver(down, "127.0.0.1", free_port())
    server.start()
    try:
        with smtplib.SMTP(server.hostname, server.port, timeout=10) as smtp:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                smtp.sendmail("", ["a-bounces+1@circulars.test"], crlf(corpus("exim_plain.eml")))
            assert refused.value.smtp_code == 451
    finally:
        server.stop()
    assert not list((tmp_path / "bounces").rglob("*.eml"))  # not kept: the MTA retries


# --- polling a POP3 mailbox --------------------------------------------------------------


class Pop3Mailbox:
    """A small RFC 1939 server on loopback: USER/PASS/STAT/LIST/RETR/DELE/RSET/NOOP/QUIT."""

    def __init__(self, messages: list[bytes], user: str = "bounces", password: str = "s3cret"):
        self.messages = list(messages)
        self.user, self.password = user, password
        self.lock = threading.Lock()
        mailbox = self

        class Handler(socketserver.StreamRequestHandler):
            def send(self, line: str | bytes) -> None:
                data = line.encode() if isinstance(line, str) else line
                self.wfile.write(data + b"\r\n")

            def handle(self) -> None:
                self.send("+OK test POP3 server ready")
                user_ok = authed = False
                deleted: set[int] = set()
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return  # dropped without QUIT: deletions are not applied
                    command, _, arg = line.decode().strip().partition(" ")
                    command = command.upper()
                    if command == "QUIT":
                        if authed:
                            with mailbox.lock:
                                mailbox.messages = [
                                    m for i, m in enumerate(mailbox.messages, 1) if i not in deleted
                                ]
                        self.send("+OK bye")
                        return
                    if command == "USER":
                        user_ok = arg == mailbox.user
                        self.send("+OK" if user_ok else "-ERR no such mailbox")
                        continue
                    if command == "PASS":
                        authed = user_ok and arg == mailbox.password
                        self.send("+OK logged in" if authed else "-ERR invalid password")
                        continue
                    if not authed:
                        self.send("-ERR log in first")
                        continue
                    live = {i: m for i, m in enumerate(mailbox.messages, 1) if i not in deleted}
                    if command == "STAT":
                        self.send(f"+OK {len(live)} {sum(len(m) for m in live.values())}")
                    elif command == "LIST":
                        self.send(f"+OK {len(live)} messages")
                        for i, m in live.items():
                            self.send(f"{i} {len(m)}")
                        self.send(".")
                    elif command in ("RETR", "DELE"):
                        number = int(arg) if arg.isdigit() else 0
                        if number not in live:
                            self.send("-ERR no such message")
                        elif command == "DELE":
                            deleted.add(number)
                            self.send(f"+OK message {number} deleted")
                        else:
                            self.send(f"+OK {len(live[number])} octets")
                            for body_line in live[number].splitlines():
                                stuffed = (
                                    b"." + body_line if body_line.startswith(b".") else body_line
                                )
                                self.send(stuffed)
                            self.send(".")
                    elif command == "RSET":
                        deleted.clear()
                        self.send("+OK")
                    elif command == "NOOP":
                        self.send("+OK")
                    else:
                        self.send("-ERR unknown command")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, password: str | None = None) -> str:
        return f"pop3://{self.user}:{password or self.password}@127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pop3():
    servers: list[Pop3Mailbox] = []

    def start(messages: list[bytes]) -> Pop3Mailbox:
        server = Pop3Mailbox(messages)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def test_pop3_poll_stores_classifies_and_deletes(session, make_delivery, intake, pop3):
    ghost = make_delivery("ghost@example.org")
    reader = make_delivery("annoyed.reader@isp.example.net")
    mailbox = pop3(
        [
            corpus("postfix_user_unknown.eml", ghost.id),
            corpus("garbage_binary.eml"),
            corpus("arf_abuse_complaint.eml", reader.id),
            corpus("out_of_office.eml", ghost.id),
        ]
    )
    result = poll(intake, mailbox_from_url(mailbox.url()))
    assert (result.fetched, result.stored, result.failed) == (4, 4, 0)
    assert mailbox.messages == []

    session.expire_all()
    kinds = [row.kind for row in session.scalars(select(Bounce).order_by(Bounce.id))]
    assert kinds == ["hard", "unknown", "complaint", "unknown"]
    assert {row.source for row in session.scalars(select(Bounce))} == {"pop3"}
    assert is_suppressed(session, "ghost@example.org").reason == "hard_bounce"
    assert is_suppressed(session, "annoyed.reader@isp.example.net").reason == "complaint"


def test_pop3_poll_deletes_only_what_was_stored(session, make_delivery, app, tmp_path, pop3):
    from circulars.extensions import db

    ghost = make_delivery("ghost@example.org")
    good, broken = db.engine, create_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    engines = iter([good, broken])  # the database goes away after the first message
    flaky = BounceIntake(lambda: Session(next(engines, broken)), tmp_path / "bounces")
    messages = [corpus("postfix_user_unknown.eml", ghost.id), corpus("exim_plain.eml")]
    mailbox = pop3(messages)

    result = poll(flaky, mailbox_from_url(mailbox.url()))
    assert (result.stored, result.failed) == (1, 1)
    assert mailbox.messages == [messages[1]]  # kept for the next poll

    session.expire_all()
    assert session.scalar(select(Bounce)).kind == "hard"


def test_pop3_wrong_password_is_a_clear_error(intake, pop3):
    from circulars.subscribers.bounce_intake import MailboxError

    mailbox = pop3([corpus("exim_plain.eml")])
    with pytest.raises(MailboxError, match="refused the login"):
        poll(intake, mailbox_from_url(mailbox.url(password="wrong")))
    assert len(mailbox.messages) == 1


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("pop3s://b%40x:p%3Aw@mail.example.org", ("pop3", True, 995, "b@x", "p:w", "INBOX")),
        ("pop3://u:p@mail.example.org:1110", ("pop3", False, 1110, "u", "p", "INBOX")),
        ("imaps://u:p@mail.example.org/Bounces", ("imap", True, 993, "u", "p", "Bounces")),
        ("imap://u:p@mail.example.org", ("imap", False, 143, "u", "p", "INBOX")),
    ],
)
def test_mailbox_urls(url, expected):
    box = mailbox_from_url(url)
    assert (box.protocol, box.tls, box.port, box.username, box.password, box.folder) == expected
    assert "p" not in repr(box).split("password")[-1][:3]


@pytest.mark.parametrize(
    "url", ["http://u:p@x.org", "pop3://x.org", "pop3s://u:p@x.org/INBOX", "imap://u:p@:99"]
)
def test_bad_mailbox_urls_are_refused_at_start_up(url):
    from circulars.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="BOUNCE_MAILBOX_URL"):
        load_settings({"BOUNCE_MAILBOX_URL": url, "SECRET_KEY": "x" * 32})


def test_cli_poll_reads_the_mailbox(session, make_delivery, runner, app, pop3):
    ghost = make_delivery("ghost@example.org")
    mailbox = pop3([crlf(corpus("gmail_nosuchuser.eml", ghost.id)), corpus("garbage_empty.eml")])
    result = runner.invoke(["bounces", "poll", "--mailbox", mailbox.url()])
    assert result.exit_code == 0, result.output
    assert "2 fetched, 2 stored and deleted" in result.output
    assert mailbox.messages == []
    session.expire_all()
    assert is_suppressed(session, "ghost@example.org").reason == "hard_bounce"
    stored = app.extensions["circulars.settings"].bounces_path
    assert len(list(stored.rglob("*.eml"))) >= 2


def test_cli_poll_without_a_mailbox_says_so(runner):
    result = runner.invoke(["bounces", "poll"])
    assert result.exit_code == 2
    assert "BOUNCE_MAILBOX_URL" in result.output


def test_beat_polls_only_when_a_mailbox_is_set():
    from circulars.config import load_settings
    from circulars.tasks import POLL_BOUNCES, bounce_schedule

    plain = load_settings({"SECRET_KEY": "x" * 32})
    assert bounce_schedule(plain) == {}
    polling = load_settings(
        {
            "SECRET_KEY": "x" * 32,
            "BOUNCE_MAILBOX_URL": "imaps://u:p@mail.example.org/INBOX",
            "BOUNCE_POLL_INTERVAL": "120",
        }
    )
    assert bounce_schedule(polling) == {"poll-bounces": {"task": POLL_BOUNCES, "schedule": 120.0}}


# --- admin pages -------------------------------------------------------------------------


SCRIPTED = b"From: x@example.org\nSubject: <script>alert(1)</script>\n\n<b>hello</b>\n"


@pytest.fixture
def received(session, make_delivery, app):
    """Three bounces of one send, as the receiver stores them (raw files in the instance)."""
    raw_dir = app.extensions["circulars.settings"].bounces_path
    ghost = make_delivery("ghost@example.org")
    full = make_delivery("full.box@example.org")
    rows = [
        record(
            session, corpus("postfix_user_unknown.eml", ghost.id), source="smtp", raw_dir=raw_dir
        ),
        record(
            session,
            corpus("postfix_mailbox_full_delayed.eml", full.id),
            source="pop3",
            raw_dir=raw_dir,
        ),
        record(session, SCRIPTED, source="smtp", raw_dir=raw_dir),
    ]
    session.commit()
    return make_delivery.send, rows


def test_admin_bounces_page_lists_what_came_back(client, auth, received):
    auth.create_user(role="editor")
    auth.login()
    page = client.get("/admin/bounces")
    assert page.status_code == 200
    assert "Bounces and complaints" in page.text
    assert "ghost@example.org" in page.text and "5.1.1" in page.text
    assert "User unknown in virtual mailbox table" in page.text
    assert "full.box@example.org" in page.text and "4.2.2" in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text  # the subject, escaped
    assert "<script>alert(1)</script>" not in page.text
    assert 'aria-current="page">Bounces<' in page.text
    assert "/raw" not in page.text  # editors do not download raw mail

    only_hard = client.get("/admin/bounces?kind=hard")
    assert "ghost@example.org" in only_hard.text and "full.box@example.org" not in only_hard.text
    assert "No bounce matches" in client.get("/admin/bounces?q=nobody").text


def test_admin_downloads_the_raw_message_never_renders_it(client, auth, received):
    _send, rows = received
    auth.create_user(role="sender")
    auth.login()
    assert "Raw message" in client.get("/admin/bounces").text
    raw = client.get(f"/admin/bounces/{rows[2].id}/raw")
    assert raw.status_code == 200
    assert raw.data == SCRIPTED
    assert raw.mimetype == "application/octet-stream"
    assert "attachment" in raw.headers["Content-Disposition"]
    assert client.get("/admin/bounces/999999/raw").status_code == 404


def test_send_page_counts_bounces_by_kind(client, auth, received):
    send, _rows = received
    auth.create_user(role="editor")
    auth.login()
    page = client.get(f"/admin/sends/{send.id}")
    assert page.status_code == 200
    assert 'id="bounces-hard">1<' in page.text
    assert 'id="bounces-soft">1<' in page.text
    assert 'id="bounces-complaint">0<' in page.text


def test_bounces_page_needs_a_signed_in_user(client):
    assert client.get("/admin/bounces").status_code in (302, 401)


# --- polling an IMAP mailbox -------------------------------------------------------------


class ImapMailbox:
    """Just enough IMAP4rev1 (RFC 3501) on loopback for the poller: CAPABILITY, LOGIN,
    SELECT, UID SEARCH/FETCH/STORE, EXPUNGE, LOGOUT. Messages have UIDs from 101."""

    def __init__(self, messages: list[bytes], user: str = "bounces", password: str = "s3cret"):
        self.messages: dict[int, bytes] = {101 + i: m for i, m in enumerate(messages)}
        self.flagged: set[int] = set()
        self.user, self.password = user, password
        mailbox = self

        class Handler(socketserver.StreamRequestHandler):
            def send(self, data: str | bytes) -> None:
                self.wfile.write((data.encode() if isinstance(data, str) else data) + b"\r\n")

            def handle(self) -> None:
                self.send("* OK test IMAP4rev1 server ready")
                authed = selected = False
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    tag, _, rest = line.decode().strip().partition(" ")
                    words = re.findall(r'"(?:[^"\\]|\\.)*"|\([^)]*\)|\S+', rest)
                    command = words[0].upper() if words else ""
                    args = [w[1:-1] if w.startswith('"') else w for w in words[1:]]
                    if command == "CAPABILITY":
                        self.send("* CAPABILITY IMAP4rev1 AUTH=PLAIN")
                        self.send(f"{tag} OK CAPABILITY completed")
                    elif command == "LOGIN":
                        authed = args == [mailbox.user, mailbox.password]
                        self.send(f"{tag} OK LOGIN" if authed else f"{tag} NO bad credentials")
                    elif command == "LOGOUT":
                        self.send("* BYE")
                        self.send(f"{tag} OK LOGOUT completed")
                        return
                    elif not authed:
                        self.send(f"{tag} NO log in first")
                    elif command == "SELECT":
                        selected = args[0].upper() == "INBOX"
                        if selected:
                            self.send(f"* {len(mailbox.messages)} EXISTS")
                            self.send(f"{tag} OK [READ-WRITE] SELECT completed")
                        else:
                            self.send(f"{tag} NO no such folder")
                    elif not selected:
                        self.send(f"{tag} BAD select a folder first")
                    elif command == "UID" and args[0].upper() == "SEARCH":
                        uids = " ".join(str(uid) for uid in sorted(mailbox.messages))
                        self.send(f"* SEARCH {uids}".rstrip())
                        self.send(f"{tag} OK SEARCH completed")
                    elif command == "UID" and args[0].upper() == "FETCH":
                        uid = int(args[1])
                        if uid in mailbox.messages:
                            body = mailbox.messages[uid]
                            seq = sorted(mailbox.messages).index(uid) + 1
                            self.wfile.write(
                                f"* {seq} FETCH (UID {uid} BODY[] {{{len(body)}}}\r\n".encode()
                                + body
                                + b")\r\n"
                            )
                        self.send(f"{tag} OK FETCH completed")
                    elif command == "UID" and args[0].upper() == "STORE":
                        if "\\Deleted" in args[3]:
                            mailbox.flagged.add(int(args[1]))
                        self.send(f"{tag} OK STORE completed")
                    elif command == "EXPUNGE":
                        for uid in sorted(mailbox.flagged):
                            mailbox.messages.pop(uid, None)
                        mailbox.flagged.clear()
                        self.send(f"{tag} OK EXPUNGE completed")
                    else:
                        self.send(f"{tag} BAD unknown command")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self) -> str:
        return f"imap://{self.user}:{self.password}@127.0.0.1:{self.port}/INBOX"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_imap_poll_stores_and_expunges_only_stored_messages(session, make_delivery, tmp_path, pop3):
    from circulars.extensions import db

    ghost = make_delivery("ghost@example.org")
    full = make_delivery("full.box@example.org")
    messages = [
        crlf(corpus("exchange_recipnotfound.eml", ghost.id)),
        crlf(corpus("postfix_mailbox_full_delayed.eml", full.id)),
        crlf(corpus("exim_plain.eml")),
    ]
    mailbox = ImapMailbox(messages)
    try:
        good, broken = db.engine, create_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
        engines = iter([good, good])  # then the database goes away
        flaky = BounceIntake(lambda: Session(next(engines, broken)), tmp_path / "bounces")
        result = poll(flaky, mailbox_from_url(mailbox.url()))
        assert (result.fetched, result.stored, result.failed) == (3, 2, 1)
        assert list(mailbox.messages.values()) == [messages[2]]
    finally:
        mailbox.close()

    session.expire_all()
    rows = session.scalars(select(Bounce).order_by(Bounce.id)).all()
    assert [(row.kind, row.source) for row in rows] == [("hard", "imap"), ("soft", "imap")]
    assert is_suppressed(session, "ghost@example.org").reason == "hard_bounce"


def test_cli_serve_runs_the_receiver(stack, session, make_delivery, tmp_path):
    """`circulars bounces serve` as an operator starts it, in a process of its own."""
    import os
    import subprocess
    import sys
    import time

    delivery = make_delivery("departed@example.org")
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "circulars.cli", "bounces", "serve", "--port", str(port)],
            env={**os.environ, **stack},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                smtp = smtplib.SMTP("127.0.0.1", port, timeout=10)
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the receiver did not start"
                time.sleep(0.2)
        with smtp:
            raw = crlf(corpus("qmail_no_mailbox.eml", delivery.id))
            smtp.sendmail("", [f"secretariat-bounces+{delivery.id}@circulars.test"], raw)
    finally:
        process.terminate()
        process.wait(timeout=30)
    session.expire_all()
    assert is_suppressed(session, "departed@example.org").reason == "hard_bounce"


@pytest.mark.parametrize(
    "raw",
    [
        b"Content-Type: multipart/report; report-type=delivery-status\n\nno boundary at all\n",
        b"Content-Type: text/plain; charset=no-such-charset\nSubject: =?bogus?Q?x?=\n\n\xff\xfe\n",
        b"Content-Type: multipart/report; report-type=feedback-report; boundary=b\n\n--b\n"
        b"Content-Type: message/feedback-report\nContent-Transfer-Encoding: base64\n\n!!!\n",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\n"
        b"Content-Type: message/delivery-status\n\nAction: failed\nStatus: 9.9.9.9.9\n\n--b--\n",
        b"To: =?utf-8?b?broken\nFrom: <<<>>>\nX-Failed-Recipients: ,,,@@@\n\n" + b"x" * 300_000,
        bytes(range(256)) * 40,
    ],
)
def test_malformed_mail_never_raises(raw, session, tmp_path):
    verdict = classify(raw)
    assert verdict.kind in ("hard", "soft", "complaint", "unknown")
    bounce = record(session, raw, source="imap", raw_dir=tmp_path)
    session.commit()
    assert bounce.id is not None and (tmp_path / bounce.raw_path).read_bytes() == raw
