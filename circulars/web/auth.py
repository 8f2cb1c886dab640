"""Signing in and out of the admin."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from ..accounts import authenticate
from ..extensions import db
from .forms import ConfirmForm, LoginForm

bp = Blueprint("auth", __name__, url_prefix="/admin")


def _safe_next(target: str | None) -> str:
    # Only same-site paths: an open redirect after login is a phishing tool.
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and not urlsplit(target).netloc
    ):
        return target
    return url_for("admin.circulars")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if current_user.is_authenticated:
        return redirect(url_for("admin.circulars"))
    form = LoginForm()
    if form.validate_on_submit():
        user = authenticate(db.session, form.email.data or "", form.password.data or "")
        if user is None:
            db.session.rollback()
            form.password.errors.append("The email or password is not right.")
        else:
            db.session.commit()
            login_user(user, remember=bool(form.remember.data))
            flash("Signed in.", "success")
            return redirect(_safe_next(request.args.get("next")))
    return render_template("admin/login.html", form=form), 200 if not form.errors else 400


@bp.post("/logout")
@login_required
def logout() -> Any:
    if ConfirmForm().validate_on_submit():
        logout_user()
        flash("Signed out.", "info")
    return redirect(url_for("auth.login"))
