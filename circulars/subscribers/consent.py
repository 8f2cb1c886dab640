"""Recording consent: one append-only row per thing a person (or staff) agreed to or withdrew.

The row keeps what a data-protection officer asks for later: when, from which
address and browser, through which form, and the wording shown at that moment.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from ..models import ConsentAction, ConsentEvent, utcnow

#: Column sizes of consent_events; longer values are cut, never refused (it is a record).
_IP_MAX = 45
_USER_AGENT_MAX = 300
_SOURCE_MAX = 300


def _cut(value: str | None, size: int) -> str | None:
    return value[:size] if value else None


def record_consent(
    session: Session,
    *,
    subscriber_id: int | None,
    action: ConsentAction | str,
    list_id: int | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    source: str = "",
    consent_text: str | None = None,
    actor_id: int | None = None,
    detail: str | None = None,
    now: datetime | None = None,
) -> ConsentEvent:
    """Add a consent event to the session (the caller commits with the change it records).

    Written in the same transaction as the change, so there is never a
    subscription without its proof, nor a proof of something that was rolled back.
    """
    event = ConsentEvent(
        subscriber_id=subscriber_id,
        list_id=list_id,
        action=str(action),
        occurred_at=now or utcnow(),
        ip=_cut(ip, _IP_MAX),
        user_agent=_cut(user_agent, _USER_AGENT_MAX),
        source=(source or "")[:_SOURCE_MAX],
        consent_text=consent_text,
        actor_id=actor_id,
        detail=detail,
    )
    session.add(event)
    return event
