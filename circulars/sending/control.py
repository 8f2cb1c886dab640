"""Controlling a send after it is created: schedule, pause, resume, cancel, auto-pause.

Every change of state is one conditional UPDATE (`... WHERE status IN (...)`), so
two people, two beat runs or a person and a worker acting at once cannot both
win: the loser sees no row changed and is told what state the send is in.

Workers learn of a pause or a cancellation by reading the send's status between
messages (`SendWatch`), at most every CHECK_INTERVAL seconds; a batch that sees
it stop lets go of the rows it claimed, so a resume hands them to new batches.
Status is per delivery, so nothing already sent is sent again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from ..models import Circular, CircularStatus, Delivery, DeliveryStatus, Send, SendStatus, utcnow
from .numbering import take_next_number

log = logging.getLogger(__name__)

#: How often a batch reads its send's status. A read by primary key costs about
#: 0.1 ms, so at this interval it is far below 0.1% of a batch's time, and a
#: pause takes effect within this plus one SMTP exchange.
CHECK_INTERVAL = 0.5


PAUSABLE = (SendStatus.QUEUED, SendStatus.RUNNING)
CANCELLABLE = (SendStatus.SCHEDULED, SendStatus.QUEUED, SendStatus.RUNNING, SendStatus.PAUSED)


class ControlRefused(ValueError):
    """The send is not in a state that allows this; the message says which it is in."""


# --- schedule ---------------------------------------------------------------------------


def parse_send_time(text: str, timezone: str, now: datetime | None = None) -> datetime:
    """A start time typed by a person, in UTC.

    Without an offset ("2026-12-01 09:00") it is the organisation's local time
    (TIMEZONE); with one ("2026-12-01T09:00+01:00") it is taken as written. A
    local time that does not exist (skipped when clocks go forward) or that is
    past is refused, so nothing is scheduled for a moment other than the one meant.
    """
    cleaned = " ".join(text.split())
    try:
        parsed = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ControlRefused(
            f"{text.strip()!r} is not a date and time; write it as 2026-12-01 09:00 "
            "(in the organisation's time zone) or with an offset, as 2026-12-01T09:00+01:00."
        ) from None
    zone = ZoneInfo(timezone)
    if parsed.tzinfo is None:
        local = parsed.replace(tzinfo=zone)
        # A wall-clock time in the gap of a DST change does not survive the round trip.
        if local.astimezone(ZoneInfo("UTC")).astimezone(zone).replace(tzinfo=None) != parsed:
            raise ControlRefused(
                f"{cleaned} does not exist in {timezone} (the clocks skip it); choose another time."
            )
        parsed = local
    moment = parsed.astimezone(ZoneInfo("UTC"))
    if moment <= (now or utcnow()):
        shown = moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")
        raise ControlRefused(f"{shown} ({timezone}) is in the past; choose a time to come.")
    return moment


def number_circular(session: Session, circular_id: int) -> Circular | None:
    """Give the circular its number if it has none (it is being sent now); the caller commits.

    The circular's row is written first, so a second send of the same draft
    starting at the same moment waits for this one and then sees its number.
    """
    locked = session.execute(
        update(Circular).where(Circular.id == circular_id).values(revision=Circular.revision)
    )
    if locked.rowcount == 0:  # type: ignore[attr-defined]
        return None
    circular = session.get(Circular, circular_id, populate_existing=True)
    assert circular is not None
    if circular.number is None:
        circular.number = take_next_number(session)
        circular.status = CircularStatus.SENT
        circular.first_sent_at = utcnow()
    return circular


def start_due_sends(session: Session, now: datetime | None = None) -> list[int]:
    """Queue the scheduled sends whose time has come; returns the ids to start.

    Each is moved SCHEDULED -> QUEUED by a conditional UPDATE in the same
    transaction that numbers its circular, so a second beat run (or a second
    beat) finds nothing to do and no send starts twice.
    """
    moment = now or utcnow()
    due = list(
        session.scalars(
            select(Send.id)
            .where(Send.status == SendStatus.SCHEDULED, Send.scheduled_at <= moment)
            .order_by(Send.scheduled_at, Send.id)
        )
    )
    session.commit()
    started = []
    for send_id in due:
        queued = session.execute(
            update(Send)
            .where(Send.id == send_id, Send.status == SendStatus.SCHEDULED)
            .values(status=SendStatus.QUEUED)
        ).rowcount  # type: ignore[attr-defined]
        if queued:
            circular_id = session.scalar(select(Send.circular_id).where(Send.id == send_id))
            if circular_id is not None:
                number_circular(session, circular_id)
            started.append(send_id)
        session.commit()
    return started


# --- pause, resume, cancel ----------------------------------------------------------------


def _refuse(session: Session, send_id: int, allowed: Sequence[SendStatus], action: str) -> None:
    status = session.scalar(select(Send.status).where(Send.id == send_id))
    session.rollback()
    if status is None:
        raise ControlRefused(f"There is no send {send_id}.")
    names = " or ".join(str(item) for item in allowed)
    raise ControlRefused(f"Send {send_id} is {status}: only a {names} send can be {action}.")


def pause_send(session: Session, send_id: int, reason: str, user_id: int | None = None) -> None:
    """Pause a queued or running send; workers stop within CHECK_INTERVAL plus one message."""
    paused = session.execute(
        update(Send)
        .where(Send.id == send_id, Send.status.in_(PAUSABLE))
        .values(
            status=SendStatus.PAUSED,
            paused_at=utcnow(),
            pause_reason=reason,
            paused_by_id=user_id,
        )
    ).rowcount  # type: ignore[attr-defined]
    if not paused:
        _refuse(session, send_id, PAUSABLE, "paused")
    session.commit()


def resume_send(session: Session, send_id: int) -> None:
    """Let a paused send go on; the caller then queues its start task, which re-batches
    what is still pending (a send paused before its snapshot goes back to the queue)."""
    resumed = session.execute(
        update(Send)
        .where(Send.id == send_id, Send.status == SendStatus.PAUSED)
        .values(
            status=case((Send.total.is_(None), SendStatus.QUEUED.value), else_=SendStatus.RUNNING),
            paused_at=None,
            pause_reason=None,
            paused_by_id=None,
            relay_errors=0,
        )
    ).rowcount  # type: ignore[attr-defined]
    if not resumed:
        _refuse(session, send_id, (SendStatus.PAUSED,), "resumed")
    session.commit()


def cancel_send(session: Session, send_id: int, user_id: int | None = None) -> None:
    """Stop a send for good (or drop its schedule): what was not sent is marked cancelled.

    A message a worker is handing to the relay at this moment may still be
    accepted; its delivery then says sent, as it was, and the counts follow.
    """
    now = utcnow()
    cancelled = session.execute(
        update(Send)
        .where(Send.id == send_id, Send.status.in_(CANCELLABLE))
        .values(
            status=SendStatus.CANCELLED,
            cancelled_at=now,
            cancelled_by_id=user_id,
            finished_at=now,
        )
    ).rowcount  # type: ignore[attr-defined]
    if not cancelled:
        _refuse(session, send_id, CANCELLABLE, "cancelled")
    session.execute(
        update(Delivery)
        .where(Delivery.send_id == send_id, Delivery.status == DeliveryStatus.PENDING)
        .values(status=DeliveryStatus.CANCELLED, claimed_until=None)
    )
    session.commit()
    record_final_counts(session, send_id)


def record_final_counts(session: Session, send_id: int) -> None:
    """Write the sent, failed and cancelled figures on the send row (of an ended send)."""
    counts = dict(
        session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.send_id == send_id)
            .group_by(Delivery.status)
        ).all()
    )
    session.execute(
        update(Send)
        .where(Send.id == send_id)
        .values(
            sent_count=counts.get(DeliveryStatus.SENT.value, 0),
            failed_count=counts.get(DeliveryStatus.FAILED.value, 0),
            cancelled_count=counts.get(DeliveryStatus.CANCELLED.value, 0),
        )
    )
    session.commit()


# --- what a batch checks while it runs ----------------------------------------------------


def record_relay_error(session: Session, send_id: int, reply: str, limit: int) -> str:
    """Count one more temporary relay error in a row; pause the send at `limit`.

    Returns the send's status afterwards: paused now, still running, or what
    someone else made it meanwhile.
    """
    count = session.execute(
        update(Send)
        .where(Send.id == send_id)
        .values(relay_errors=Send.relay_errors + 1)
        .returning(Send.relay_errors, Send.status)
    ).one_or_none()
    if count is None:
        session.commit()
        return SendStatus.CANCELLED
    errors, status = count
    if limit and errors >= limit and status == SendStatus.RUNNING:
        log.warning("send %s paused after %s consecutive relay errors: %s", send_id, errors, reply)
        session.execute(
            update(Send)
            .where(Send.id == send_id, Send.status == SendStatus.RUNNING)
            .values(
                status=SendStatus.PAUSED,
                paused_at=utcnow(),
                pause_reason=f"Paused after {errors} consecutive relay errors: {reply}"[:2000],
            )
        )
        status = SendStatus.PAUSED
    session.commit()
    return str(status)


def reset_relay_errors(session: Session, send_id: int) -> None:
    session.execute(
        update(Send).where(Send.id == send_id, Send.relay_errors != 0).values(relay_errors=0)
    )
    session.commit()


class SendWatch:
    """A batch's view of its send while it delivers: still running? relay errors in a row?

    Reads the send's row by primary key at most every `interval` seconds, so the
    per-message hot path costs a clock read; writes the relay-error count only
    when an error happens and when the first success follows one.
    """

    def __init__(
        self,
        session: Session,
        send_id: int,
        *,
        pause_after: int,
        relay_errors: int = 0,
        interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.send_id = send_id
        self.pause_after = pause_after
        self.interval = interval
        self.clock = clock
        self.status: str = SendStatus.RUNNING
        self._errors_on_row = relay_errors > 0
        self._next_check = clock() + interval

    def running(self) -> bool:
        now = self.clock()
        if now < self._next_check:
            return True
        self._next_check = now + self.interval
        row = self.session.execute(
            select(Send.status, Send.relay_errors).where(Send.id == self.send_id)
        ).one_or_none()
        self.session.commit()
        if row is None:
            self.status = SendStatus.CANCELLED
            return False
        self.status = row.status
        self._errors_on_row = self._errors_on_row or row.relay_errors > 0
        return bool(row.status == SendStatus.RUNNING)

    def relay_error(self, reply: str) -> bool:
        """Record a connection failure or temporary refusal; true if the batch must stop.

        Our own relay limits holding a batch back (RelayLimited) are not relay
        errors: the engine does not report them here.
        """
        self._errors_on_row = True
        self.status = record_relay_error(self.session, self.send_id, reply, self.pause_after)
        return self.status != SendStatus.RUNNING

    def success(self) -> None:
        if self._errors_on_row:
            reset_relay_errors(self.session, self.send_id)
            self._errors_on_row = False

    def stop(self, remaining: Sequence[Any]) -> str:
        """Let go of the rows this batch claimed but did not reach; returns why it stopped."""
        ids = [row.id for row in remaining]
        if ids:
            self.session.execute(
                update(Delivery).where(Delivery.id.in_(ids)).values(claimed_until=None)
            )
            self.session.commit()
        if self.status == SendStatus.CANCELLED:
            # A message in flight at the cancel may have been marked sent since.
            record_final_counts(self.session, self.send_id)
        return self.status
