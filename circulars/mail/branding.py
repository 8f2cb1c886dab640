"""What every email and page says about the organisation that sends it."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The WCAG 2 contrast that normal-size text needs against its background (level AA).
READABLE_CONTRAST = 4.5
WHITE = "#ffffff"


@dataclass(frozen=True)
class Branding:
    """The environment's ORG_* settings, or what an admin saved on the branding page.

    `color` is the primary colour (masthead, buttons, page header: white text on
    it); `accent` the one of links and the featured campaign (on white).
    """

    name: str
    signoff: str
    postal_address: str = ""
    email: str = ""
    phone: str = ""
    website: str = ""
    about: str = ""
    social: tuple[tuple[str, str], ...] = ()
    color: str = "#1f4e79"
    accent_color: str = ""  # "" means the primary colour
    fax: str = ""
    mobile: str = ""
    # The logo: an absolute URL for mail, a path on this site for pages, and the size to
    # show it at (fitted into the masthead, never larger than the image).
    logo_url: str = ""
    logo_path: str = ""
    logo_width: int = 0
    logo_height: int = 0
    campaign_title: str = ""
    campaign_text: str = ""
    campaign_url: str = ""

    @property
    def accent(self) -> str:
        return self.accent_color or self.color

    @property
    def has_logo(self) -> bool:
        return bool(self.logo_url and self.logo_width and self.logo_height)

    @property
    def has_campaign(self) -> bool:
        return bool(self.campaign_title)

    @property
    def address_lines(self) -> list[str]:
        # Operators write the address on one line with " | " or with real newlines.
        return [
            part.strip()
            for part in self.postal_address.replace("|", "\n").splitlines()
            if part.strip()
        ]


#: The box a logo is fitted into in the masthead of a 600 px wide email, in CSS pixels.
LOGO_BOX = (240, 80)


def logo_display_size(width: int, height: int) -> tuple[int, int]:
    """Fit the image into LOGO_BOX keeping its proportions; a small image is not enlarged."""
    if width <= 0 or height <= 0:
        return 0, 0
    scale = min(1.0, LOGO_BOX[0] / width, LOGO_BOX[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def is_hex_color(value: str) -> bool:
    return re.fullmatch(r"#[0-9a-fA-F]{6}", value) is not None


def _channel(value: int) -> float:
    c = value / 255
    return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4


def relative_luminance(color: str) -> float:
    """WCAG 2's relative luminance of a #rrggbb colour."""
    red, green, blue = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * _channel(red) + 0.7152 * _channel(green) + 0.0722 * _channel(blue)


def contrast_ratio(first: str, second: str) -> float:
    """From 1 (none) to 21 (black on white), as WCAG 2 defines it."""
    lighter, darker = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)
