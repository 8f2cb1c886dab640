"""Per-recipient fields filled into the once-rendered text."""

from __future__ import annotations

import pytest

from circulars.mail.personalise import FIELDS, Markers, RecipientFields, fill, unfilled

NASTY = '<b>"O\'Hara & Co"</b>'


def fields(**overrides: str) -> dict[str, str]:
    base = RecipientFields(
        name="Ana Pérez",
        email="ana@example.org",
        list_name="Members",
        unsubscribe_url="https://c.example.org/u/abc?x=1&y=2",
        preferences_url="https://c.example.org/p/abc",
    ).values()
    base.update(overrides)
    return base


def test_markers_stand_in_for_each_field() -> None:
    markers = Markers()
    assert markers.name == "%%CIRCULARS.name%%"
    assert markers.unsubscribe_url == "%%CIRCULARS.unsubscribe_url%%"
    assert {getattr(markers, field) for field in FIELDS} == {
        f"%%CIRCULARS.{field}%%" for field in FIELDS
    }


def test_unknown_marker_is_an_error() -> None:
    with pytest.raises(AttributeError):
        Markers().password  # noqa: B018


def test_fill_with_escape_html_escapes_values() -> None:
    template = '<p>%%CIRCULARS.greeting%%</p><a href="%%CIRCULARS.unsubscribe_url%%">x</a>'
    values = fields(greeting=f"Dear {NASTY},")

    result = fill(template, values, escape=True)

    assert result == (
        "<p>Dear &lt;b&gt;&quot;O&#x27;Hara &amp; Co&quot;&lt;/b&gt;,</p>"
        '<a href="https://c.example.org/u/abc?x=1&amp;y=2">x</a>'
    )
    assert "<b>" not in result


def test_fill_without_escape_keeps_values_verbatim() -> None:
    template = "%%CIRCULARS.greeting%%\nUnsubscribe: %%CIRCULARS.unsubscribe_url%%\n"
    result = fill(template, fields(greeting=f"Dear {NASTY},"), escape=False)
    assert result == (f"Dear {NASTY},\nUnsubscribe: https://c.example.org/u/abc?x=1&y=2\n")


def test_fill_replaces_every_occurrence_of_every_field() -> None:
    template = " ".join(f"%%CIRCULARS.{field}%%" for field in FIELDS * 2)
    values = {field: field.upper() for field in FIELDS}

    result = fill(template, values, escape=False)

    assert result == " ".join(field.upper() for field in FIELDS * 2)
    assert unfilled(result) == []


def test_values_that_look_like_markers_or_backrefs_are_not_reinterpreted() -> None:
    values = fields(name="%%CIRCULARS.email%%", email=r"\1\g<0>@example.org")
    result = fill("%%CIRCULARS.name%% %%CIRCULARS.email%%", values, escape=False)
    assert result == r"%%CIRCULARS.email%% \1\g<0>@example.org"


def test_unknown_markers_are_left_alone() -> None:
    text = "%%CIRCULARS.password%% and %%OTHER.name%%"
    assert fill(text, fields(), escape=True) == text
    assert unfilled(text) == []


def test_unfilled_finds_leftovers_in_order() -> None:
    text = "Hi %%CIRCULARS.name%%, see %%CIRCULARS.preferences_url%% or %%CIRCULARS.name%%"
    assert unfilled(text) == ["name", "preferences_url", "name"]
    assert unfilled(fill(text, fields(), escape=False)) == []


def test_greeting_uses_the_name() -> None:
    assert fields()["greeting"] == "Dear Ana Pérez,"


def test_greeting_without_a_name() -> None:
    values = RecipientFields(
        name="",
        email="ana@example.org",
        list_name="Members",
        unsubscribe_url="https://u",
        preferences_url="https://p",
    ).values()
    assert values["greeting"] == "Dear colleague,"
    assert values["name"] == ""


def test_values_cover_every_field() -> None:
    assert set(fields()) == set(FIELDS)
