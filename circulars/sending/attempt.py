"""One message to one recipient, and its outcome recorded: the step sends and digests share.

The rule both keep (see marks.py): the outcome of a message is recorded when
the relay answers, and the relay may not take the next message before that
record is committed. So a crash leaves at most the message in flight on a
connection accepted but unrecorded, and never records one the relay did not
take. The callers differ in where their rows come from (a send's deliveries,
a digest run's) and in what a lost connection means for the rest of their
batch; this step is the same for both, so it lives once.
"""

from __future__ import annotations

import enum
from datetime import datetime

from ..mail.transport import Connection, ConnectionFailed, DeliveryError, accepting_after
from ..models import utcnow
from .marks import Marks

#: Both `deliveries` and `digest_deliveries` write these statuses.
SENT = "sent"
FAILED = "failed"
#: The mark for a row whose subscriber was deleted between the snapshot and the send.
NO_SUBSCRIBER = "subscriber deleted before sending"


class Outcome(enum.Enum):
    SENT = "sent"
    FAILED = "failed"  # refused for good, or out of attempts
    DEFERRED = "deferred"  # refused for now: tried again later


def attempt(
    connection: Connection,
    marks: Marks,
    *,
    row_id: int,
    attempts: int,
    max_attempts: int,
    return_path: str,
    recipient: str,
    message: bytes,
    retry_at: datetime | None = None,
) -> tuple[Outcome, DeliveryError | None]:
    """Send `message` and record what the relay said; `attempts` is the count before this one.

    A temporary refusal leaves the row pending with `claimed_until = retry_at`
    (None: free for the next batch at once). `ConnectionFailed` is the caller's
    to handle: nothing was recorded for this row.
    """
    try:
        # The previous outcome is committed before the relay may take this message: the
        # transport confirms it just before the final "." (accepting_after).
        with accepting_after(marks.confirm):
            connection.send(return_path, recipient, message)
    except ConnectionFailed:
        raise
    except DeliveryError as exc:
        attempts += 1
        if exc.permanent or attempts >= max_attempts:
            marks.record(
                row_id, status=FAILED, attempts=attempts, last_error=exc.reply, claimed_until=None
            )
            return Outcome.FAILED, exc
        marks.record(row_id, attempts=attempts, last_error=exc.reply, claimed_until=retry_at)
        return Outcome.DEFERRED, exc
    marks.confirm()  # already done by an SMTP transport; others are not gated
    marks.record(row_id, status=SENT, attempts=attempts + 1, sent_at=utcnow(), claimed_until=None)
    return Outcome.SENT, None
