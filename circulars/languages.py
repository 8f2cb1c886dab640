"""The languages the public pages speak, and which way each one is written.

Plain data with no Flask import, so the domain packages, the web layer and the
worker agree on one list. Circulars themselves may be written in more languages
(the six UN languages); this list is only what the subscriber-facing pages and
mails are translated into. Adding a language means adding it here and a
catalogue under ``translations/`` (``make translations``).
"""

from __future__ import annotations

from collections.abc import Iterable

DEFAULT_LANGUAGE = "en"

# Code -> the language's name in itself, as a language picker shows it: a reader
# looks for their own language by the name they know it by.
SUPPORTED_LANGUAGES: dict[str, str] = {
    "en": "English",
    "fr": "Français",
    "ar": "العربية",
}

# Scripts written right to left. Wider than SUPPORTED_LANGUAGES on purpose: a
# subscriber's language may be one the pages are not translated into, and a
# page that quotes text in it still needs the right direction.
RTL_LANGUAGES = frozenset({"ar", "fa", "he", "ur", "ps", "yi", "dv", "ckb"})


def base_language(code: str | None) -> str:
    """``"fr-CA"``, ``"fr_CA"``, ``" FR "`` -> ``"fr"``; empty or None -> ``""``."""
    if not code:
        return ""
    return code.strip().replace("_", "-").split("-")[0].lower()


def supported(code: str | None) -> str | None:
    """The supported language a code stands for, or None when the pages do not speak it."""
    base = base_language(code)
    return base if base in SUPPORTED_LANGUAGES else None


def direction(code: str | None) -> str:
    """``"rtl"`` or ``"ltr"``, for the ``dir`` attribute of a page or a mail."""
    return "rtl" if base_language(code) in RTL_LANGUAGES else "ltr"


def language_name(code: str | None) -> str:
    """The language's own name for a picker, or the code itself when it is not supported."""
    base = base_language(code)
    return SUPPORTED_LANGUAGES.get(base, code or "")


def choices(codes: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """``(code, own name)`` pairs for a select field, in the order of SUPPORTED_LANGUAGES."""
    wanted = set(codes) if codes is not None else None
    return [
        (code, name)
        for code, name in SUPPORTED_LANGUAGES.items()
        if wanted is None or code in wanted
    ]


# The languages a circular may have a version in: the six UN languages first, then
# others the network writes in. Code -> the language's own name (for pickers and the
# archive's "this circular in" links). Wider than SUPPORTED_LANGUAGES: a circular
# can be read in Chinese although the pages around it are not translated.
CIRCULAR_LANGUAGES: dict[str, str] = {
    "en": "English",
    "ar": "العربية",
    "zh": "中文",
    "fr": "Français",
    "es": "Español",
    "ru": "Русский",
    "pt": "Português",
    "de": "Deutsch",
    "it": "Italiano",
    "sw": "Kiswahili",
    "hi": "हिन्दी",
    "bn": "বাংলা",
    "id": "Bahasa Indonesia",
    "tr": "Türkçe",
    "fa": "فارسی",
    "ur": "اردو",
}


def circular_language(code: str | None) -> str | None:
    """The version language a code names (``" AR "`` -> ``"ar"``), or None if unknown.

    Only exact codes from CIRCULAR_LANGUAGES: a version is written in a language,
    not a region, so ``fr-CA`` is not a version code (its readers get ``fr``).
    """
    if not code:
        return None
    cleaned = code.strip().lower()
    return cleaned if cleaned in CIRCULAR_LANGUAGES else None


def circular_language_name(code: str) -> str:
    """A version's language by its own name, or the code when it has none here."""
    return CIRCULAR_LANGUAGES.get(code, code)
