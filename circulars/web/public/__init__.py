"""Pages for subscribers, reached from the links in every email; no login, signed tokens."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from sqlalchemy import select

from ...extensions import csrf, db
from ...models import (
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
)
from ...subscribers.links import UNSUBSCRIBE_PATH
from ...subscribers.preferences import Origin, leave_everything, leave_list
from ...subscribers.tokens import SubscriberToken, TokenError, TokenSigner
from ..i18n import use_subscriber_language

bp = Blueprint("public", __name__)


def _signer() -> TokenSigner:
    return current_app.extensions["circulars.tokens"]  # type: ignore[no-any-return]


def _link_error(error: TokenError) -> Any:
    return render_template("public/link_error.html", expired=error.expired, message=str(error)), 400


def _is_test_link(token: SubscriberToken) -> bool:
    # Test sends carry links for subscriber 0, which never exists.
    return token.subscriber_id == 0


@bp.get("/")
def home() -> Any:
    return redirect(url_for("admin.circulars"))


def _unsubscribe_origin(source: str) -> Origin:
    return Origin(
        source=source, ip=request.remote_addr, user_agent=request.user_agent.string or None
    )


def _on_list(subscriber: Subscriber | None, list_id: int | None) -> bool:
    """Still receiving that list (or, for a token without a list, anything at all)."""
    if subscriber is None:
        return False
    if list_id is None:
        return subscriber.status == SubscriberStatus.ACTIVE
    status = db.session.scalar(
        select(Subscription.status).where(
            Subscription.subscriber_id == subscriber.id, Subscription.list_id == list_id
        )
    )
    return status in (SubscriptionStatus.CONFIRMED, SubscriptionStatus.UNCONFIRMED)


@bp.route(UNSUBSCRIBE_PATH + "<token>", methods=["GET"])
def unsubscribe_confirm(token: str) -> Any:
    """GET never changes anything: mail scanners follow links. It asks for a click."""
    try:
        data = _signer().read("unsubscribe", token)
    except TokenError as exc:
        return _link_error(exc)
    subscriber = db.session.get(Subscriber, data.subscriber_id) if data.subscriber_id else None
    if subscriber is not None:
        use_subscriber_language(subscriber)
    mailing_list = db.session.get(MailingList, data.list_id) if data.list_id else None
    return render_template(
        "public/unsubscribe.html",
        token=token,
        subscriber=subscriber,
        mailing_list=mailing_list,
        on_list=_on_list(subscriber, data.list_id),
        is_test=_is_test_link(data),
        preferences_token=_signer().make("preferences", subscriber.id) if subscriber else None,
    )


@bp.route(UNSUBSCRIBE_PATH + "<token>", methods=["POST"])
@csrf.exempt
def unsubscribe_post(token: str) -> Any:
    """RFC 8058 one-click: a POST with no cookie and no CSRF token, authorised by the token.

    The same URL serves the confirmation button of the GET page. CSRF protection
    adds nothing here: the signed token is the authorisation, and a forged POST
    would need the token, which only the recipient's mailbox has. A token naming
    a list takes the person off that list only; one without a list, off all.
    """
    try:
        data = _signer().read("unsubscribe", token)
    except TokenError as exc:
        return _link_error(exc)
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    origin = _unsubscribe_origin("one-click" if one_click else "unsubscribe page")
    subscriber = None if _is_test_link(data) else db.session.get(Subscriber, data.subscriber_id)
    if subscriber is not None:
        if data.list_id is None:
            leave_everything(db.session, subscriber, origin=origin)
        else:
            leave_list(db.session, subscriber, data.list_id, origin=origin)
        db.session.commit()
    if one_click:
        return "Unsubscribed.\n", 200, {"Content-Type": "text/plain; charset=utf-8"}
    return _unsubscribed_page(token, data, subscriber)


@bp.route(UNSUBSCRIBE_PATH + "<token>/all", methods=["POST"])
@csrf.exempt
def unsubscribe_all(token: str) -> Any:
    """The "leave all my lists" button, offered after leaving one; the same token authorises it.

    Exempt from CSRF for the reason given above; the token must be a valid
    unsubscribe link of this very subscriber.
    """
    try:
        data = _signer().read("unsubscribe", token)
    except TokenError as exc:
        return _link_error(exc)
    subscriber = None if _is_test_link(data) else db.session.get(Subscriber, data.subscriber_id)
    if subscriber is not None:
        leave_everything(db.session, subscriber, origin=_unsubscribe_origin("unsubscribe page"))
        db.session.commit()
    return _unsubscribed_page(token, data, subscriber, everything=True)


def _unsubscribed_page(
    token: str, data: SubscriberToken, subscriber: Subscriber | None, *, everything: bool = False
) -> Any:
    if subscriber is not None:
        use_subscriber_language(subscriber)
    everything = everything or data.list_id is None
    mailing_list = db.session.get(MailingList, data.list_id) if data.list_id else None
    return render_template(
        "public/unsubscribed.html",
        token=token,
        subscriber=subscriber,
        mailing_list=mailing_list,
        everything=everything,
        is_test=_is_test_link(data),
        preferences_token=_signer().make("preferences", subscriber.id) if subscriber else None,
    )


# The preference centre; the subscribe page, embed form and confirmation; sign-on statements;
# the organisation's logo.
from . import archive, branding, endorse, preferences, shared_circulars, subscribe  # noqa: E402,F401
