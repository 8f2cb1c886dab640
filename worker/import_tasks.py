"""Tasks of subscriber imports: run a job, and sweep jobs a dead worker or broker lost."""

from __future__ import annotations

import logging

from celery import shared_task
from flask import current_app

from circulars.extensions import db
from circulars.subscribers.import_jobs import run_job, sweep_jobs
from circulars.tasks import RUN_IMPORT, SWEEP_IMPORTS

log = logging.getLogger(__name__)


@shared_task(name=RUN_IMPORT)
def run_import(job_id: int) -> dict[str, int] | None:
    """Run one import job; its progress and outcome are on the job row (and its page)."""
    settings = current_app.extensions["circulars.settings"]
    outcome = run_job(db.session, job_id, settings.instance_path, writers=settings.import_writers)
    if outcome is None:
        log.info("import %s: already done or taken by another worker", job_id)
        return None
    if outcome.report is None:
        log.info("import %s refused: %s", job_id, outcome.error)
        return None
    report = outcome.report
    log.info("import %s done: %s rows, %s subscribed", job_id, report.rows, report.subscribed)
    return {"rows": report.rows, "subscribed": report.subscribed}


@shared_task(name=SWEEP_IMPORTS)
def sweep_imports() -> int:
    """Queue again jobs whose task was lost; fail jobs whose worker went silent."""
    requeue, failed = sweep_jobs(db.session)
    app = current_app.extensions["celery"]
    for job_id in requeue:
        app.send_task(RUN_IMPORT, args=(job_id,))
    if requeue or failed:
        log.warning("import sweep: queued again %s, failed %s", requeue, failed)
    return len(requeue) + len(failed)
