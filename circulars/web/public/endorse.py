"""Endorsing a sign-on statement: the public form, the confirmation link, the archive's list.

Like the subscribe form, every accepted POST gets the same "check your inbox"
answer, whether the organisation or the address was known, a duplicate, in its
mail limit, or a bot's (honeypot). Abuse is held back by a per-IP limit (the
SUBSCRIBE_RATE_LIMIT budget, counted apart from the subscribe form's), the
honeypot, at most ENDORSE_MAILS_PER_ADDRESS confirmation mails to one address
an hour, and the hourly cap on confirmation mails shared with subscriptions.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import abort, redirect, render_template, request, url_for
from flask_babel import format_datetime
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from limits import RateLimitItemPerHour
from wtforms import EmailField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from ...archive import published_circular, slugify
from ...endorsements.countries import country_choices, country_name
from ...endorsements.service import (
    COMMENT_MAX,
    CONTACT_MAX,
    ORGANISATION_MAX,
    EndorsementRefused,
    Endorser,
    clean_submission,
    confirm,
    endorsed_by,
    is_open,
    submit,
)
from ...endorsements.tokens import EndorsementTokens
from ...extensions import csrf, db, limiter
from ...mail.endorsement import CONFIRM_PATH
from ...models import Circular, Endorsement
from ...subscribers.tokens import TokenError
from ...tasks import SEND_ENDORSEMENT_CONFIRMATION, enqueue
from ..forms import single_line
from ..helpers import settings
from ..i18n import current_language
from . import bp

log = logging.getLogger(__name__)

HONEYPOT = "website"
LIMIT_SCOPE = "endorse"
#: Confirmation mails to one address in an hour, whatever organisations it is given for.
ENDORSE_MAILS_PER_ADDRESS = 3


#: The domain's refusals (endorsements.service has no gettext), as the catalogue has them.
REFUSALS = {
    "Enter the name of your organisation.": _l("Enter the name of your organisation."),
    "Choose a country from the list.": _l("Choose a country from the list."),
    "Enter the name of a contact person.": _l("Enter the name of a contact person."),
    "This is not a valid email address.": _l("This is not a valid email address."),
}


class EndorseForm(FlaskForm):
    organisation = StringField(
        _l("Organisation"),
        validators=[
            DataRequired(message=_l("Enter the name of your organisation.")),
            Length(max=ORGANISATION_MAX),
            single_line,
        ],
    )
    country = SelectField(_l("Country"), validate_choice=False)
    contact_name = StringField(
        _l("Contact name"),
        validators=[
            DataRequired(message=_l("Enter the name of a contact person.")),
            Length(max=CONTACT_MAX),
            single_line,
        ],
    )
    email = EmailField(
        _l("Email address"),
        validators=[DataRequired(message=_l("Enter your email address.")), Length(max=320)],
    )
    comment = TextAreaField(_l("Comment (optional)"), validators=[Length(max=COMMENT_MAX)])


def tokens() -> EndorsementTokens:
    current = settings()
    return EndorsementTokens(current.secret_key, timedelta(days=current.confirm_token_max_age_days))


def _page_url(circular: Circular) -> str:
    return url_for("public.circular_page", number=circular.number, slug=slugify(circular.title))


def _endorse_url(circular: Circular) -> str:
    return url_for("public.endorse", number=circular.number, slug=slugify(circular.title))


def _closes_text(circular: Circular) -> str:
    """The closing time in the organisation's time zone, in the reader's language."""
    if circular.endorsement_closes_at is None:
        return ""
    zone = settings().timezone
    local = circular.endorsement_closes_at.astimezone(ZoneInfo(zone))
    return f"{format_datetime(local, 'd MMMM y, HH:mm', rebase=False)} ({zone})"


@dataclass(frozen=True)
class EndorsementPanel:
    """What the archive page shows of a statement: the form's link, the approved list."""

    offered: bool  # ever opened for endorsement
    open: bool
    closes: str
    endorse_url: str
    endorsers: list[Endorser]


@bp.app_template_global("endorsement_panel")
def endorsement_panel(circular: Circular) -> EndorsementPanel:
    endorsers = endorsed_by(db.session, circular.id, current_language())
    return EndorsementPanel(
        offered=circular.endorsement_opened_at is not None,
        open=is_open(circular),
        closes=_closes_text(circular),
        endorse_url=_endorse_url(circular),
        endorsers=endorsers,
    )


def _client_ip() -> str | None:
    return request.remote_addr


def _endorse_limit() -> str:
    return settings().subscribe_rate_limit


def _may_mail(address: str) -> bool:
    """The per-address limit, then the global hourly cap, in the limiter's shared storage."""
    if not limiter.enabled:
        return True
    digest = hashlib.sha256(address.encode()).hexdigest()[:32]
    per_address = RateLimitItemPerHour(ENDORSE_MAILS_PER_ADDRESS)
    if not limiter.limiter.hit(per_address, "circulars", "endorse-mail", digest):
        return False
    cap = RateLimitItemPerHour(settings().confirmation_mails_per_hour)
    return bool(limiter.limiter.hit(cap, "circulars", "confirmation-mails"))


def _form(circular: Circular, form: EndorseForm, status: int = 200) -> Any:
    return (
        render_template(
            "public/endorse.html",
            circular=circular,
            form=form,
            honeypot=HONEYPOT,
            page_url=_page_url(circular),
            closes=_closes_text(circular),
        ),
        status,
    )


def _closed(circular: Circular, status: int) -> Any:
    return (
        render_template(
            "public/endorse_closed.html",
            circular=circular,
            page_url=_page_url(circular),
            closes=_closes_text(circular),
        ),
        status,
    )


def _sent(circular: Circular) -> Any:
    return render_template(
        "public/endorse_sent.html", circular=circular, page_url=_page_url(circular)
    )


@bp.route("/circulars/<int:number>-<slug>/endorse", methods=["GET", "POST"])
@limiter.shared_limit(_endorse_limit, scope=LIMIT_SCOPE, methods=["POST"])
def endorse(number: int, slug: str) -> Any:
    circular = published_circular(db.session, number)
    if circular is None or circular.endorsement_opened_at is None:
        abort(404)  # not in the archive, or never a sign-on statement
    if slug != slugify(circular.title):
        return redirect(_endorse_url(circular), code=301 if request.method == "GET" else 308)
    form = EndorseForm()
    form.country.choices = [("", _("Choose a country"))] + country_choices(current_language())
    if not is_open(circular):
        # Closed: the page says so, and a submission (an old tab, a bot) is refused.
        return _closed(circular, 200 if request.method == "GET" else 409)
    if request.method == "GET":
        return _form(circular, form)
    if request.form.get(HONEYPOT, "").strip():
        log.info("endorse: honeypot filled in from %s; nothing stored", _client_ip())
        return _sent(circular)
    if not form.validate():
        return _form(circular, form, 400)
    try:
        submission = clean_submission(
            organisation=form.organisation.data or "",
            country=form.country.data or "",
            contact_name=form.contact_name.data or "",
            email=form.email.data or "",
            comment=form.comment.data or "",
        )
        outcome = submit(db.session, circular, submission, ip=_client_ip())
    except EndorsementRefused as exc:
        db.session.rollback()
        field = getattr(form, exc.field) if exc.field else None
        if field is None:
            return _closed(circular, 409)
        field.errors = [REFUSALS.get(str(exc), str(exc))]
        return _form(circular, form, 400)
    db.session.commit()
    if _may_mail(submission.email):
        enqueue(SEND_ENDORSEMENT_CONFIRMATION, outcome.endorsement_id, asdict(submission))
    else:
        log.info("endorsement %s: no confirmation mail (limit reached)", outcome.endorsement_id)
    return _sent(circular)


# --- the confirmation link ----------------------------------------------------------------


def _link_error(error: TokenError) -> Any:
    return (
        render_template("public/link_error.html", expired=error.expired, message=str(error)),
        400,
    )


def _nothing_to_confirm() -> Any:
    return (
        render_template(
            "public/link_error.html",
            expired=False,
            message=_("There is nothing to confirm: this endorsement is no longer on file."),
        ),
        404,
    )


@bp.get(CONFIRM_PATH + "<token>")
def endorse_confirm_page(token: str) -> Any:
    """GET changes nothing (mail scanners open links); the button on the page confirms."""
    try:
        data = tokens().read(token)
    except TokenError as exc:
        return _link_error(exc)
    row = db.session.get(Endorsement, data.endorsement_id)
    if row is None:
        return _nothing_to_confirm()
    circular = db.session.get(Circular, row.circular_id)
    return render_template(
        "public/endorse_confirm.html",
        circular=circular,
        submission=data.submission,
        country=country_name(data.submission.country, current_language()),
    )


@bp.post(CONFIRM_PATH + "<token>")
@csrf.exempt
def endorse_confirm_post(token: str) -> Any:
    """The signed token is the authorisation (only the mailbox has it), so no CSRF token."""
    try:
        data = tokens().read(token)
    except TokenError as exc:
        return _link_error(exc)
    outcome = confirm(db.session, data)
    db.session.commit()
    if outcome.endorsement is None:
        return _nothing_to_confirm()
    if outcome.superseded:
        return (
            render_template(
                "public/link_error.html",
                expired=False,
                message=_(
                    "This link was replaced by a newer one, sent to the address given last "
                    "for this endorsement: use that one. Nothing was changed."
                ),
            ),
            409,
        )
    circular = db.session.get(Circular, outcome.endorsement.circular_id)
    return render_template(
        "public/endorse_confirmed.html",
        circular=circular,
        outcome=outcome,
        page_url=_page_url(circular) if circular is not None and circular.number else None,
    )
