"""The embedded default's mail capture: a real SMTP server that keeps what it gets.

Messages go into a Maildir under instance/outbox, which the admin's Outbox
page reads; nothing leaves the machine.
"""

from __future__ import annotations

import mailbox
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session


def open_maildir(path: Path) -> mailbox.Maildir:
    # Maildir(create=True) leaves out tmp/new/cur when the folder itself exists.
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return mailbox.Maildir(path, create=False)


class MaildirHandler:
    def __init__(self, path: Path) -> None:
        self.maildir = open_maildir(path)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:  # noqa: N802
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8")
        recipients = ", ".join(envelope.rcpt_tos)
        head = (
            f"X-Captured-Envelope-From: {envelope.mail_from}\r\n"
            f"X-Captured-Envelope-To: {recipients}\r\n"
        )
        self.maildir.add(head.encode("utf-8", "replace") + content)
        return "250 Message captured"


def start_capture_server(path: Path, host: str, port: int) -> Controller:
    controller = Controller(
        MaildirHandler(path),
        hostname=host,
        port=port,
        enable_SMTPUTF8=True,
        data_size_limit=64 * 1024**2,
    )
    controller.start()
    return controller
