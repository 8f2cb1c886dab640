"""The mail that confirms an endorsement's address: a link to press, nothing else.

Built like the subscription confirmation (circulars.mail.transactional): one
person, multipart text + HTML, `Auto-Submitted: auto-generated`, no
List-Unsubscribe. Like it, the mail does not repeat what was typed into the
form (organisation, name, comment): a public form must not let anyone write
text into a stranger's inbox. The page behind the link shows those details.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from ..endorsements.tokens import EndorsementTokens, Submission
from ..models import Circular, Endorsement, utcnow
from .branding import Branding
from .transactional import OutgoingMail, _mail, _render, deliver

if TYPE_CHECKING:
    from ..sending.context import SendContext

log = logging.getLogger(__name__)

#: Where the web layer serves the confirmation page; the mail links to BASE_URL + this + token.
CONFIRM_PATH = "/endorsements/confirm/"


def build_endorsement_confirmation(
    *,
    branding: Branding,
    mail_from: str,
    email: str,
    circular_title: str,
    confirm_url: str,
    valid_days: int,
    timezone: str = "UTC",
    now: datetime | None = None,
) -> OutgoingMail:
    now = now or utcnow()
    expires_on = (now + timedelta(days=valid_days)).astimezone(ZoneInfo(timezone)).date()
    subject = f"Please confirm your endorsement: {circular_title}"
    html, text = _render(
        "endorse_confirm",
        {
            "subject": subject,
            "language": "en",
            "direction": "ltr",
            "org": branding,
            "email": email,
            "circular_title": circular_title,
            "confirm_url": confirm_url,
            "valid_days": valid_days,
            "expires_on": f"{expires_on.day} {expires_on:%B %Y}",
        },
    )
    return _mail(
        branding=branding,
        mail_from=mail_from,
        to_address=email,
        to_name="",
        subject=subject,
        html=html,
        text=text,
        kind="endorse",
        extra_headers={"Auto-Submitted": "auto-generated"},
        now=now,
    )


def send_endorsement_confirmation(
    session: Session,
    endorsement_id: int,
    submission: Submission,
    ctx: SendContext,
    *,
    tokens: EndorsementTokens,
    valid_days: int,
) -> str:
    """Mail the confirmation link for one submission; says what it did.

    Raises DeliveryError when the relay refuses or is unreachable.
    """
    row = session.get(Endorsement, endorsement_id)
    circular = session.get(Circular, row.circular_id) if row is not None else None
    if row is None or circular is None or circular.number is None:
        session.rollback()
        return "gone"
    title = circular.display_title
    branding = ctx.current_branding(session)  # as saved now, not when the worker started
    # End the transaction before talking SMTP: on SQLite it holds the write lock.
    session.rollback()
    token = tokens.make(endorsement_id, submission)
    mail = build_endorsement_confirmation(
        branding=branding,
        mail_from=ctx.mail_from,
        email=submission.email,
        circular_title=title,
        confirm_url=f"{ctx.base_url.rstrip('/')}{CONFIRM_PATH}{token}",
        valid_days=valid_days,
        timezone=ctx.timezone,
    )
    deliver(ctx.messenger, ctx.mail_from, [mail])
    log.info("endorsement %s: confirmation mail sent (%s)", endorsement_id, mail.message_id)
    return "sent"
