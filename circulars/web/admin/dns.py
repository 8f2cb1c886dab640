"""Admin page: the DNS records to publish for our mail (DKIM, SPF, DMARC), and a check of them."""

from __future__ import annotations

from functools import wraps
from typing import Any

from flask import abort, current_app, render_template
from flask_login import current_user, login_required

from ...mail.dkim import DkimKeyError, load_keys
from ...mail.dns_records import (
    UNREACHABLE,
    Resolver,
    check_records,
    dkim_alignment_problem,
    dnspython_resolver,
    expected_records,
)
from ..forms import ConfirmForm
from ..helpers import settings
from . import bp

#: Seconds per lookup: the page must answer even when DNS does not.
LOOKUP_TIMEOUT = 3.0


def admin_required(view: Any) -> Any:
    @wraps(view)
    @login_required
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not current_user.is_admin():
            abort(403)
        return view(*args, **kwargs)

    return wrapped


def _resolver() -> Resolver:
    """Tests (and installs that want another resolver) put one in app.extensions."""
    injected = current_app.extensions.get("circulars.dns_resolver")
    return injected if injected is not None else dnspython_resolver(LOOKUP_TIMEOUT)


def _records() -> tuple[list[Any], str]:
    config = settings()
    error = ""
    try:
        keys = load_keys(config.dkim_keys_path, config.dkim_selectors)
    except DkimKeyError as exc:  # the key file went away after start-up
        keys, error = [], str(exc)
    records = expected_records(
        mail_domain=config.mail_domain,
        dkim_domain=config.dkim_signing_domain,
        dkim_keys=keys,
        relay_host=None if config.capture_mail else config.smtp_relay.host,
        report_address=config.org_email or config.mail_from,
    )
    return records, error


@bp.route("/dns", methods=["GET", "POST"])
@admin_required
def dns() -> Any:
    records, key_error = _records()
    form = ConfirmForm()
    checks = None
    if form.validate_on_submit():
        checks = check_records(records, _resolver())
    return render_template(
        "admin/dns/index.html",
        records=records,
        checks=checks,
        unreachable=bool(checks) and all(c.status == UNREACHABLE for c in checks),
        key_error=key_error,
        alignment=dkim_alignment_problem(settings().mail_domain, settings().dkim_signing_domain)
        if settings().dkim_selectors
        else "",
        form=form,
        config=settings(),
    )
