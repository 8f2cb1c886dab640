"""The application factory proper: settings, extensions, Celery, blueprints."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import SimpleNamespace

from flask import Flask

from .config import PROJECT_ROOT, load_settings
from .extensions import csrf, db, limiter, login_manager, migrate
from .tasks import celery_init_app
from .wiring import confirm_token_signer, file_store, send_context, token_signer


def build_app(environ: Mapping[str, str] | None = None) -> Flask:
    settings = load_settings(environ)
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    app = Flask(
        "circulars",
        instance_path=str(settings.instance_path),
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_upload_size + 1024 * 1024,  # the form around the file
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.base_url.startswith("https://"),
        REMEMBER_COOKIE_SECURE=settings.base_url.startswith("https://"),
        WTF_CSRF_TIME_LIMIT=None,  # tied to the session instead; long drafts must not fail on save
        PREFERRED_URL_SCHEME="https" if settings.base_url.startswith("https://") else "http",
        RATELIMIT_ENABLED=settings.ratelimit_enabled,
        RATELIMIT_STORAGE_URI=settings.ratelimit_storage_url,
        RATELIMIT_HEADERS_ENABLED=True,  # Retry-After on a 429
    )
    if settings.trusted_proxies:
        # Only then is X-Forwarded-For believed: the address consent records and limits use.
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies
        )
    app.extensions["circulars.settings"] = settings
    app.extensions["circulars.send_context"] = send_context(settings)
    app.extensions["circulars.files"] = file_store(settings)
    app.extensions["circulars.tokens"] = token_signer(settings)
    app.extensions["circulars.confirm_tokens"] = confirm_token_signer(settings)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    db.bind(settings.database_url)
    app.teardown_appcontext(lambda _exc: db.session.remove())
    # Flask-Migrate wants an object with the metadata; ours is plain SQLAlchemy.
    from .models import Base

    migrate.init_app(
        app,
        SimpleNamespace(metadata=Base.metadata, engine=db.engine),
        directory=str(PROJECT_ROOT / "migrations"),
        render_as_batch=True,
        compare_type=True,
    )
    csrf.init_app(app)
    login_manager.init_app(app)
    limiter.init_app(app)
    from .web.i18n import init_i18n

    init_i18n(app)
    celery_init_app(app, settings)

    from .web import register_web

    register_web(app)
    return app
