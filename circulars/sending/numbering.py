"""Circular numbers: unique, in order, never skipped or repeated."""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from ..models import Counter

CIRCULAR_COUNTER = "circular"


def take_next_number(session: Session, counter: str = CIRCULAR_COUNTER) -> int:
    """Increment and return the counter inside the caller's transaction.

    The UPDATE locks the counter row until the transaction ends, so two sends
    starting at once take turns; a rolled-back send gives its number back,
    which is why numbers never skip. The unique constraint on
    circulars.number is the last guard.
    """
    value = session.execute(
        update(Counter)
        .where(Counter.name == counter)
        .values(value=Counter.value + 1)
        .returning(Counter.value)
    ).scalar_one_or_none()
    if value is None:
        # The first migration creates the row; this covers a database where it was
        # removed by hand. A concurrent creator then fails on the primary key.
        session.execute(insert(Counter).values(name=counter, value=1))
        value = 1
    return int(value)


def peek_next_number(session: Session, counter: str = CIRCULAR_COUNTER) -> int:
    """The number the next send would take; for previews only, never reserved."""
    current = session.scalar(select(Counter.value).where(Counter.name == counter))
    return (current or 0) + 1
