"""Subscribing: the public form, the form other websites embed, and the confirmation link.

Every POST is answered with the same "check your inbox" page, whether the
address is new, known, confirmed, blocked, in its cool-down or a bot's: the
form cannot be used to find out who is subscribed. Abuse is held back by a
per-IP limit (Flask-Limiter), a honeypot field, a per-address cool-down and a
global hourly cap on confirmation mails (both in subscribers.optin).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import current_app, redirect, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from limits import RateLimitItemPerHour
from sqlalchemy import select
from werkzeug.exceptions import TooManyRequests
from wtforms import EmailField, SelectField, StringField
from wtforms.validators import DataRequired, Length

from ...extensions import csrf, db, limiter
from ...languages import DEFAULT_LANGUAGE, SUPPORTED_LANGUAGES
from ...models import MailingList, Subscriber
from ...subscribers.addresses import InvalidAddress
from ...subscribers.optin import (
    CONFIRM_PATH,
    CONFIRM_PURPOSE,
    SubscribeRefused,
    confirm,
    request_subscription,
)
from ...subscribers.tokens import TokenError, TokenSigner
from ...tasks import SEND_CONFIRMATION, SEND_WELCOME, enqueue
from ..forms import MultiCheckboxField, single_line
from ..helpers import settings
from ..i18n import current_language, use_subscriber_language
from . import bp

log = logging.getLogger(__name__)

#: The honeypot: a field people never see (hidden by CSS, labelled "leave empty") and
#: form-filling bots fill in. Its name is one such bots like.
HONEYPOT = "website"
#: Per-IP limits are shared by the page and the embedded form (one budget per address).
LIMIT_SCOPE = "subscribe"


class SubscribeForm(FlaskForm):
    email = EmailField(
        _l("Email address"),
        validators=[DataRequired(message=_l("Enter your email address.")), Length(max=320)],
    )
    name = StringField(_l("Name (optional)"), validators=[Length(max=200), single_line])
    language = SelectField(_l("Language of our pages"), default=DEFAULT_LANGUAGE)
    # Unknown or private slugs are dropped (the domain takes public lists only), not refused.
    lists = MultiCheckboxField(_l("Lists"), validate_choice=False)


def _public_lists() -> list[MailingList]:
    return list(
        db.session.scalars(
            select(MailingList).where(MailingList.public.is_(True)).order_by(MailingList.name)
        )
    )


def _form(lists: list[MailingList], *, embed: bool = False) -> SubscribeForm:
    # The embedded form comes from another site and cannot carry our CSRF token.
    form = SubscribeForm(meta={"csrf": False}) if embed else SubscribeForm()
    form.lists.choices = [(item.slug, item.name) for item in lists]
    form.language.choices = list(SUPPORTED_LANGUAGES.items())
    if request.method == "GET":
        wanted = set(request.args.getlist("list"))
        form.lists.data = [item.slug for item in lists if item.slug in wanted]
        form.language.data = current_language()
    return form


def _page(form: SubscribeForm, lists: list[MailingList], status: int = 200) -> Any:
    return (
        render_template(
            "public/subscribe.html",
            form=form,
            lists=lists,
            consent_text=settings().subscribe_consent_text,
            honeypot=HONEYPOT,
        ),
        status,
    )


def _sent_page() -> Any:
    """The one answer to every accepted POST (see the module docstring)."""
    return render_template("public/subscribe_sent.html")


def _client_ip() -> str | None:
    # After ProxyFix when TRUSTED_PROXIES is set; otherwise the socket's peer.
    return request.remote_addr


def _mail_budget() -> bool:
    """The global hourly cap on confirmation mails, counted in the limiter's shared storage."""
    if not limiter.enabled:
        return True
    item = RateLimitItemPerHour(settings().confirmation_mails_per_hour)
    return bool(limiter.limiter.hit(item, "circulars", "confirmation-mails"))


def _subscribe_limit() -> str:
    return settings().subscribe_rate_limit


def _handle(form: SubscribeForm, lists: list[MailingList], source: str) -> Any | None:
    """Store the request and enqueue its mail; None when it went through, else the error page."""
    if not form.validate():
        return _page(form, lists, 400)
    by_slug = {item.slug: item.id for item in lists}
    list_ids = [by_slug[slug] for slug in form.lists.data or [] if slug in by_slug]
    current = settings()
    try:
        outcome = request_subscription(
            db.session,
            form.email.data or "",
            list_ids,
            name=form.name.data or "",
            language=form.language.data or DEFAULT_LANGUAGE,
            source=source,
            consent_text=current.subscribe_consent_text,
            ip=_client_ip(),
            user_agent=request.user_agent.string or None,
            cooldown=_cooldown(),
            mail_budget=_mail_budget,
        )
    except InvalidAddress:
        db.session.rollback()
        form.email.errors = [_("This is not a valid email address.")]
        return _page(form, lists, 400)
    except SubscribeRefused:
        db.session.rollback()
        form.lists.errors = [_("Choose at least one list.")]
        return _page(form, lists, 400)
    db.session.commit()
    if outcome.send_mail:
        enqueue(SEND_CONFIRMATION, outcome.subscriber_id, list(outcome.pending))
    return None


def _cooldown() -> timedelta:
    return timedelta(minutes=settings().confirmation_cooldown_minutes)


def _is_bot(value: str | None) -> bool:
    return bool(value and value.strip())


@bp.route("/subscribe", methods=["GET", "POST"])
@limiter.shared_limit(_subscribe_limit, scope=LIMIT_SCOPE, methods=["POST"])
def subscribe() -> Any:
    lists = _public_lists()
    form = _form(lists)
    if request.method == "GET":
        return _page(form, lists)
    if _is_bot(request.form.get(HONEYPOT)):
        log.info("subscribe: honeypot filled in from %s; nothing stored", _client_ip())
        return _sent_page()
    error = _handle(form, lists, "subscribe page")
    return error if error is not None else _sent_page()


def _embed_source() -> str:
    where = request.headers.get("Referer") or request.headers.get("Origin") or "unknown site"
    return f"embed: {where}"[:300]


def _allowed_next(target: str | None) -> str | None:
    """A `next` URL only when its origin is on EMBED_ALLOWED_ORIGINS: no open redirect."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    if "\\" in target or any(ord(char) < 32 for char in target):
        return None
    origin = f"{parts.scheme}://{parts.netloc.lower()}"
    return target if origin in settings().embed_allowed_origins else None


@bp.post("/subscribe/embed")
@csrf.exempt
@limiter.shared_limit(_subscribe_limit, scope=LIMIT_SCOPE, methods=["POST"])
def subscribe_embed() -> Any:
    """The form pasted on other websites: no CSRF token possible, so the honeypot must be there.

    A POST without the honeypot field did not come from our snippet; like one
    that filled it in, it is told "check your inbox" and nothing is stored.
    """
    if HONEYPOT not in request.form or _is_bot(request.form.get(HONEYPOT)):
        log.info("embed: honeypot missing or filled in from %s; nothing stored", _client_ip())
    else:
        lists = _public_lists()
        form = _form(lists, embed=True)
        error = _handle(form, lists, _embed_source())
        if error is not None:
            return error
    target = _allowed_next(request.form.get("next"))
    if target is not None:
        return redirect(target, code=303)
    return _sent_page()


# --- confirmation ------------------------------------------------------------------------


def _confirm_signer() -> TokenSigner:
    return current_app.extensions["circulars.confirm_tokens"]  # type: ignore[no-any-return]


def _link_error(error: TokenError) -> Any:
    # The template translates the message (the token module's words are in the catalogue).
    return (
        render_template("public/link_error.html", expired=error.expired, message=str(error)),
        400,
    )


def _nothing_to_confirm() -> Any:
    return (
        render_template(
            "public/link_error.html",
            expired=False,
            message=_(
                "There is nothing to confirm: this request is no longer on file. "
                "You can subscribe again."
            ),
        ),
        404,
    )


@bp.get(CONFIRM_PATH + "<token>")
def confirm_page(token: str) -> Any:
    """GET changes nothing (mail scanners open links); the button on the page confirms."""
    try:
        data = _confirm_signer().read_lists(CONFIRM_PURPOSE, token)
    except TokenError as exc:
        return _link_error(exc)
    subscriber = db.session.get(Subscriber, data.subscriber_id)
    if subscriber is None:
        return _nothing_to_confirm()
    use_subscriber_language(subscriber)
    lists = list(
        db.session.scalars(
            select(MailingList).where(MailingList.id.in_(data.list_ids)).order_by(MailingList.name)
        )
    )
    return render_template("public/confirm.html", subscriber=subscriber, lists=lists)


@bp.post(CONFIRM_PATH + "<token>")
@csrf.exempt
def confirm_post(token: str) -> Any:
    """The signed token is the authorisation (only the mailbox has it), so no CSRF token."""
    try:
        data = _confirm_signer().read_lists(CONFIRM_PURPOSE, token)
    except TokenError as exc:
        return _link_error(exc)
    outcome = confirm(
        db.session, data, ip=_client_ip(), user_agent=request.user_agent.string or None
    )
    db.session.commit()
    if outcome.subscriber is None:
        return _nothing_to_confirm()
    use_subscriber_language(outcome.subscriber)
    for mailing_list in outcome.confirmed:
        if mailing_list.welcome_message.strip():
            # One task per list: a retry never sends another list's welcome twice.
            enqueue(SEND_WELCOME, outcome.subscriber.id, [mailing_list.id])
    links = current_app.extensions["circulars.send_context"].links
    return render_template(
        "public/confirmed.html",
        outcome=outcome,
        preferences_url=links.preferences(outcome.subscriber.id),
    )


# --- too many requests -------------------------------------------------------------------


@bp.app_errorhandler(429)
def too_many_requests(error: TooManyRequests) -> Any:
    return render_template("public/rate_limited.html"), 429
