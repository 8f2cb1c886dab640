"""Pages for subscribers, reached from the links in every email; no login, signed tokens."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from sqlalchemy import select

from ...extensions import csrf, db
from ...models import MailingList, Subscriber, Subscription, SubscriptionStatus
from ...subscribers.links import PREFERENCES_PATH, UNSUBSCRIBE_PATH
from ...subscribers.service import unsubscribe
from ...subscribers.tokens import SubscriberToken, TokenError, TokenSigner
from ..forms import ConfirmForm

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


@bp.route(UNSUBSCRIBE_PATH + "<token>", methods=["GET"])
def unsubscribe_confirm(token: str) -> Any:
    """GET never changes anything: mail scanners follow links. It asks for a click."""
    try:
        data = _signer().read("unsubscribe", token)
    except TokenError as exc:
        return _link_error(exc)
    subscriber = db.session.get(Subscriber, data.subscriber_id)
    mailing_list = db.session.get(MailingList, data.list_id) if data.list_id else None
    return render_template(
        "public/unsubscribe.html",
        token=token,
        subscriber=subscriber,
        mailing_list=mailing_list,
        is_test=_is_test_link(data),
        form=ConfirmForm(),
    )


@bp.route(UNSUBSCRIBE_PATH + "<token>", methods=["POST"])
@csrf.exempt
def unsubscribe_post(token: str) -> Any:
    """RFC 8058 one-click: a POST with no cookie and no CSRF token, authorised by the token.

    The same URL serves the confirmation button of the GET page. CSRF protection
    adds nothing here: the signed token is the authorisation, and a forged POST
    would need the token, which only the recipient's mailbox has.
    """
    try:
        data = _signer().read("unsubscribe", token)
    except TokenError as exc:
        return _link_error(exc)
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    result = (
        None if _is_test_link(data) else unsubscribe(db.session, data.subscriber_id, data.list_id)
    )
    db.session.commit()
    if one_click:
        return "Unsubscribed.\n", 200, {"Content-Type": "text/plain; charset=utf-8"}
    return render_template(
        "public/unsubscribed.html",
        result=result,
        is_test=_is_test_link(data),
        preferences_token=_signer().make("preferences", data.subscriber_id) if result else None,
    )


@bp.route(PREFERENCES_PATH + "<token>", methods=["GET", "POST"])
def preferences(token: str) -> Any:
    try:
        data = _signer().read("preferences", token)
    except TokenError as exc:
        return _link_error(exc)
    subscriber = db.session.get(Subscriber, data.subscriber_id)
    if subscriber is None:
        return render_template(
            "public/link_error.html",
            expired=False,
            message="There is nothing to manage: this address is not subscribed.",
        ), 404
    form = ConfirmForm()
    if request.method == "POST" and form.validate_on_submit():
        list_id = request.form.get("list_id", type=int)
        if request.form.get("action") == "leave-all":
            unsubscribe(db.session, subscriber.id, None)
            flash("You are unsubscribed from all lists.", "success")
        elif list_id is not None:
            result = unsubscribe(db.session, subscriber.id, list_id)
            if result and result.lists:
                flash(f"You are unsubscribed from {result.lists[0].name}.", "success")
        db.session.commit()
        return redirect(url_for("public.preferences", token=token))
    subscriptions = db.session.execute(
        select(Subscription, MailingList)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(Subscription.subscriber_id == subscriber.id)
        .order_by(MailingList.name)
    ).all()
    return render_template(
        "public/preferences.html",
        subscriber=subscriber,
        subscriptions=subscriptions,
        form=form,
        token=token,
        confirmed=SubscriptionStatus.CONFIRMED,
    )


from . import subscribe  # noqa: E402,F401  (subscribe page, embed form, confirmation)
