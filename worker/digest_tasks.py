"""Digests: the beat tick that finds what is due, and the task that runs one digest."""

from __future__ import annotations

import logging

from celery import shared_task
from flask import current_app
from sqlalchemy.exc import OperationalError

from circulars.digests import runs
from circulars.extensions import db
from circulars.models import utcnow
from circulars.sending.context import SendContext
from circulars.tasks import DIGEST_TICK, RUN_DIGEST

log = logging.getLogger(__name__)


def _context() -> SendContext:
    return current_app.extensions["circulars.send_context"]  # type: ignore[no-any-return]


@shared_task(name=DIGEST_TICK)
def digest_tick() -> int:
    """Create the runs of due periods and queue them, with any run a lost task left behind."""
    now = utcnow()
    created = runs.create_due_runs(db.session, now, _context().timezone)
    resumed = [run_id for run_id in runs.runs_to_resume(db.session, now) if run_id not in created]
    app = current_app.extensions["celery"]
    for run_id in created + resumed:
        app.send_task(RUN_DIGEST, args=(run_id,))
    if created or resumed:
        log.info("digests: started runs %s, resumed %s", created, resumed)
    return len(created) + len(resumed)


@shared_task(
    name=RUN_DIGEST,
    autoretry_for=(OperationalError,),
    retry_backoff=2,
    retry_backoff_max=120,
    max_retries=None,
)
def run_digest(run_id: int) -> dict[str, int]:
    """Snapshot (once) and deliver one run; rows held after temporary failures wait for the tick."""
    outcome = runs.run(db.session, run_id, _context())
    return {"sent": outcome.sent, "failed": outcome.failed, "deferred": outcome.deferred}
