"""The periodic poll of the bounce mailbox (BOUNCE_MAILBOX_URL, every BOUNCE_POLL_INTERVAL)."""

from __future__ import annotations

import logging

from celery import shared_task
from flask import current_app

from circulars.extensions import db
from circulars.subscribers.bounce_intake import MailboxError, mailbox_from_url, poll
from circulars.tasks import POLL_BOUNCES
from circulars.wiring import bounce_intake

log = logging.getLogger(__name__)


@shared_task(name=POLL_BOUNCES, acks_late=False)
def poll_bounces() -> int:
    """One pass over the mailbox; a mailbox that cannot be reached waits for the next beat."""
    settings = current_app.extensions["circulars.settings"]
    if not settings.bounce_mailbox_url:
        return 0
    try:
        result = poll(
            bounce_intake(settings, db.engine), mailbox_from_url(settings.bounce_mailbox_url)
        )
    except MailboxError as exc:
        log.warning("bounce mailbox not polled: %s", exc)
        return 0
    return result.stored
