"""ISO 3166-1 countries for the endorsement form, named in the reader's language.

The list and its translations come from pycountry (the Debian iso-codes data),
so nothing is copied by hand and names follow the standard as it changes.
"""

from __future__ import annotations

import gettext
from functools import cache

import pycountry


def _english_name(country: object) -> str:
    # "Bolivia" reads better in a list than "Bolivia, Plurinational State of".
    return str(getattr(country, "common_name", None) or country.name)  # type: ignore[attr-defined]


@cache
def _translation(language: str) -> gettext.NullTranslations:
    return gettext.translation(
        "iso3166-1", pycountry.LOCALES_DIR, languages=[language], fallback=True
    )


@cache
def _names(language: str) -> dict[str, str]:
    translate = _translation(language).gettext
    return {country.alpha_2: translate(_english_name(country)) for country in pycountry.countries}


def is_country(code: str) -> bool:
    return code in _names("en")


def country_name(code: str, language: str = "en") -> str:
    """The country's name in `language` (English when there is no translation)."""
    return _names(language).get(code, code)


def country_choices(language: str = "en") -> list[tuple[str, str]]:
    """(code, name) for every country, sorted by name as the reader sees it."""
    names = _names(language)
    return sorted(names.items(), key=lambda item: item[1].casefold())
