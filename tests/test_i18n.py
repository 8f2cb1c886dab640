"""Languages of the public pages: the catalogues are complete and compiled, the page
follows the reader (URL choice, the subscriber's language, the browser), Arabic is
right to left, and the admin stays English."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po

from circulars.languages import (
    SUPPORTED_LANGUAGES,
    base_language,
    direction,
    language_name,
    supported,
)
from circulars.models import MailingList
from circulars.subscribers.service import add_to_list

ROOT = Path(__file__).resolve().parents[1]
TRANSLATIONS = ROOT / "translations"
TRANSLATED = sorted(code for code in SUPPORTED_LANGUAGES if code != "en")
SKIP_DIRS = {"instance", "tests", "bench", "migrations", "static", "worker", "docs"}
HTML_TAG = re.compile(r"<html[^>]*>")


# --- the languages module ----------------------------------------------------------


def test_language_codes_are_reduced_to_the_supported_base_language() -> None:
    assert base_language("fr-CA") == "fr"
    assert base_language(" AR_eg ") == "ar"
    assert supported("fr-CA") == "fr"
    assert supported("de") is None
    assert supported("") is None
    assert supported(None) is None


def test_direction_is_rtl_for_right_to_left_scripts_only() -> None:
    assert direction("ar") == "rtl"
    assert direction("ar-EG") == "rtl"
    assert direction("he") == "rtl"
    assert direction("fa") == "rtl"
    assert direction("ur") == "rtl"
    assert direction("fr") == "ltr"
    assert direction("en") == "ltr"
    assert direction(None) == "ltr"


def test_languages_are_named_in_themselves_for_the_picker() -> None:
    assert language_name("fr") == "Français"
    assert language_name("ar") == "العربية"
    assert language_name("xx") == "xx"


# --- the catalogues ----------------------------------------------------------------


def po_path(code: str) -> Path:
    return TRANSLATIONS / code / "LC_MESSAGES" / "messages.po"


def load_po(code: str) -> Catalog:
    with po_path(code).open("rb") as handle:
        return read_po(handle, locale=code, abort_invalid=True)


def translated(catalog: Catalog) -> dict[tuple[str, str | None], Any]:
    """Every real message with a usable translation (fuzzy ones are not used at run time)."""
    return {
        (message.id if isinstance(message.id, str) else message.id[0], message.context): (
            message.string
        )
        for message in catalog
        if message.id
        and message.string
        and not message.fuzzy
        and (isinstance(message.string, str) or all(message.string))
    }


def extracted_messages() -> dict[tuple[str, str | None], str]:
    """The msgids the code and templates use today, with where they are (for the failure)."""
    with (ROOT / "babel.cfg").open() as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    keywords = {**DEFAULT_KEYWORDS, "lazy_gettext": None, "_l": None}

    def wanted(dirname: str) -> bool:
        name = Path(dirname).name
        return not name.startswith((".", "_")) and name not in SKIP_DIRS

    found: dict[tuple[str, str | None], str] = {}
    for filename, lineno, message, _comments, context in extract_from_dir(
        str(ROOT), method_map, options_map, keywords=keywords, directory_filter=wanted
    ):
        msgid = message if isinstance(message, str) else message[0]
        found.setdefault((msgid, context), f"{filename}:{lineno}")
    return found


@pytest.mark.parametrize("code", TRANSLATED)
def test_catalogue_parses_and_its_placeholders_match(code: str) -> None:
    catalog = load_po(code)
    problems = [
        f"{message.id!r}: {'; '.join(str(error) for error in errors)}"
        for message, errors in catalog.check()
        if errors
    ]
    assert not problems, "\n".join(problems)
    # write_mo is what `pybabel compile` runs.
    write_mo(io.BytesIO(), catalog)


@pytest.mark.parametrize("code", TRANSLATED)
def test_compiled_catalogue_in_the_repository_matches_the_po_file(code: str) -> None:
    compiled = io.BytesIO()
    write_mo(compiled, load_po(code))
    compiled.seek(0)
    fresh = translated(read_mo(compiled))
    with (po_path(code).with_suffix(".mo")).open("rb") as handle:
        committed = translated(read_mo(handle))
    stale = sorted(
        msgid
        for msgid in fresh.keys() | committed.keys()
        if fresh.get(msgid) != committed.get(msgid)
    )
    assert not stale, (
        f"translations/{code}/LC_MESSAGES/messages.mo is out of date; run `make translations`. "
        f"Differs for: {stale[:20]}"
    )


@pytest.mark.parametrize("code", TRANSLATED)
def test_every_string_the_pages_use_is_translated(code: str) -> None:
    done = translated(load_po(code))
    missing = {key: where for key, where in extracted_messages().items() if key not in done}
    listing = "\n".join(f"  {where}: {msgid!r}" for (msgid, _ctx), where in sorted(missing.items()))
    assert not missing, (
        f"{len(missing)} string(s) have no {code} translation; run `make translations` and "
        f"translate them in translations/{code}/LC_MESSAGES/messages.po:\n{listing}"
    )


def test_the_template_file_lists_what_the_pages_use() -> None:
    with (TRANSLATIONS / "messages.pot").open("rb") as handle:
        template = {
            (m.id if isinstance(m.id, str) else m.id[0], m.context) for m in read_po(handle) if m.id
        }
    missing = sorted(msgid for msgid, _ctx in extracted_messages().keys() - template)
    assert not missing, f"translations/messages.pot is stale; run `make translations`: {missing}"


# --- choosing the language of a page -----------------------------------------------


def html_tag(response: Any) -> str:
    match = HTML_TAG.search(response.text)
    assert match, response.text[:300]
    return match.group(0)


def preferences_url(app: Any, subscriber_id: int) -> str:
    return "/preferences/" + str(
        app.extensions["circulars.tokens"].make("preferences", subscriber_id)
    )


@pytest.fixture
def subscriber_in(session: Any) -> Any:
    """A confirmed subscriber whose own language is the one given."""

    members = MailingList(slug="members", name="Member organisations")
    session.add(members)
    session.flush()

    def make(language: str, email: str = "layla@example.org") -> Any:
        subscriber, _ = add_to_list(session, members, email, name="Layla", language=language)
        session.commit()
        return subscriber

    return make


def test_browser_language_french_gives_a_french_page(client: Any) -> None:
    page = client.get("/u/not-a-token", headers={"Accept-Language": "fr-CH, fr;q=0.9, en;q=0.5"})
    assert page.status_code == 400
    assert html_tag(page) == '<html lang="fr" dir="ltr">'
    assert "Ce lien ne fonctionne pas" in page.text
    assert "Rien n’a été modifié." in page.text


def test_lang_in_the_url_gives_arabic_right_to_left_and_is_remembered(client: Any) -> None:
    page = client.get("/u/not-a-token?lang=ar", headers={"Accept-Language": "fr"})
    assert html_tag(page) == '<html lang="ar" dir="rtl">'
    assert "هذا الرابط لا يعمل" in page.text
    # The switcher marks Arabic as current and offers the others on the same page.
    assert 'href="/u/not-a-token?lang=fr" lang="fr" hreflang="fr">Français</a>' in page.text
    assert 'hreflang="ar" aria-current="true">العربية</a>' in page.text

    later = client.get("/u/another-bad-token", headers={"Accept-Language": "fr"})
    assert html_tag(later) == '<html lang="ar" dir="rtl">'
    back = client.get("/u/another-bad-token?lang=en")
    assert html_tag(back) == '<html lang="en" dir="ltr">'
    assert "This link does not work" in back.text


def test_unsupported_languages_fall_back_to_english(client: Any, fresh_client: Any) -> None:
    page = client.get("/u/not-a-token", headers={"Accept-Language": "de-DE, de;q=0.9"})
    assert html_tag(page) == '<html lang="en" dir="ltr">'
    assert "This link does not work" in page.text
    odd = fresh_client.get("/u/not-a-token?lang=xx", headers={"Accept-Language": "tlh"})
    assert html_tag(odd) == '<html lang="en" dir="ltr">'
    assert "session=" not in odd.headers.get("Set-Cookie", "")


def test_no_preference_at_all_is_english(client: Any) -> None:
    page = client.get("/u/not-a-token")
    assert html_tag(page) == '<html lang="en" dir="ltr">'


def test_the_subscribers_language_wins_over_the_browsers(
    app: Any, client: Any, subscriber_in: Any
) -> None:
    layla = subscriber_in("ar")
    page = client.get(preferences_url(app, layla.id), headers={"Accept-Language": "fr, en;q=0.5"})
    assert page.status_code == 200
    assert html_tag(page) == '<html lang="ar" dir="rtl">'
    assert "layla@example.org" in page.text


def test_a_subscriber_in_an_untranslated_language_gets_the_browsers(
    app: Any, client: Any, subscriber_in: Any
) -> None:
    pablo = subscriber_in("es", email="pablo@example.org")
    page = client.get(preferences_url(app, pablo.id), headers={"Accept-Language": "fr"})
    assert html_tag(page) == '<html lang="fr" dir="ltr">'


def test_a_choice_made_on_the_page_wins_over_the_subscribers_language(
    app: Any, client: Any, subscriber_in: Any
) -> None:
    layla = subscriber_in("ar")
    page = client.get(preferences_url(app, layla.id) + "?lang=fr")
    assert html_tag(page) == '<html lang="fr" dir="ltr">'


def test_admin_pages_stay_english_whatever_the_browser_or_the_session_says(
    client: Any, auth: Any
) -> None:
    client.get("/u/not-a-token?lang=ar")  # the session now remembers Arabic
    login = client.get("/admin/login", headers={"Accept-Language": "ar"})
    assert html_tag(login) == '<html lang="en" dir="ltr">'
    auth.create_user()
    auth.login()
    page = client.get("/admin/circulars?lang=ar", headers={"Accept-Language": "ar, fr;q=0.8"})
    assert page.status_code == 200
    assert html_tag(page) == '<html lang="en" dir="ltr">'
    assert "Circulars" in page.text
    assert "langs" not in page.text  # no language switcher in the admin
