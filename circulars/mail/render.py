"""Render a circular once per send: Jinja2, then premailer, plus the text alternative."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markdown_it import MarkdownIt
from premailer import Premailer

from ..config import PROJECT_ROOT
from ..storage import format_size
from .branding import Branding
from .personalise import Markers
from .wording import long_date, wording

EMAIL_TEMPLATES = PROJECT_ROOT / "templates" / "email"
RTL_LANGUAGES = frozenset({"ar", "fa", "he", "ur", "ps", "yi", "dv", "ckb"})
#: Gmail clips an HTML part beyond about 102 KB; we warn well before that.
GMAIL_CLIP_BYTES = 100 * 1024


class RenderError(ValueError):
    pass


@dataclass(frozen=True)
class AttachmentInfo:
    filename: str
    size: int


@dataclass(frozen=True)
class RenderedCircular:
    subject: str
    html: str
    text: str


@lru_cache(maxsize=4)
def email_environment(root: Path = EMAIL_TEMPLATES) -> Environment:
    env = Environment(
        loader=FileSystemLoader(root),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["filesize"] = format_size
    # Any mail template can say its fixed phrases in its language: {{ wording(language).… }}.
    env.globals["wording"] = wording
    return env


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # Raw HTML in the body is shown as text, not interpreted: a draft cannot inject markup.
    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(
        ["table", "strikethrough"]
    )


def markdown_to_html(source: str) -> str:
    return _markdown().render(source)


def subject_for(number: int | None, title: str, language: str = "en") -> str:
    """The subject (Circular No. 27: Title), the label in the version's language."""
    check_single_line(title, "title")
    return wording(language).subject(number, title)


def check_single_line(value: str, what: str) -> None:
    if re.search(r"[\r\n\x00\x0b\x0c\x85\u2028\u2029]", value):
        raise RenderError(f"The {what} must be a single line (it contains a line break).")


def text_direction(language: str) -> str:
    return "rtl" if language.split("-")[0].lower() in RTL_LANGUAGES else "ltr"


def _inline_css(html: str, base_url: str) -> str:
    logging.getLogger("CSSUTILS").setLevel(logging.CRITICAL)
    return Premailer(
        html,
        base_url=None,
        disable_validation=True,
        remove_classes=False,
        keep_style_tags=False,
        strip_important=False,
        cssutils_logging_level=logging.CRITICAL,
        allow_network=False,
    ).transform()


def render_circular(
    *,
    number: int | None,
    title: str,
    body_markdown: str,
    attachments: Sequence[AttachmentInfo],
    branding: Branding,
    sent_on: date,
    language: str = "en",
    web_url: str | None = None,
    base_url: str = "",
) -> RenderedCircular:
    """Everything that is the same for every recipient, with markers for the rest."""
    subject = subject_for(number, title, language)
    env = email_environment()
    context = {
        "subject": subject,
        "number": number,
        "title": title,
        "body_html": markdown_to_html(body_markdown),
        "body_text": body_markdown.strip(),
        "attachments": attachments,
        "org": branding,
        "sent_on": sent_on,
        "sent_on_text": long_date(sent_on, language),
        "words": wording(language),
        "language": language,
        "direction": text_direction(language),
        "web_url": web_url,
        "recipient": Markers(),
    }
    html = _inline_css(env.get_template("circular/body.html").render(context), base_url)
    text = env.get_template("circular/body.txt").render(context)
    return RenderedCircular(subject=subject, html=_crlf(html), text=_crlf(text) + "\r\n")


def _crlf(text: str) -> str:
    # SMTP wants CRLF; normalising here means per-recipient encoding never rescans for it.
    return re.sub(r"\r\n|\r|\n", "\r\n", text)
