"""Tasks of the double opt-in: confirmation and welcome mails, and the purge of stale requests."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from flask import current_app
from sqlalchemy.exc import OperationalError

from circulars.config import Settings
from circulars.extensions import db
from circulars.mail import transactional
from circulars.mail.transport import DeliveryError
from circulars.sending.context import SendContext
from circulars.subscribers.optin import purge_unconfirmed
from circulars.subscribers.tokens import TokenSigner
from circulars.tasks import PURGE_UNCONFIRMED, SEND_CONFIRMATION, SEND_WELCOME

log = logging.getLogger(__name__)
#: A confirmation is worth a few tries over about an hour, not a day: by then the person
#: has given up or asked again.
MAIL_RETRIES = 6


def _settings() -> Settings:
    return current_app.extensions["circulars.settings"]  # type: ignore[no-any-return]


def _context() -> SendContext:
    return current_app.extensions["circulars.send_context"]  # type: ignore[no-any-return]


def _retry_or_give_up(task, exc: DeliveryError, what: str) -> None:  # type: ignore[no-untyped-def]
    if exc.permanent or task.request.retries >= MAIL_RETRIES:
        log.warning("%s not delivered: %s", what, exc.reply)
        return
    delay = min(_settings().send_retry_delay * 2**task.request.retries, 1800)
    raise task.retry(exc=exc, countdown=delay) from exc


@shared_task(name=SEND_CONFIRMATION, bind=True, max_retries=None)
def send_confirmation(self, subscriber_id: int, list_ids: list[int]) -> str:  # type: ignore[no-untyped-def]
    settings = _settings()
    signer: TokenSigner = current_app.extensions["circulars.confirm_tokens"]
    try:
        return transactional.send_confirmation(
            db.session,
            subscriber_id,
            list_ids,
            _context(),
            signer=signer,
            valid_days=settings.confirm_token_max_age_days,
            purge_days=settings.unconfirmed_purge_days,
        )
    except OperationalError as exc:
        db.session.rollback()
        raise self.retry(exc=exc, countdown=10) from exc
    except DeliveryError as exc:
        _retry_or_give_up(self, exc, f"confirmation mail to subscriber {subscriber_id}")
        return "failed"


@shared_task(name=SEND_WELCOME, bind=True, max_retries=None)
def send_welcome(self, subscriber_id: int, list_ids: list[int]) -> int:  # type: ignore[no-untyped-def]
    try:
        return transactional.send_welcome(db.session, subscriber_id, list_ids, _context())
    except OperationalError as exc:
        db.session.rollback()
        raise self.retry(exc=exc, countdown=10) from exc
    except DeliveryError as exc:
        _retry_or_give_up(self, exc, f"welcome mail to subscriber {subscriber_id}")
        return 0


@shared_task(name=PURGE_UNCONFIRMED)
def purge_stale_requests() -> dict[str, int]:
    """Daily: forget subscribe requests nobody confirmed within UNCONFIRMED_PURGE_DAYS."""
    days = _settings().unconfirmed_purge_days
    outcome = purge_unconfirmed(db.session, older_than=timedelta(days=days))
    db.session.commit()
    if outcome.subscriptions or outcome.subscribers:
        log.info(
            "purge: %s unconfirmed subscriptions and %s never-confirmed subscribers removed",
            outcome.subscriptions,
            outcome.subscribers,
        )
    return {"subscriptions": outcome.subscriptions, "subscribers": outcome.subscribers}
