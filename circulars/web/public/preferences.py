"""The preference centre: one calm page, reached from the signed link in every email.

No login and no password: the token in the address names the subscriber, and
every view acts on that subscriber alone, whatever list ids a form sends. The
forms carry a CSRF token (the page sets the session cookie that holds it);
every change is flashed and redirected back (post/redirect/get).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from functools import wraps
from typing import Any
from zoneinfo import ZoneInfo

from flask import (
    Response,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_babel import format_date
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import or_, select
from wtforms import DateField, RadioField, SelectField, StringField, ValidationError
from wtforms.fields.choices import SelectChoice
from wtforms.validators import AnyOf, InputRequired, Length, Optional

from ...extensions import db
from ...languages import SUPPORTED_LANGUAGES
from ...models import (
    DeliveryMode,
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
)
from ...subscribers import preferences as prefs
from ...subscribers.links import PREFERENCES_PATH
from ...subscribers.tokens import TokenError
from ..forms import ConfirmForm
from ..helpers import settings
from ..i18n import choose_language, use_subscriber_language
from . import _link_error, _signer, bp

DELIVERY_LABELS = {
    DeliveryMode.EVERY: _l("Every circular"),
    DeliveryMode.WEEKLY: _l("Weekly digest"),
    DeliveryMode.MONTHLY: _l("Monthly digest"),
}
PAUSE_LABELS = {
    "2w": _l("2 weeks"),
    "1m": _l("1 month"),
    "3m": _l("3 months"),
    "date": _l("Until a date I choose"),
}


def one_line(_form: FlaskForm, field: StringField) -> None:
    if field.data and any(char in field.data for char in "\r\n\x00\x0b\x0c\u2028\u2029"):
        raise ValidationError(_l("Must be a single line."))


class ProfileForm(FlaskForm):
    name = StringField(
        _l("Name"), validators=[Length(max=200, message=_l("At most 200 characters.")), one_line]
    )
    organization = StringField(
        _l("Organisation"),
        validators=[Length(max=200, message=_l("At most 200 characters.")), one_line],
    )
    language = SelectField(_l("Language"), validators=[InputRequired()])


class ListChoiceForm(FlaskForm):
    """One list's row: join, leave, or save how it arrives (the button pressed says which)."""

    action = StringField(validators=[AnyOf(["join", "leave", "delivery"])])
    delivery = SelectField(
        choices=[SelectChoice(mode.value, label) for mode, label in DELIVERY_LABELS.items()],
        default=DeliveryMode.EVERY.value,
    )


class PauseForm(FlaskForm):
    period = RadioField(
        _l("Pause for"),
        choices=[SelectChoice(code, label) for code, label in PAUSE_LABELS.items()],
        default="2w",
        validators=[InputRequired(message=_l("Choose how long to pause."))],
    )
    until = DateField(_l("Date"), validators=[Optional()])


def _origin() -> prefs.Origin:
    return prefs.Origin(
        source=prefs.PREFERENCE_CENTRE,
        ip=request.remote_addr,
        user_agent=request.user_agent.string or None,
    )


def _private(response: Any) -> Response:
    """The link in the address is a key: never cache the page, never leak it onwards."""
    result = make_response(response)
    result.headers["Cache-Control"] = "no-store"
    result.headers["Referrer-Policy"] = "no-referrer"
    return result


def _nothing_to_manage() -> Any:
    return render_template(
        "public/link_error.html",
        expired=False,
        message=_("There is nothing to manage: this address is not subscribed."),
    ), 404


def with_subscriber(view: Callable[..., Any]) -> Callable[..., Any]:
    """Read the token, load its subscriber, speak their language; else the link error page.

    A bad token (tampered, expired, another purpose) or a subscriber who no
    longer exists stops here, before any form is read, so nothing changes.
    """

    @wraps(view)
    def wrapped(token: str, **kwargs: Any) -> Response:
        try:
            data = _signer().read("preferences", token)
        except TokenError as exc:
            return _private(_link_error(exc))
        subscriber = db.session.get(Subscriber, data.subscriber_id)
        if subscriber is None:
            return _private(_nothing_to_manage())
        use_subscriber_language(subscriber)
        return _private(view(subscriber, token, **kwargs))

    return wrapped


def _back(token: str) -> Any:
    return redirect(url_for("public.preferences", token=token))


def _today() -> date:
    return datetime.now(ZoneInfo(settings().timezone)).date()


def _language_choices(subscriber: Subscriber) -> list[SelectChoice]:
    choices = [SelectChoice(code, name) for code, name in SUPPORTED_LANGUAGES.items()]
    if subscriber.language not in SUPPORTED_LANGUAGES:  # e.g. set by an import: kept as is
        choices.append(SelectChoice(subscriber.language, subscriber.language))
    return choices


def _profile_form(subscriber: Subscriber, formdata: Any = None) -> ProfileForm:
    form = ProfileForm(formdata=formdata, obj=None if formdata else subscriber)
    form.language.choices = _language_choices(subscriber)
    return form


def _lists_for(subscriber: Subscriber) -> list[tuple[MailingList, Subscription | None]]:
    """Every public list, and the other lists the subscriber is on (not those they left)."""
    rows = db.session.execute(
        select(MailingList, Subscription)
        .outerjoin(
            Subscription,
            (Subscription.list_id == MailingList.id)
            & (Subscription.subscriber_id == subscriber.id),
        )
        .where(
            or_(
                MailingList.public,
                Subscription.status.in_(
                    [SubscriptionStatus.CONFIRMED, SubscriptionStatus.UNCONFIRMED]
                ),
            )
        )
        .order_by(MailingList.name, MailingList.id)
    ).all()
    return [(mailing_list, subscription) for mailing_list, subscription in rows]


def _render_page(
    subscriber: Subscriber,
    token: str,
    *,
    profile_form: ProfileForm | None = None,
    pause_form: PauseForm | None = None,
    status: int = 200,
) -> Any:
    today = _today()
    paused = prefs.is_paused(subscriber)
    pause_ends = None
    if paused and subscriber.paused_until is not None:
        local = subscriber.paused_until.astimezone(ZoneInfo(settings().timezone)).date()
        pause_ends = format_date(local, format="long")
    return render_template(
        "public/preferences.html",
        subscriber=subscriber,
        token=token,
        lists=_lists_for(subscriber),
        profile_form=profile_form or _profile_form(subscriber),
        pause_form=pause_form or PauseForm(formdata=None),
        form=ConfirmForm(),
        delivery_labels=DELIVERY_LABELS,
        joined=SubscriptionStatus.CONFIRMED,
        unconfirmed=SubscriptionStatus.UNCONFIRMED,
        left_everything=subscriber.status != SubscriberStatus.ACTIVE,
        paused=paused,
        pause_ends=pause_ends,
        pause_date_min=(today + timedelta(days=1)).isoformat(),
        pause_date_max=prefs.add_months(today, prefs.PAUSE_MAX_MONTHS).isoformat(),
    ), status


@bp.get(PREFERENCES_PATH + "<token>")
@with_subscriber
def preferences(subscriber: Subscriber, token: str) -> Any:
    return _render_page(subscriber, token)


@bp.post(PREFERENCES_PATH + "<token>/details")
@with_subscriber
def preferences_details(subscriber: Subscriber, token: str) -> Any:
    form = _profile_form(subscriber, request.form)
    if not form.validate_on_submit():
        return _render_page(subscriber, token, profile_form=form, status=400)
    changed = prefs.update_profile(
        db.session,
        subscriber,
        name=form.name.data or "",
        organization=form.organization.data or "",
        language=form.language.data or "",
        origin=_origin(),
    )
    db.session.commit()
    if "language" in changed:
        choose_language(subscriber.language)
    flash(_("Your details are saved.") if changed else _("Nothing changed."), "success")
    return _back(token)


@bp.post(PREFERENCES_PATH + "<token>/lists/<int:list_id>")
@with_subscriber
def preferences_list(subscriber: Subscriber, token: str, list_id: int) -> Any:
    form = ListChoiceForm()
    if not form.validate_on_submit():
        flash(_("That did not work. Please try again."), "error")
        return _back(token)
    mailing_list = db.session.get(MailingList, list_id)
    name = mailing_list.name if mailing_list is not None else ""
    origin = _origin()
    if form.action.data == "join":
        outcome = prefs.join_list(
            db.session,
            subscriber,
            list_id,
            origin=origin,
            delivery=form.delivery.data or DeliveryMode.EVERY,
            consent_text=_("Join %(name)s", name=name),
        )
        message, category = {
            prefs.JoinOutcome.JOINED: (_("You joined %(name)s.", name=name), "success"),
            prefs.JoinOutcome.ALREADY: (_("You are on %(name)s already.", name=name), "info"),
            prefs.JoinOutcome.NOT_AVAILABLE: (_("This list cannot be joined here."), "error"),
            prefs.JoinOutcome.REFUSED: (
                _(
                    "We cannot send mail to this address at the moment, so it cannot join "
                    "a list here. Please write to us."
                ),
                "error",
            ),
        }[outcome]
    elif form.action.data == "leave":
        left = prefs.leave_list(db.session, subscriber, list_id, origin=origin)
        message, category = (
            (_("You left %(name)s.", name=name), "success")
            if left
            else (_("You are not on this list."), "info")
        )
    else:
        changed = prefs.set_delivery(
            db.session, subscriber, list_id, form.delivery.data or "", origin=origin
        )
        mode = DELIVERY_LABELS[DeliveryMode(form.delivery.data)]
        message, category = (
            (_("%(name)s: %(mode)s from now on.", name=name, mode=mode), "success")
            if changed
            else (_("Nothing changed."), "info")
        )
    db.session.commit()
    flash(message, category)
    return _back(token)


@bp.post(PREFERENCES_PATH + "<token>/pause")
@with_subscriber
def preferences_pause(subscriber: Subscriber, token: str) -> Any:
    form = PauseForm()
    if form.validate_on_submit():
        try:
            until = prefs.pause_end(form.period.data or "", _today(), form.until.data)
        except prefs.PreferenceError as exc:
            form.until.errors = [*form.until.errors, _pause_message(exc)]
        else:
            prefs.pause(
                db.session,
                subscriber,
                until,
                timezone=settings().timezone,
                origin=_origin(),
            )
            db.session.commit()
            flash(
                _(
                    "Paused: we send you nothing until %(date)s.",
                    date=format_date(until, format="long"),
                ),
                "success",
            )
            return _back(token)
    return _render_page(subscriber, token, pause_form=form, status=400)


def _pause_message(error: prefs.PreferenceError) -> str:
    if error.code == "date-too-far":
        return _("A pause can last at most a year.")
    if error.code == "date-past":
        return _("Choose a date after today.")
    return _("Choose the date on which mail should start again.")


@bp.post(PREFERENCES_PATH + "<token>/resume")
@with_subscriber
def preferences_resume(subscriber: Subscriber, token: str) -> Any:
    if ConfirmForm().validate_on_submit():
        resumed = prefs.resume(db.session, subscriber, origin=_origin())
        db.session.commit()
        flash(
            _("Welcome back: mail starts again now.") if resumed else _("Nothing was paused."),
            "success" if resumed else "info",
        )
    return _back(token)


@bp.get(PREFERENCES_PATH + "<token>/data.json")
@with_subscriber
def preferences_data(subscriber: Subscriber, token: str) -> Any:
    return Response(
        stream_with_context(prefs.export_data(db.session, subscriber)),
        mimetype="application/json",
        headers={"Content-Disposition": 'attachment; filename="my-data.json"'},
    )


@bp.route(PREFERENCES_PATH + "<token>/leave", methods=["GET", "POST"])
@with_subscriber
def preferences_leave(subscriber: Subscriber, token: str) -> Any:
    form = ConfirmForm()
    if form.validate_on_submit():
        changed = prefs.leave_everything(db.session, subscriber, origin=_origin())
        db.session.commit()
        flash(
            _("You left all our lists. We will send nothing more to this address.")
            if changed
            else _("You had already left all our lists."),
            "success",
        )
        return _back(token)
    return render_template(
        "public/preferences_leave.html", subscriber=subscriber, token=token, form=form
    )


@bp.route(PREFERENCES_PATH + "<token>/delete", methods=["GET", "POST"])
@with_subscriber
def preferences_delete(subscriber: Subscriber, token: str) -> Any:
    form = ConfirmForm()
    if form.validate_on_submit():
        language = subscriber.language
        prefs.delete_data(db.session, subscriber, origin=_origin())
        db.session.commit()
        flash(_("Your data is deleted."), "success")
        return redirect(url_for("public.preferences_deleted", lang=language))
    return render_template(
        "public/preferences_delete.html", subscriber=subscriber, token=token, form=form
    )


@bp.get(PREFERENCES_PATH + "deleted")
def preferences_deleted() -> Any:
    return _private(render_template("public/preferences_deleted.html"))
