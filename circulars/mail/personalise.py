"""Per-recipient fields, put into a send's rendered text by plain substitution.

The circular is rendered once with a marker where each field goes; filling a
marker in is one regular-expression pass over the text, which is all the
per-recipient work rendering needs.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .wording import wording

FIELDS = ("greeting", "name", "email", "list_name", "unsubscribe_url", "preferences_url")
_MARKER = "%%CIRCULARS.{}%%"
_PATTERN = re.compile(r"%%CIRCULARS\.(" + "|".join(FIELDS) + r")%%")


class Markers:
    """Stands in for the recipient in templates: `{{ recipient.name }}` yields its marker."""

    def __getattr__(self, field: str) -> str:
        if field not in FIELDS:
            raise AttributeError(field)
        return _MARKER.format(field)


@dataclass(frozen=True)
class RecipientFields:
    name: str
    email: str
    list_name: str
    unsubscribe_url: str
    preferences_url: str
    # The language version the recipient gets: the greeting is in it.
    language: str = "en"

    def values(self) -> dict[str, str]:
        greeting = wording(self.language).greeting(self.name)
        return {
            "greeting": greeting,
            "name": self.name,
            "email": self.email,
            "list_name": self.list_name,
            "unsubscribe_url": self.unsubscribe_url,
            "preferences_url": self.preferences_url,
        }


def fill(template: str, values: Mapping[str, str], *, escape: bool) -> str:
    if escape:
        values = {key: html.escape(value, quote=True) for key, value in values.items()}
    return _PATTERN.sub(lambda match: values[match.group(1)], template)


def split_at_markers(template: str) -> list[str]:
    """[text, field, text, field, …, text]: the template around its markers."""
    return _PATTERN.split(template)


def unfilled(text: str) -> list[str]:
    """Markers left in a text; a delivered message must have none."""
    return _PATTERN.findall(text)
