"""Bulk actions on subscribers too large to finish within one web request."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from circulars.extensions import db
from circulars.subscribers.bulk import BulkAction, run
from circulars.subscribers.search import SubscriberFilter
from circulars.tasks import BULK_SUBSCRIBERS

log = logging.getLogger(__name__)


@shared_task(name=BULK_SUBSCRIBERS, acks_late=True)
def bulk_subscribers(
    filter_args: dict[str, Any], action: str, list_id: int | None, user_id: int | None
) -> None:
    """Run a confirmed bulk action; every chunk commits, and a re-run finishes the job."""
    query_filter, _errors = SubscriberFilter.from_args(filter_args)
    result = run(
        db.session,
        query_filter,
        BulkAction(action),
        list_id,
        user_id=user_id,
        on_chunk=lambda _progress: db.session.commit(),
    )
    db.session.commit()
    log.info(
        "bulk %s (list %s) by user %s: %d matched, %d changed, %d suppressed skipped, %.1f s",
        action,
        list_id,
        user_id,
        result.matched,
        result.changed,
        result.suppressed,
        result.seconds,
    )
