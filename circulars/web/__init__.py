"""The web layer: admin for the secretariat, public pages for subscribers."""

from __future__ import annotations

from flask import Flask


def register_web(app: Flask) -> None:
    from . import admin, auth, public
    from .helpers import register_helpers

    register_helpers(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(public.bp)
