"""The public archive's Atom 1.0 feed (RFC 4287), built with ElementTree so text is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from xml.etree import ElementTree as ET

from .archive import archive_path
from .mail.render import markdown_to_html
from .models import Circular

ATOM_NS = "http://www.w3.org/2005/Atom"
ATOM_TYPE = "application/atom+xml"


XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def _iso(value: datetime | None) -> str:
    value = value or datetime.now(UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _add(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM_NS}}}{tag}", attrs)
    if text is not None:
        element.text = text
    return element


def build_feed(
    circulars: Sequence[Circular], *, base_url: str, org_name: str, feed_path: str, index_path: str
) -> bytes:
    """Entry ids are the number's URL without the slug: they never change."""
    base = base_url.rstrip("/")
    ET.register_namespace("", ATOM_NS)
    feed = ET.Element(f"{{{ATOM_NS}}}feed")
    _add(feed, "id", base + feed_path)
    _add(feed, "title", f"{org_name}: circulars")
    _add(
        feed,
        "updated",
        _iso(max((c.first_sent_at for c in circulars if c.first_sent_at), default=None)),
    )
    _add(feed, "link", rel="self", type=ATOM_TYPE, href=base + feed_path)
    _add(feed, "link", rel="alternate", type="text/html", href=base + index_path)
    author = _add(feed, "author")
    _add(author, "name", org_name)
    for circular in circulars:
        if circular.number is None:  # not published; the query never returns one
            continue
        entry = _add(feed, "entry")
        # The entry is the default version. Other versions are not listed as alternate links:
        # readers (feedparser among them) take the last or the first alternate as "the" link,
        # and a page links its versions itself.
        entry.set(XML_LANG, circular.default_language)
        _add(entry, "id", f"{base}/circulars/{circular.number}")
        _add(entry, "title", circular.display_title)
        _add(entry, "updated", _iso(circular.first_sent_at))
        _add(entry, "published", _iso(circular.first_sent_at))
        _add(
            entry,
            "link",
            rel="alternate",
            type="text/html",
            hreflang=circular.default_language,
            href=base + archive_path(circular.number, circular.title),
        )
        if circular.topic:
            _add(entry, "category", term=circular.topic)
        _add(entry, "content", markdown_to_html(circular.body_markdown), type="html")
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)
