"""Bounce intake: an SMTP/LMTP receiver the MTA forwards bounces to, and mailbox polling.

Both paths end in `BounceIntake.receive`: the raw bytes are written to disk
first, then classified and recorded in a transaction of their own. Only when
that commit succeeds is the message acknowledged (250 to the MTA, DELE or
\\Deleted on the mailbox); if the database is down the receiver answers 451
and the mailbox keeps the message, so the sender or the next poll tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import logging
import poplib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..models import BounceSource
from .bounces import MAX_RAW_SIZE, BouncePolicy, record, store_raw

log = logging.getLogger(__name__)


class IntakeUnavailable(RuntimeError):
    """The message could not be recorded (database down): do not acknowledge it."""


class MailboxError(RuntimeError):
    """The mailbox could not be reached or refused us; says why."""


@dataclass(frozen=True)
class Mailbox:
    protocol: str  # "pop3" or "imap"
    host: str
    port: int
    tls: bool
    username: str
    password: str = field(repr=False)
    folder: str = "INBOX"

    @property
    def label(self) -> str:
        scheme = f"{self.protocol}{'s' if self.tls else ''}"
        return f"{scheme}://{self.username}@{self.host}:{self.port}"


_MAILBOX_SCHEMES = {
    "pop3": ("pop3", False, 110),
    "pop3s": ("pop3", True, 995),
    "imap": ("imap", False, 143),
    "imaps": ("imap", True, 993),
}


def mailbox_from_url(value: str) -> Mailbox:
    """Parse BOUNCE_MAILBOX_URL; raises ValueError saying what is wrong."""
    parts = urlsplit(value)
    if parts.scheme not in _MAILBOX_SCHEMES:
        raise ValueError("scheme must be pop3s, pop3, imaps or imap")
    protocol, tls, default_port = _MAILBOX_SCHEMES[parts.scheme]
    if not parts.hostname:
        raise ValueError("a host name is required, as in pop3s://user:pass@mail.example.org")
    if not parts.username or parts.password is None:
        raise ValueError("a user name and password are required (user:pass@host)")
    try:
        port = parts.port if parts.port is not None else default_port
    except ValueError as exc:
        raise ValueError("the port must be a number from 1 to 65535") from exc
    if not 1 <= port <= 65535:
        raise ValueError("the port must be a number from 1 to 65535")
    folder = unquote(parts.path.strip("/")) or "INBOX"
    if protocol == "pop3" and parts.path.strip("/"):
        raise ValueError("a POP3 mailbox has no folders; leave the path out")
    return Mailbox(
        protocol=protocol,
        host=parts.hostname,
        port=port,
        tls=tls,
        username=unquote(parts.username),
        password=unquote(parts.password),
        folder=folder,
    )


class BounceIntake:
    """Receives one returned message at a time and records it in its own transaction."""

    def __init__(
        self,
        session_factory: Callable[[], Session],
        raw_dir: Path,
        policy: BouncePolicy | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.raw_dir = raw_dir
        self.policy = policy or BouncePolicy()

    def receive(self, raw: bytes, *, source: str, envelope_recipients: Sequence[str] = ()) -> int:
        """Store, classify, record and act; returns the bounce id.

        Raises IntakeUnavailable when the database cannot take it (the stored file
        is removed again, since the sender will offer the message once more).
        """
        raw_path = store_raw(self.raw_dir, raw)
        try:
            with self.session_factory() as session:
                bounce = record(
                    session,
                    raw,
                    source=source,
                    raw_dir=self.raw_dir,
                    envelope_recipients=envelope_recipients,
                    policy=self.policy,
                    raw_path=raw_path,
                )
                bounce_id = bounce.id
                session.commit()
                return bounce_id
        except SQLAlchemyError as exc:
            (self.raw_dir / raw_path).unlink(missing_ok=True)
            log.warning("bounce not recorded, database unavailable: %s", exc)
            raise IntakeUnavailable(str(exc)) from exc


# --- the SMTP / LMTP receiver ------------------------------------------------------------


class BounceHandler:
    """aiosmtpd handler: every recipient accepted, every message stored."""

    def __init__(self, intake: BounceIntake, source: str) -> None:
        self.intake = intake
        self.source = source

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        # Anything is taken and stored: bounces sometimes come to the wrong local part,
        # and a refusal here would only produce a bounce of the bounce.
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: SmtpSession, envelope: Envelope
    ) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", errors="surrogateescape")
        try:
            await asyncio.to_thread(
                self.intake.receive,
                raw,
                source=self.source,
                envelope_recipients=list(envelope.rcpt_tos),
            )
            status = "250 2.0.0 OK: stored"
        except IntakeUnavailable:
            status = "451 4.3.0 Bounce store unavailable, try again later"
        except Exception:  # noqa: BLE001 - the receiver answers; it never dies of a message
            log.exception("bounce intake failed on a message")
            status = "451 4.3.0 Temporary failure, try again later"
        if isinstance(server, LMTP):
            # LMTP answers DATA once per accepted recipient.
            return "\r\n".join([status] * max(1, len(envelope.rcpt_tos)))
        return status


class BounceReceiver(Controller):
    """The aiosmtpd server in a thread of its own; `start()` / `stop()`."""

    def __init__(self, intake: BounceIntake, host: str, port: int, *, lmtp: bool = False) -> None:
        self.lmtp = lmtp
        source = BounceSource.LMTP if lmtp else BounceSource.SMTP
        super().__init__(
            BounceHandler(intake, source),
            hostname=host,
            port=port,
            data_size_limit=MAX_RAW_SIZE,
            ready_timeout=10,
        )

    def factory(self) -> SMTP:
        server_class = LMTP if self.lmtp else SMTP
        return server_class(self.handler, **self.SMTP_kwargs)


def serve_forever(receiver: BounceReceiver, stop: threading.Event | None = None) -> None:
    """Run until `stop` is set (or forever), as the CLI does."""
    receiver.start()
    try:
        (stop or threading.Event()).wait()
    finally:
        receiver.stop()


# --- polling a mailbox -------------------------------------------------------------------


@dataclass
class PollResult:
    fetched: int = 0
    stored: int = 0
    failed: int = 0


def poll(intake: BounceIntake, mailbox: Mailbox, *, timeout: float = 60) -> PollResult:
    """Fetch every message, record it, and delete it once (and only once) it is stored.

    Stops at the first message the database cannot take; the rest stay for the
    next poll. Raises MailboxError when the mailbox cannot be reached or logged in to.
    """
    if mailbox.protocol == "pop3":
        return _poll_pop3(intake, mailbox, timeout)
    return _poll_imap(intake, mailbox, timeout)


def _poll_pop3(intake: BounceIntake, mailbox: Mailbox, timeout: float) -> PollResult:
    result = PollResult()
    try:
        client: poplib.POP3 = (
            poplib.POP3_SSL(mailbox.host, mailbox.port, timeout=timeout)
            if mailbox.tls
            else poplib.POP3(mailbox.host, mailbox.port, timeout=timeout)
        )
    except OSError as exc:
        raise MailboxError(f"cannot reach {mailbox.label}: {exc}") from exc
    finished = False
    try:
        try:
            client.user(mailbox.username)
            client.pass_(mailbox.password)
        except poplib.error_proto as exc:
            raise MailboxError(f"{mailbox.label} refused the login: {exc}") from exc
        count, _size = client.stat()
        for number in range(1, count + 1):
            _response, lines, _octets = client.retr(number)
            result.fetched += 1
            raw = b"\r\n".join(lines) + b"\r\n"
            try:
                intake.receive(raw, source=BounceSource.POP3)
            except IntakeUnavailable:
                result.failed += 1
                break
            client.dele(number)
            result.stored += 1
        client.quit()  # the deletions take effect here (RFC 1939, UPDATE state)
        finished = True
    except (OSError, poplib.error_proto) as exc:
        raise MailboxError(f"{mailbox.label}: {exc}") from exc
    finally:
        if not finished:
            # Without QUIT the server rolls back the DELEs: those messages come again
            # next time, which is safe (stored twice, never lost).
            client.close()
    return result


def _poll_imap(intake: BounceIntake, mailbox: Mailbox, timeout: float) -> PollResult:
    result = PollResult()
    try:
        client: imaplib.IMAP4 = (
            imaplib.IMAP4_SSL(mailbox.host, mailbox.port, timeout=timeout)
            if mailbox.tls
            else imaplib.IMAP4(mailbox.host, mailbox.port, timeout=timeout)
        )
    except OSError as exc:
        raise MailboxError(f"cannot reach {mailbox.label}: {exc}") from exc
    finished = False
    try:
        try:
            client.login(mailbox.username, mailbox.password)
        except imaplib.IMAP4.error as exc:
            raise MailboxError(f"{mailbox.label} refused the login: {exc}") from exc
        status, _ = client.select(_quoted(mailbox.folder))
        if status != "OK":
            raise MailboxError(f"{mailbox.label}: no folder {mailbox.folder!r}")
        status, data = client.uid("SEARCH", "ALL")
        uids = data[0].split() if status == "OK" and data and data[0] else []
        for uid in uids:
            status, fetched = client.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = _imap_literal(fetched)
            if status != "OK" or raw is None:
                continue
            result.fetched += 1
            try:
                intake.receive(raw, source=BounceSource.IMAP)
            except IntakeUnavailable:
                result.failed += 1
                break
            client.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)")
            result.stored += 1
        if result.stored:
            client.expunge()
        client.logout()
        finished = True
    except (OSError, imaplib.IMAP4.error) as exc:
        raise MailboxError(f"{mailbox.label}: {exc}") from exc
    finally:
        if not finished:
            with contextlib.suppress(OSError):
                client.shutdown()
    return result


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _imap_literal(fetched: list[Any]) -> bytes | None:
    for item in fetched or []:
        if isinstance(item, tuple) and len(item) >= 2 and isinstance(item[1], bytes):
            return item[1]
    return None
