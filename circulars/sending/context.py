"""What the send engine needs from outside, gathered in one object.

The web app and the worker each build one from their settings; tests build
one by hand. Keeping it explicit keeps the engine free of Flask and Celery.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ..mail.branding import Branding
from ..mail.transport import Messenger
from ..storage import FileStore
from ..subscribers.links import Links


@dataclass(frozen=True)
class SendContext:
    messenger: Messenger
    files: FileStore
    links: Links
    branding: Branding
    mail_from: str
    base_url: str
    batch_size: int = 200
    max_attempts: int = 5
    claim_lease: timedelta = timedelta(minutes=10)
    timezone: str = "UTC"
    # Temporary relay errors in a row after which a send pauses itself (0: never).
    pause_after_relay_errors: int = 10

    @property
    def domain(self) -> str:
        return self.mail_from.rpartition("@")[2]

    def bounce_address(self, delivery_id: int) -> str:
        """VERP: the return path names the delivery, so a bounce says whom it is about."""
        local = self.mail_from.rpartition("@")[0]
        return f"{local}-bounces+{delivery_id}@{self.domain}"
