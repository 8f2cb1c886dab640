"""What every email and page says about the organisation that sends it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Branding:
    name: str
    signoff: str
    postal_address: str = ""
    email: str = ""
    phone: str = ""
    website: str = ""
    about: str = ""
    social: tuple[tuple[str, str], ...] = ()
    color: str = "#1f4e79"

    @property
    def address_lines(self) -> list[str]:
        # Operators write the address on one line with " | " or with real newlines.
        return [
            part.strip()
            for part in self.postal_address.replace("|", "\n").splitlines()
            if part.strip()
        ]
