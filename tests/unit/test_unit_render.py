"""Rendering a circular once per language: subject, HTML with inlined CSS, text alternative."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from html.parser import HTMLParser

import pytest

from circulars.mail.branding import Branding
from circulars.mail.render import AttachmentInfo, RenderedCircular, RenderError, render_circular

BRANDING = Branding(
    name="Migrant Forum Network",
    signoff="The Secretariat",
    postal_address="Rue de Varembé 1 | 1202 Geneva | Switzerland",
    email="secretariat@network.example.org",
    website="https://network.example.org",
    about="A network of organisations working for the rights of migrants.",
    social=(("Mastodon", "https://social.example/@network"),),
    color="#123abc",
)
ATTACHMENTS = [
    AttachmentInfo("Déclaration – 2017.pdf", 12345),
    AttachmentInfo("بيان.pdf", 2 * 1024 * 1024),
]
BODY = """The **Global Compact** negotiations enter their last round.

## What happens next

- Member States meet in *New York*
- Civil society [statement](https://network.example.org/statement)

> We call on governments to uphold human rights.
"""


def render(
    *,
    number: int | None = 27,
    title: str = "Global Compact, last round of negotiations",
    body: str = BODY,
    attachments: Sequence[AttachmentInfo] = ATTACHMENTS,
    language: str = "en",
    web_url: str | None = "https://network.example.org/archive/27",
) -> RenderedCircular:
    return render_circular(
        number=number,
        title=title,
        body_markdown=body,
        attachments=attachments,
        branding=BRANDING,
        sent_on=date(2017, 9, 10),
        language=language,
        web_url=web_url,
    )


class Elements(HTMLParser):
    """Every start tag with its attributes, in document order."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.texts: list[tuple[str, str]] = []  # (most recent start tag, text)
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))

    def handle_data(self, data: str) -> None:
        self.texts.append((self.tags[-1][0] if self.tags else "", data))

    def text_of(self, tag: str) -> str:
        return "".join(data for name, data in self.texts if name == tag).strip()

    def find(self, tag: str, css_class: str) -> dict[str, str]:
        for name, attrs in self.tags:
            if name == tag and css_class in attrs.get("class", "").split():
                return attrs
        raise AssertionError(f"no <{tag} class={css_class}>")

    def names(self) -> list[str]:
        return [name for name, _ in self.tags]


@pytest.fixture(scope="module")
def circular() -> RenderedCircular:
    return render()


# --- subject --------------------------------------------------------------------------------


def test_subject_names_the_number_and_title(circular: RenderedCircular) -> None:
    assert circular.subject == "Circular No. 27: Global Compact, last round of negotiations"


def test_subject_of_an_unnumbered_draft_is_the_title() -> None:
    assert render(number=None).subject == "Global Compact, last round of negotiations"


@pytest.mark.parametrize("breaker", ["\n", "\r", "\r\n", "\u2028", "\x0b"])
def test_title_with_a_line_break_is_refused(breaker: str) -> None:
    with pytest.raises(RenderError, match="single line"):
        render(title=f"Global Compact{breaker}Bcc: everyone@example.org")


# --- HTML -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "direction"),
    [("en", "ltr"), ("fr", "ltr"), ("zh", "ltr"), ("ar", "rtl"), ("ar-EG", "rtl"), ("fa", "rtl")],
)
def test_html_declares_language_and_direction(language: str, direction: str) -> None:
    html_tag = Elements(render(language=language).html).tags[0]
    assert html_tag[0] == "html"
    assert html_tag[1]["lang"] == language
    assert html_tag[1]["dir"] == direction


def test_css_is_inlined(circular: RenderedCircular) -> None:
    page = Elements(circular.html)

    masthead = page.find("td", "masthead")
    assert re.search(r"background-color:\s*#123abc", masthead["style"])
    assert page.find("h1", "title")["style"]
    assert "font-family" in page.find("td", "content")["style"]
    assert "font-size" in page.find("td", "footer")["style"]


def test_only_the_media_query_is_left_in_a_style_block(circular: RenderedCircular) -> None:
    blocks = re.findall(r"<style[^>]*>(.*?)</style>", circular.html, re.DOTALL | re.IGNORECASE)
    assert len(blocks) == 1
    css = blocks[0].strip()
    assert css.startswith("@media")
    assert css.count("@media") == 1
    assert css.endswith("}")


def test_raw_html_in_the_body_is_shown_as_text() -> None:
    rendered = render(
        body="Hello <script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n\n"
        '<a href="https://evil.example">click</a>'
    )
    tags = Elements(rendered.html).names()
    assert "script" not in tags
    assert "img" not in tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
    assert "https://evil.example" not in [
        attrs.get("href") for _, attrs in Elements(rendered.html).tags
    ]


def test_javascript_links_in_markdown_are_not_links() -> None:
    rendered = render(body="[click me](javascript:alert(1))")
    hrefs = [attrs.get("href", "") for _, attrs in Elements(rendered.html).tags]
    assert not any(href.lower().startswith("javascript:") for href in hrefs)


def test_title_is_escaped() -> None:
    title = 'Rights & "duties" <of> States'
    rendered = render(title=title)
    page = Elements(rendered.html)
    assert "of" not in page.names()
    assert page.text_of("h1") == title


def test_markdown_is_rendered(circular: RenderedCircular) -> None:
    page = Elements(circular.html)
    assert "strong" in page.names()
    assert "blockquote" in page.names()
    assert ("a", "https://network.example.org/statement") in [
        (tag, attrs.get("href")) for tag, attrs in page.tags
    ]
    assert "What happens next" in circular.html


def test_attachments_are_listed_with_name_and_size(circular: RenderedCircular) -> None:
    assert "Déclaration – 2017.pdf (12.1 KB)" in circular.html
    assert "بيان.pdf (2.0 MB)" in circular.html


def test_no_attachment_section_without_attachments() -> None:
    rendered = render(attachments=[])
    assert "Attached to this circular" not in rendered.html
    assert "Attached to this circular" not in rendered.text


def test_kicker_shows_number_and_date(circular: RenderedCircular) -> None:
    assert "Circular No. 27" in circular.html
    assert "10 September 2017" in circular.html
    assert "10 September 2017" in circular.text


def test_web_link_is_offered_when_given(circular: RenderedCircular) -> None:
    assert 'href="https://network.example.org/archive/27"' in circular.html
    assert "https://network.example.org/archive/27" in circular.text
    assert "archive/27" not in render(web_url=None).html


def test_contact_block_and_footer(circular: RenderedCircular) -> None:
    for part in (circular.html, circular.text):
        assert "Rue de Varembé 1" in part
        assert "1202 Geneva" in part
        assert "secretariat@network.example.org" in part
        assert "A network of organisations working for the rights of migrants." in part
        assert "https://social.example/@network" in part


def _words(count: int) -> str:
    vocabulary = re.findall(
        r"\w+",
        "the global compact on safe orderly and regular migration recognises rights of "
        "migrants workers families states civil society organisations commit protect",
    )
    paragraphs = []
    for start in range(0, count, 60):
        words = [
            vocabulary[(start + i) * 7 % len(vocabulary)] for i in range(min(60, count - start))
        ]
        if start % 600 == 0:
            paragraphs.append(f"## Section {start // 600 + 1}")
        if start % 300 == 0:
            paragraphs.append(f"- {' '.join(words[:20])}\n- {' '.join(words[20:])}")
        else:
            paragraphs.append(" ".join(words))
    return "\n\n".join(paragraphs)


def test_html_stays_under_gmail_clipping_for_a_5000_word_body() -> None:
    body = _words(5000)
    assert 4900 <= len(re.findall(r"[a-z]+", body)) <= 5200
    rendered = render(body=body)
    assert len(rendered.html.encode("utf-8")) < 100 * 1024


# --- markers and text -----------------------------------------------------------------------

MARKERS = [
    "%%CIRCULARS.greeting%%",
    "%%CIRCULARS.unsubscribe_url%%",
    "%%CIRCULARS.preferences_url%%",
    "%%CIRCULARS.email%%",
    "%%CIRCULARS.list_name%%",
]


@pytest.mark.parametrize("marker", MARKERS)
def test_personal_markers_are_in_both_parts(circular: RenderedCircular, marker: str) -> None:
    assert marker in circular.html
    assert marker in circular.text


def test_unsubscribe_and_preference_links_are_links(circular: RenderedCircular) -> None:
    hrefs = [attrs.get("href") for _, attrs in Elements(circular.html).tags]
    assert "%%CIRCULARS.unsubscribe_url%%" in hrefs
    assert "%%CIRCULARS.preferences_url%%" in hrefs


def test_text_part_has_the_body_and_attachment_names(circular: RenderedCircular) -> None:
    text = circular.text
    assert "The **Global Compact** negotiations enter their last round." in text
    assert "- Member States meet in *New York*" in text
    assert "Global Compact, last round of negotiations" in text
    assert "Déclaration – 2017.pdf (12.1 KB)" in text
    assert "بيان.pdf (2.0 MB)" in text
    assert "<p" not in text and "<td" not in text


def test_text_part_keeps_raw_markdown_html_as_written() -> None:
    rendered = render(body="Use <b>bold</b> & stay")
    assert "Use <b>bold</b> & stay" in rendered.text


@pytest.mark.parametrize("part", ["html", "text"])
def test_lines_end_with_crlf(circular: RenderedCircular, part: str) -> None:
    value = getattr(circular, part)
    assert "\r\n" in value
    assert not re.search(r"(?<!\r)\n", value), "bare LF"
    assert not re.search(r"\r(?!\n)", value), "bare CR"


def test_body_with_bare_cr_and_lf_still_gives_crlf() -> None:
    rendered = render(body="one\rtwo\nthree\r\nfour")
    for value in (rendered.html, rendered.text):
        assert not re.search(r"(?<!\r)\n|\r(?!\n)", value)


def test_text_part_ends_with_a_line_break(circular: RenderedCircular) -> None:
    assert circular.text.endswith("\r\n")
