"""Languages of the public pages: Flask-Babel wiring and the choice of locale.

For other helpers (how to use it in a view):

* Templates: ``{{ _("Your subscriptions") }}``, with placeholders
  ``{{ _("Leave %(name)s?", name=mailing_list.name) }}`` (values are escaped;
  a literal percent sign is written ``%%``), plurals ``{{ ngettext("%(num)d list",
  "%(num)d lists", n) }}``. Views: ``from flask_babel import gettext as _`` for
  flash messages; ``lazy_gettext as _l`` for texts defined at import time
  (form labels, choices). Then run ``make translations`` and translate the new
  entries in ``translations/{fr,ar}/LC_MESSAGES/messages.po`` (tests/test_i18n.py
  fails and lists every string that is missing a translation).
* A view that knows who the subscriber is (preference centre, confirmation,
  unsubscribe) calls ``use_subscriber_language(subscriber)`` (or pass the
  language code) BEFORE rendering or flashing, so the page follows the
  subscriber's choice rather than the browser's. When the subscriber saves a
  new language in the preference centre, call ``choose_language(code)`` as well,
  so the next pages (and the flash message) are already in it.
* In templates: ``current_language()`` ("en", "fr", "ar"), ``text_direction()``
  ("ltr"/"rtl"), ``language_url(code)`` (this page in another language) and
  ``public_languages`` (code -> own name) are available.

The order of precedence for a public page: ``?lang=xx`` in the URL (remembered in
the session cookie, so a choice made with the switcher survives the next form
post and redirect), else the choice remembered in the session, else the
subscriber's own language when the view has set it, else the browser's
Accept-Language, else English. Admin and sign-in pages are not translated in
this version and are always English, whatever the browser asks for.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, g, has_request_context, request, session, url_for
from flask_babel import Babel, get_locale, refresh

from ..config import PROJECT_ROOT
from ..languages import DEFAULT_LANGUAGE, SUPPORTED_LANGUAGES, direction, supported

TRANSLATIONS_DIR = PROJECT_ROOT / "translations"
# Blueprints whose pages follow the reader's language; everything else is English.
PUBLIC_BLUEPRINTS = frozenset({"public"})
SESSION_KEY = "lang"

babel = Babel()


def N_(text: str) -> str:  # noqa: N802  (the name gettext tools know)
    """Mark a text for extraction without translating it now; it is translated where shown."""
    return text


# English texts raised by the domain packages (which cannot import Flask-Babel)
# and shown on public pages through ``{{ _(message) }}``: marked here so that
# ``make translations`` extracts them.
DOMAIN_TEXTS = (
    N_("This link has expired."),
    N_("This link is not valid."),
)


def is_public_request() -> bool:
    """True on the subscriber-facing pages (the only ones translated)."""
    return has_request_context() and request.blueprint in PUBLIC_BLUEPRINTS


def use_subscriber_language(subscriber_or_code: Any) -> None:
    """Let this request's page follow the subscriber's language (a Subscriber or a code).

    An explicit choice made with the language switcher still wins: the person at
    the screen asked for it.
    """
    code = getattr(subscriber_or_code, "language", subscriber_or_code)
    g.subscriber_language = supported(code if isinstance(code, str) else None)
    refresh()


def choose_language(code: str | None) -> None:
    """Remember an explicit choice (switcher, or a language saved in the preference centre)."""
    chosen = supported(code)
    if chosen is None:
        return
    session[SESSION_KEY] = chosen
    refresh()


def select_locale() -> str:
    """Flask-Babel's locale selector; see the module docstring for the order."""
    if not is_public_request():
        return DEFAULT_LANGUAGE
    candidates = (
        request.args.get("lang"),
        session.get(SESSION_KEY),
        g.get("subscriber_language"),
    )
    for candidate in candidates:
        code = supported(candidate)
        if code is not None:
            return code
    best = request.accept_languages.best_match(list(SUPPORTED_LANGUAGES))
    return supported(best) or DEFAULT_LANGUAGE


def current_language() -> str:
    """The language this request is rendered in, as a short code."""
    locale = get_locale()
    return locale.language if locale is not None else DEFAULT_LANGUAGE


def text_direction() -> str:
    return direction(current_language())


def language_url(code: str) -> str:
    """This page again in another language (a plain link: works without JavaScript)."""
    values: dict[str, Any] = {**request.args.to_dict(), "lang": code}
    if request.endpoint and request.url_rule is not None:
        return url_for(request.endpoint, **{**(request.view_args or {}), **values})
    return request.path + "?lang=" + code


def _remember_explicit_choice() -> None:
    if not is_public_request():
        return
    code = supported(request.args.get("lang"))
    if code is not None and session.get(SESSION_KEY) != code:
        session[SESSION_KEY] = code


def init_i18n(app: Flask) -> None:
    """Set up Flask-Babel (``_``, ``ngettext`` in templates) and the language helpers."""
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LANGUAGE)
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(TRANSLATIONS_DIR))
    babel.init_app(app, locale_selector=select_locale)
    app.before_request(_remember_explicit_choice)

    @app.context_processor
    def inject_languages() -> dict[str, Any]:
        return {
            "current_language": current_language,
            "text_direction": text_direction,
            "language_url": language_url,
            "public_languages": SUPPORTED_LANGUAGES,
            "is_public_request": is_public_request,
        }
