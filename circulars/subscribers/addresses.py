"""Checking and normalising email addresses the same way everywhere."""

from __future__ import annotations

import unicodedata

from email_validator import EmailNotValidError, validate_email


class InvalidAddress(ValueError):
    pass


def normalise_email(raw: str) -> str:
    """Validate syntax (no DNS: imports must not depend on the network) and normalise.

    The domain is lower-cased and IDNA-normalised by email-validator; the local
    part is lower-cased too, since a secretariat never wants Ana@ and ana@ as
    two subscribers, and NFC-normalised so visually equal addresses compare equal.
    """
    candidate = unicodedata.normalize("NFC", raw.strip())
    if not candidate:
        raise InvalidAddress("the address is empty")
    try:
        result = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from None
    return f"{result.local_part.lower()}@{result.domain.lower()}"
