"""A list's public face (description, public flag, welcome message) and the embeddable form."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, url_for
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, SelectField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length

from ...digests.schedule import HOURS, MONTHDAYS, WEEKDAYS
from ...extensions import db
from ...models import MailingList
from ..helpers import sender_required, settings
from . import _list_or_404, bp

_HOURS = [SelectChoice(h, f"{h:02d}:00") for h in HOURS]

#: Enough for a few paragraphs of welcome; a welcome mail is not a circular.
WELCOME_MAX = 20_000


class ListSettingsForm(FlaskForm):
    description = TextAreaField(
        "Description (shown on the subscribe page)", validators=[Length(max=2000)]
    )
    public = BooleanField("Public: people can subscribe themselves")
    welcome_message = TextAreaField(
        "Welcome message (Markdown)",
        validators=[Length(max=WELCOME_MAX)],
    )
    # Digest times, in the organisation's time zone; SelectField refuses anything not offered.
    digest_weekday = SelectField(
        "Weekly digest: day",
        coerce=int,
        choices=[SelectChoice(n, day) for n, day in enumerate(WEEKDAYS)],
    )
    digest_weekly_hour = SelectField("Weekly digest: hour", coerce=int, choices=_HOURS)
    digest_monthday = SelectField(
        "Monthly digest: day of the month",
        coerce=int,
        choices=[SelectChoice(d, str(d)) for d in MONTHDAYS],
    )
    digest_monthly_hour = SelectField("Monthly digest: hour", coerce=int, choices=_HOURS)


@bp.route("/lists/<slug>/settings", methods=["GET", "POST"])
@sender_required
def list_settings(slug: str) -> Any:
    mailing_list = _list_or_404(slug)
    form = ListSettingsForm(obj=mailing_list)
    if form.validate_on_submit():
        mailing_list.description = (form.description.data or "").strip()
        mailing_list.public = bool(form.public.data)
        mailing_list.welcome_message = (form.welcome_message.data or "").strip()
        mailing_list.digest_weekday = form.digest_weekday.data
        mailing_list.digest_weekly_hour = form.digest_weekly_hour.data
        mailing_list.digest_monthday = form.digest_monthday.data
        mailing_list.digest_monthly_hour = form.digest_monthly_hour.data
        db.session.commit()
        flash(f"Settings of {mailing_list.name} saved.", "success")
        return redirect(url_for("admin.show_list", slug=slug))
    return (
        render_template("admin/lists/settings.html", mailing_list=mailing_list, form=form),
        400 if form.errors else 200,
    )


@bp.get("/subscribe-form")
def subscribe_form() -> Any:
    """The HTML to paste into another website, shown escaped so it can be copied as is."""
    lists = list(
        db.session.scalars(
            select(MailingList).where(MailingList.public.is_(True)).order_by(MailingList.name)
        )
    )
    current = settings()
    snippet = render_template(
        "admin/subscribe_form_snippet.html",
        lists=lists,
        action=f"{current.base_url}/subscribe/embed",
        consent_text=current.subscribe_consent_text,
        allowed_origins=current.embed_allowed_origins,
    ).strip()
    return render_template(
        "admin/subscribe_form.html",
        lists=lists,
        snippet=snippet,
        page_url=f"{current.base_url}/subscribe",
        allowed_origins=current.embed_allowed_origins,
    )
