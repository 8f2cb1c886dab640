"""The two mails a subscriber gets outside circulars: the confirmation and the welcome.

Each goes to one person, so it is rendered for that person (no markers), and
built by the same hand-made MIME code as circulars: multipart text + HTML,
a unique Message-ID, Date, From = MAIL_FROM. The confirmation carries
`Auto-Submitted: auto-generated` (RFC 3834, so auto-responders stay quiet)
and no List-Unsubscribe, since it subscribes no one; a welcome does carry
List-Id and the one-click List-Unsubscribe of its list, as circulars do.

The confirmation deliberately does not repeat the name typed into the form:
a form anyone can fill in must not let them write text into a stranger's inbox.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import (
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from ..subscribers.optin import CONFIRM_PATH, CONFIRM_PURPOSE, is_blocked
from ..subscribers.tokens import TokenSigner
from .branding import Branding
from .mime import Envelope, build_message, new_message_id, prepare_message
from .render import _inline_css, email_environment, markdown_to_html
from .transport import Messenger

if TYPE_CHECKING:
    from ..sending.context import SendContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutgoingMail:
    to_address: str
    message_id: str
    data: bytes


@dataclass(frozen=True)
class ListInfo:
    id: int
    slug: str
    name: str
    description: str


def _crlf(text: str) -> str:
    return re.sub(r"\r\n|\r|\n", "\r\n", text)


def _render(name: str, context: dict[str, object]) -> tuple[str, str]:
    env = email_environment()
    html = _inline_css(env.get_template(f"{name}.html").render(context), "")
    text = env.get_template(f"{name}.txt").render(context)
    return _crlf(html), _crlf(text.strip()) + "\r\n"


def _mail(
    *,
    branding: Branding,
    mail_from: str,
    to_address: str,
    to_name: str,
    subject: str,
    html: str,
    text: str,
    kind: str,
    list_info: ListInfo | None = None,
    unsubscribe_url: str = "",
    extra_headers: dict[str, str] | None = None,
    now: datetime | None = None,
) -> OutgoingMail:
    domain = mail_from.rpartition("@")[2]
    prepared = prepare_message(
        from_name=branding.name,
        from_address=mail_from,
        subject=subject,
        html_template=html,
        text_template=text,
        attachments=[],
        list_names={list_info.id: (list_info.slug, list_info.name)} if list_info else {},
        domain=domain,
        extra_headers=extra_headers,
    )
    message_id = new_message_id(domain, kind)
    envelope = Envelope(
        to_name=to_name,
        to_address=to_address,
        list_id=list_info.id if list_info else None,
        unsubscribe_url=unsubscribe_url,
        unsubscribe_mailto=None,
        message_id=message_id,
        fields={},
    )
    return OutgoingMail(to_address, message_id, build_message(prepared, envelope, now=now))


def build_confirmation(
    *,
    branding: Branding,
    mail_from: str,
    email: str,
    lists: Sequence[ListInfo],
    confirm_url: str,
    valid_days: int,
    purge_days: int,
    timezone: str = "UTC",
    now: datetime | None = None,
) -> OutgoingMail:
    """The mail with the confirmation link; the only mail an unconfirmed address ever gets."""
    now = now or utcnow()
    expires_on: date = (now + timedelta(days=valid_days)).astimezone(ZoneInfo(timezone)).date()
    subject = f"Please confirm your subscription to {branding.name}"
    html, text = _render(
        "confirm",
        {
            "subject": subject,
            "language": "en",
            "direction": "ltr",
            "org": branding,
            "email": email,
            "lists": lists,
            "confirm_url": confirm_url,
            "valid_days": valid_days,
            "expires_on": f"{expires_on.day} {expires_on:%B %Y}",
            "purge_days": purge_days,
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
        kind="confirm",
        extra_headers={"Auto-Submitted": "auto-generated"},
        now=now,
    )


def build_welcome(
    *,
    branding: Branding,
    mail_from: str,
    email: str,
    name: str,
    list_info: ListInfo,
    message: str,
    preferences_url: str,
    unsubscribe_url: str,
    now: datetime | None = None,
) -> OutgoingMail:
    """A list's welcome message, Markdown or plain text (raw HTML in it is shown as text)."""
    subject = f"Welcome to {list_info.name}"
    html, text = _render(
        "welcome",
        {
            "subject": subject,
            # The frame is English; the list's message is in whatever language staff wrote it.
            "language": "en",
            "direction": "ltr",
            "org": branding,
            "email": email,
            "greeting": f"Dear {name}," if name else "Dear colleague,",
            "list_name": list_info.name,
            "message_html": markdown_to_html(message),
            "message_text": message.strip(),
            "preferences_url": preferences_url,
            "unsubscribe_url": unsubscribe_url,
        },
    )
    return _mail(
        branding=branding,
        mail_from=mail_from,
        to_address=email,
        to_name=name,
        subject=subject,
        html=html,
        text=text,
        kind="welcome",
        list_info=list_info,
        unsubscribe_url=unsubscribe_url,
        now=now,
    )


def deliver(messenger: Messenger, envelope_from: str, mails: Sequence[OutgoingMail]) -> None:
    """Hand the mails to the relay over one connection; raises DeliveryError."""
    if not mails:
        return
    connection = messenger.connect()
    try:
        for mail in mails:
            connection.send(envelope_from, mail.to_address, mail.data)
    finally:
        connection.close()


def _info(item: MailingList) -> ListInfo:
    return ListInfo(item.id, item.slug, item.name, item.description or "")


def send_confirmation(
    session: Session,
    subscriber_id: int,
    list_ids: Sequence[int],
    ctx: SendContext,
    *,
    signer: TokenSigner,
    valid_days: int,
    purge_days: int,
) -> str:
    """Send the confirmation mail for the lists still awaiting confirmation; says what it did.

    Checked again here, since time passed since the request: someone blocked
    meanwhile, or who confirmed already (through an earlier mail), gets nothing.
    Raises DeliveryError when the relay refuses or is unreachable.
    """
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        session.rollback()
        return "gone"
    if is_blocked(session, subscriber):
        session.rollback()
        return "blocked"
    lists = list(
        session.scalars(
            select(MailingList)
            .join(Subscription, Subscription.list_id == MailingList.id)
            .where(
                Subscription.subscriber_id == subscriber_id,
                Subscription.list_id.in_(list_ids),
                Subscription.status == SubscriptionStatus.UNCONFIRMED,
            )
            .order_by(MailingList.name)
        )
    )
    if not lists:
        session.rollback()
        return "nothing-to-confirm"
    email = subscriber.email
    infos = [_info(item) for item in lists]
    branding = ctx.current_branding(session)  # as saved now, not when the worker started
    # End the transaction before talking SMTP: on SQLite it holds the write lock.
    session.rollback()
    token = signer.make_lists(CONFIRM_PURPOSE, subscriber_id, [item.id for item in infos])
    mail = build_confirmation(
        branding=branding,
        mail_from=ctx.mail_from,
        email=email,
        lists=infos,
        confirm_url=f"{ctx.base_url.rstrip('/')}{CONFIRM_PATH}{token}",
        valid_days=valid_days,
        purge_days=purge_days,
        timezone=ctx.timezone,
    )
    deliver(ctx.messenger, ctx.mail_from, [mail])
    log.info("confirmation mail sent to subscriber %s (%s)", subscriber_id, mail.message_id)
    return "sent"


def send_welcome(
    session: Session, subscriber_id: int, list_ids: Sequence[int], ctx: SendContext
) -> int:
    """One welcome mail per newly confirmed list that has a welcome message; returns how many.

    Raises DeliveryError when the relay refuses or is unreachable.
    """
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None or subscriber.status != SubscriberStatus.ACTIVE:
        session.rollback()
        return 0
    lists = list(
        session.scalars(
            select(MailingList)
            .join(Subscription, Subscription.list_id == MailingList.id)
            .where(
                Subscription.subscriber_id == subscriber_id,
                Subscription.list_id.in_(list_ids),
                Subscription.status == SubscriptionStatus.CONFIRMED,
                MailingList.welcome_message != "",
            )
            .order_by(MailingList.name)
        )
    )
    wanted = [(_info(item), item.welcome_message) for item in lists if item.welcome_message.strip()]
    email, name = subscriber.email, subscriber.name
    branding = ctx.current_branding(session)
    session.rollback()  # read what is needed, then leave the database before SMTP
    mails = [
        build_welcome(
            branding=branding,
            mail_from=ctx.mail_from,
            email=email,
            name=name,
            list_info=info,
            message=message,
            preferences_url=ctx.links.preferences(subscriber_id),
            unsubscribe_url=ctx.links.unsubscribe(subscriber_id, info.id),
        )
        for info, message in wanted
    ]
    deliver(ctx.messenger, ctx.mail_from, mails)
    return len(mails)
