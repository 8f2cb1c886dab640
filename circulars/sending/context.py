"""What the send engine needs from outside, gathered in one object.

The web app and the worker each build one from their settings; tests build
one by hand. Keeping it explicit keeps the engine free of Flask and Celery.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from ..branding_settings import load_branding
from ..mail.branding import Branding
from ..mail.transport import Messenger
from ..storage import FileStore
from ..subscribers.links import Links


@dataclass(frozen=True)
class SendContext:
    messenger: Messenger
    files: FileStore
    links: Links
    # The environment's branding (ORG_*); what an admin saved wins: see current_branding().
    branding: Branding
    mail_from: str
    base_url: str
    batch_size: int = 200
    max_attempts: int = 5
    claim_lease: timedelta = timedelta(minutes=10)
    timezone: str = "UTC"
    # Temporary relay errors in a row after which a send pauses itself (0: never).
    pause_after_relay_errors: int = 10

    def current_branding(self, session: Session | None) -> Branding:
        """The branding saved on the admin's settings page, else the environment's.

        Read when a mail is rendered, not when this context is built: a worker
        started before an admin saved the page uses the change from the next mail on.
        """
        if session is None:
            return self.branding
        return load_branding(session, self.branding, self.base_url)

    @property
    def domain(self) -> str:
        return self.mail_from.rpartition("@")[2]

    def bounce_address(self, delivery_id: int) -> str:
        """VERP: the return path names the delivery, so a bounce says whom it is about."""
        local = self.mail_from.rpartition("@")[0]
        return f"{local}-bounces+{delivery_id}@{self.domain}"
