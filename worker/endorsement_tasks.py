"""Tasks of the sign-on statements: the mail that confirms an endorsement's address, and the
daily purge of endorsements nobody confirmed."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import shared_task
from sqlalchemy.exc import OperationalError

from circulars.endorsements.service import purge_unconfirmed
from circulars.endorsements.tokens import EndorsementTokens, Submission
from circulars.extensions import db
from circulars.mail.endorsement import send_endorsement_confirmation
from circulars.mail.transport import DeliveryError
from circulars.tasks import PURGE_UNCONFIRMED_ENDORSEMENTS, SEND_ENDORSEMENT_CONFIRMATION

from .subscribe_tasks import _context, _retry_or_give_up, _settings

log = logging.getLogger(__name__)


@shared_task(name=SEND_ENDORSEMENT_CONFIRMATION, bind=True, max_retries=None)
def send_confirmation(self, endorsement_id: int, submission: dict[str, Any]) -> str:  # type: ignore[no-untyped-def]
    """`submission`: the fields of endorsements.tokens.Submission, which the link will carry."""
    settings = _settings()
    days = settings.confirm_token_max_age_days
    tokens = EndorsementTokens(settings.secret_key, timedelta(days=days))
    try:
        return send_endorsement_confirmation(
            db.session,
            endorsement_id,
            Submission(**submission),
            _context(),
            tokens=tokens,
            valid_days=days,
        )
    except OperationalError as exc:
        db.session.rollback()
        raise self.retry(exc=exc, countdown=10) from exc
    except DeliveryError as exc:
        _retry_or_give_up(self, exc, f"confirmation mail of endorsement {endorsement_id}")
        return "failed"


@shared_task(name=PURGE_UNCONFIRMED_ENDORSEMENTS)
def purge_stale_endorsements() -> int:
    """Daily: forget endorsements nobody confirmed within UNCONFIRMED_PURGE_DAYS."""
    days = _settings().unconfirmed_purge_days
    removed = purge_unconfirmed(db.session, older_than=timedelta(days=days))
    db.session.commit()
    if removed:
        log.info("purge: %s endorsements never confirmed removed", removed)
    return removed
