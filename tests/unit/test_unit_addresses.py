"""Email addresses are checked and normalised the same way everywhere."""

from __future__ import annotations

import pytest

from circulars.subscribers.addresses import InvalidAddress, normalise_email


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ana@example.org", "ana@example.org"),
        ("Ana.Perez@Example.ORG", "ana.perez@example.org"),
        ("  ana@example.org \n", "ana@example.org"),
        ("\tANA@EXAMPLE.ORG\t", "ana@example.org"),
        ("first.last+circulars@sub.example.co.uk", "first.last+circulars@sub.example.co.uk"),
        ("José@Example.org", "josé@example.org"),
    ],
)
def test_normalise_email(raw: str, expected: str) -> None:
    assert normalise_email(raw) == expected


def test_visually_equal_addresses_compare_equal() -> None:
    composed = normalise_email("Jos\u00e9@example.org")
    decomposed = normalise_email("Jose\u0301@example.org")
    assert composed == decomposed == "jos\u00e9@example.org"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "not-an-address",
        "a@b",
        "a b@example.org",
        "@example.org",
        "ana@",
        "ana@@example.org",
        "ana@example..org",
        "ana@exa mple.org",
        "<ana@example.org>",
        "Ana <ana@example.org>",
    ],
)
def test_invalid_addresses_are_refused(raw: str) -> None:
    with pytest.raises(InvalidAddress):
        normalise_email(raw)


def test_invalid_address_is_a_value_error_with_a_reason() -> None:
    with pytest.raises(ValueError, match=r"\S"):
        normalise_email("not-an-address")
