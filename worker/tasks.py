"""Thin task functions: each takes ids, calls a service, and decides about retries."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from circulars.extensions import db
from circulars.mail.transport import DeliveryError
from circulars.models import Send, SendStatus, utcnow
from circulars.sending import control, engine
from circulars.sending.context import SendContext
from circulars.tasks import DELIVER_BATCH, SEND_TEST, START_DUE_SENDS, START_SEND, SWEEP_SENDS

log = logging.getLogger(__name__)
#: How often a batch with temporary failures is tried again before its rows fail.
BATCH_RETRIES = 8


def _context() -> SendContext:
    return current_app.extensions["circulars.send_context"]  # type: ignore[no-any-return]


def _backoff(retries: int) -> float:
    base = current_app.extensions["circulars.settings"].send_retry_delay
    return float(min(base * 2**retries, 3600))


@shared_task(
    name=START_SEND,
    autoretry_for=(OperationalError,),
    retry_backoff=2,
    retry_backoff_max=120,
    max_retries=None,
)
def start_send(send_id: int) -> None:
    ranges = engine.start_send(db.session, send_id, _context())
    app = current_app.extensions["celery"]
    for first, last in ranges:
        app.send_task(DELIVER_BATCH, args=(send_id, first, last))
    log.info("send %s: %s batches queued", send_id, len(ranges))


@shared_task(name=DELIVER_BATCH, bind=True, max_retries=None)
def deliver_batch(self, send_id: int, first_id: int, last_id: int, held: int = 0) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """`held`: how many of this task's retries were our own relay limits holding it back.

    Those do not count toward BATCH_RETRIES: a spent daily budget delays the
    batch until there is budget again, it does not fail its recipients.
    """
    try:
        outcome = engine.deliver_batch(db.session, send_id, first_id, last_id, _context())
    except OperationalError as exc:
        # The database went away (restart, fail-over): nothing is lost, try the batch again.
        db.session.rollback()
        raise self.retry(exc=exc, countdown=_backoff(min(self.request.retries, 4))) from exc
    if outcome.retry and outcome.held_for is not None:
        raise self.retry(countdown=outcome.held_for + 1, kwargs={"held": held + 1})
    if outcome.retry:
        if self.request.retries - held >= BATCH_RETRIES:
            reason = (
                f"gave up after {BATCH_RETRIES + 1} tries: {outcome.error or 'temporary failures'}"
            )
            engine.fail_pending(db.session, send_id, first_id, last_id, reason)
        else:
            raise self.retry(countdown=_backoff(self.request.retries - held))
    return {"sent": outcome.sent, "failed": outcome.failed, "deferred": outcome.deferred}


@shared_task(name=SEND_TEST)
def send_test(circular_id: int, address: str, language: str | None = None) -> None:
    try:
        engine.send_test(db.session, circular_id, address, _context(), language)
    except DeliveryError as exc:
        # A test goes to a colleague: report it, do not retry for hours.
        log.warning("test send of circular %s to %s failed: %s", circular_id, address, exc.reply)


@shared_task(name=SWEEP_SENDS)
def sweep_sends() -> int:
    """Restart sends whose tasks were lost (broker restart, killed worker); safe to repeat."""
    session = db.session
    stall = timedelta(seconds=current_app.extensions["circulars.settings"].send_stall_seconds)
    stale = utcnow() - stall
    queued = list(
        session.scalars(
            # A scheduled send is queued at its time, not when it was created.
            select(Send.id).where(
                Send.status == SendStatus.QUEUED,
                func.coalesce(Send.scheduled_at, Send.created_at) < stale,
            )
        )
    )
    stalled = engine.stalled_sends(session, stall)
    app = current_app.extensions["celery"]
    for send_id in queued + stalled:
        app.send_task(START_SEND, args=(send_id,))
    if queued or stalled:
        log.info("sweep: restarted sends %s", queued + stalled)
    return len(queued) + len(stalled)


@shared_task(name=START_DUE_SENDS)
def start_due_sends() -> int:
    """Start the scheduled sends whose time has come (beat, every 30 s); safe to run twice."""
    started = control.start_due_sends(db.session)
    app = current_app.extensions["celery"]
    for send_id in started:
        app.send_task(START_SEND, args=(send_id,))
    if started:
        log.info("scheduled sends started: %s", started)
    return len(started)
