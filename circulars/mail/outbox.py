"""Reading the capture server's Maildir for the admin's Outbox page."""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from .capture import open_maildir


@dataclass(frozen=True)
class CapturedSummary:
    key: str
    subject: str
    to: str
    date: str
    size: int
    mtime: float


class Outbox:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _maildir(self) -> mailbox.Maildir:
        return open_maildir(self.path)

    def keys_newest_first(self) -> list[tuple[float, str]]:
        """Sorted by arrival, from file times; headers are read only for the page shown."""
        entries = []
        for sub in ("new", "cur"):
            folder = self.path / sub
            if folder.is_dir():
                for entry in folder.iterdir():
                    key = entry.name.split(":", 1)[0]
                    entries.append((entry.stat().st_mtime, key))
        entries.sort(reverse=True)
        return entries

    def summaries(self, offset: int, limit: int) -> tuple[list[CapturedSummary], int]:
        keys = self.keys_newest_first()
        maildir = self._maildir()
        items = []
        for mtime, key in keys[offset : offset + limit]:
            try:
                path = self.path / maildir._lookup(key)  # type: ignore[attr-defined]
                with open(path, "rb") as handle:
                    head = email.message_from_binary_file(
                        handle, policy=email.policy.default, _class=EmailMessage
                    )
            except (KeyError, OSError):
                continue
            items.append(
                CapturedSummary(
                    key=key,
                    subject=str(head.get("Subject", "(no subject)")),
                    to=str(head.get("To", "")),
                    date=str(head.get("Date", "")),
                    size=path.stat().st_size,
                    mtime=mtime,
                )
            )
        return items, len(keys)

    def message(self, key: str) -> EmailMessage | None:
        if not re.fullmatch(r"[\w.\-]+", key):
            return None
        try:
            raw = self._maildir().get_bytes(key)
        except KeyError:
            return None
        return email.message_from_bytes(raw, policy=email.policy.default, _class=EmailMessage)

    def raw(self, key: str) -> bytes | None:
        if not re.fullmatch(r"[\w.\-]+", key):
            return None
        try:
            return self._maildir().get_bytes(key)
        except KeyError:
            return None

    def clear(self) -> int:
        maildir = self._maildir()
        count = 0
        for key in list(maildir.keys()):
            maildir.discard(key)
            count += 1
        return count
