"""The public archive: list, permanent pages, attachments, the Atom feed, and the
"view in browser" link of every circular email, on each stack."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from urllib.parse import urlsplit

import feedparser
import pytest

from circulars.archive import slugify
from circulars.models import Attachment, Circular, MailingList
from circulars.sending import engine
from circulars.sending.service import create_send
from circulars.subscribers.service import add_to_list


def publish(session, number, title, *, body="", topic=None, year=2026, in_archive=True):
    """A circular as a send leaves it: numbered, sent, dated."""
    circular = Circular(
        number=number,
        title=title,
        body_markdown=body or f"Body of circular {number}.",
        status="sent",
        topic=topic,
        in_archive=in_archive,
        first_sent_at=datetime(year, 3, 1 + number % 27, 9, 0, tzinfo=UTC),
    )
    session.add(circular)
    session.commit()
    return circular


def numbers_on(html):
    return [int(n) for n in re.findall(r'id="circular-(\d+)"', html)]


def attach(app, session, circular, name, data, content_type="application/pdf"):
    stored = app.extensions["circulars.files"].save(io.BytesIO(data), name, content_type)
    item = Attachment(
        circular_id=circular.id,
        filename=stored.filename,
        content_type=stored.content_type,
        size=stored.size,
        sha256=stored.sha256,
    )
    session.add(item)
    session.commit()
    return item


# --- the list --------------------------------------------------------------------------------


def test_list_is_newest_first_and_paginated_by_twenty(client, session):
    for number in range(1, 46):
        publish(session, number, f"Circular title {number}")
    first = client.get("/circulars")
    assert first.status_code == 200
    assert numbers_on(first.text) == list(range(45, 25, -1))
    assert 'rel="next"' in first.text
    third = client.get("/circulars?page=3")
    assert numbers_on(third.text) == list(range(5, 0, -1))
    assert 'rel="next"' not in third.text
    assert "Page 3 of 3" in third.text
    # A page beyond the end is empty, not an error; a non-number is page 1.
    assert numbers_on(client.get("/circulars?page=9").text) == []
    assert numbers_on(client.get("/circulars?page=x").text)[0] == 45


def test_filters_by_topic_year_and_words_and_keeps_them_across_pages(client, session):
    publish(session, 1, "Budget 2025", topic="Finance", year=2025, body="The annual accounts.")
    publish(session, 2, "Migration report", topic="Migration", year=2025)
    publish(session, 3, "Budget 2026", topic="Finance", year=2026, body="Forecast of dues.")
    publish(session, 4, "Meeting in Geneva", topic="Events", year=2026, body="About *dues* too.")
    publish(session, 5, "Hidden budget", topic="Finance", year=2026, in_archive=False)

    assert numbers_on(client.get("/circulars?topic=Finance").text) == [3, 1]
    assert numbers_on(client.get("/circulars?topic=finance").text) == [3, 1]
    assert numbers_on(client.get("/circulars?year=2025").text) == [2, 1]
    assert numbers_on(client.get("/circulars?topic=Finance&year=2026").text) == [3]
    # Search looks in titles and bodies; every word must appear.
    assert numbers_on(client.get("/circulars?q=dues").text) == [4, 3]
    assert numbers_on(client.get("/circulars?q=budget+forecast").text) == [3]
    assert numbers_on(client.get("/circulars?q=100%25").text) == []
    page = client.get("/circulars")
    # The filter's choices list only what the public may see.
    assert '<option value="Finance"' in page.text and '<option value="2025">' in page.text
    assert "Hidden budget" not in page.text

    for number in range(6, 30):
        publish(session, number, f"Finance note {number}", topic="Finance", year=2026)
    page = client.get("/circulars?topic=Finance&year=2026")
    older = re.search(r'href="([^"]+)" rel="next"', page.text).group(1).replace("&amp;", "&")
    assert "topic=Finance" in older and "year=2026" in older and "page=2" in older
    assert numbers_on(client.get(older).text) == [9, 8, 7, 6, 3]  # 25 in all


def test_a_kept_out_or_unsent_circular_is_nowhere_public(app, client, session):
    shown = publish(session, 1, "Public one")
    hidden = publish(session, 2, "Internal one", in_archive=False)
    draft = Circular(title="A draft")
    session.add(draft)
    session.commit()
    secret = attach(app, session, hidden, "internal.pdf", b"%PDF internal")
    public = attach(app, session, shown, "public.pdf", b"%PDF public")

    assert numbers_on(client.get("/circulars").text) == [1]
    assert client.get(f"/circulars/2-{slugify(hidden.title)}").status_code == 404
    assert client.get("/circulars/2").status_code == 404
    assert client.get("/circulars/3").status_code == 404  # no such number
    assert client.get(f"/circulars/2/attachments/{secret.id}").status_code == 404
    # An attachment of another circular cannot be fetched through a public one's URL.
    assert client.get(f"/circulars/1/attachments/{secret.id}").status_code == 404
    assert client.get(f"/circulars/1/attachments/{public.id}").status_code == 200
    feed = feedparser.parse(client.get("/circulars/feed.atom").data)
    assert [entry.title for entry in feed.entries] == ["Circular No. 1: Public one"]
    # Its page shows no link to the hidden neighbour.
    page = client.get(f"/circulars/1-{slugify(shown.title)}")
    assert "Internal one" not in page.text and 'rel="next"' not in page.text


# --- the permanent page ------------------------------------------------------------------


def test_permanent_page_and_slug_redirects(client, session):
    circular = publish(session, 27, "Déclaration finale: Genève & après!", body="Hello **all**.")
    assert slugify(circular.title) == "declaration-finale-geneve-apres"
    page = client.get("/circulars/27-declaration-finale-geneve-apres")
    assert page.status_code == 200
    assert "Circular No. 27: Déclaration finale: Genève &amp; après!" in page.text
    assert "Hello <strong>all</strong>." in page.text
    assert 'href="/subscribe"' in page.text
    assert 'type="application/atom+xml"' in page.text
    for wrong in ("/circulars/27", "/circulars/27-old-title", "/circulars/27-DECLARATION"):
        response = client.get(wrong)
        assert response.status_code == 301, wrong
        assert urlsplit(response.location).path == "/circulars/27-declaration-finale-geneve-apres"
    # A title with nothing left for a slug (Arabic) still has a working page.
    publish(session, 28, "تعميم بشأن الاجتماع")
    assert client.get("/circulars/28").location.endswith("/circulars/28-circular")
    assert client.get("/circulars/28-circular").status_code == 200


def test_previous_next_and_related_skip_what_is_kept_out(client, session):
    publish(session, 1, "One", topic="Finance")
    publish(session, 2, "Two", topic="Finance", in_archive=False)
    publish(session, 3, "Three", topic="Events")
    publish(session, 4, "Four", topic="Finance")
    publish(session, 5, "Five", topic="Finance")
    publish(session, 6, "Six", topic="finance")
    publish(session, 7, "Seven", topic="Finance")
    publish(session, 8, "Eight", topic="Events")

    page = client.get("/circulars/3-three").text
    assert 'href="/circulars/1-one" rel="prev"' in page
    assert 'href="/circulars/4-four" rel="next"' in page
    page = client.get("/circulars/1-one").text
    assert 'rel="prev"' not in page
    related = re.search(r'<section class="card" id="related">(.*?)</section>', page, re.S).group(1)
    assert re.findall(r'href="/circulars/(\d+)-', related) == ["7", "6", "5"]
    page = client.get("/circulars/8-eight").text
    related = re.search(r'id="related">(.*?)</section>', page, re.S).group(1)
    assert re.findall(r'href="/circulars/(\d+)-', related) == ["3"]
    assert 'rel="next"' not in page
    assert 'id="related"' not in client.get("/circulars/2").text  # 404 page, no related


def test_attachment_download_is_byte_identical_with_safe_headers(app, client, session):
    circular = publish(session, 1, "With files")
    data = b"%PDF-1.4\n" + bytes(range(256)) * 50
    item = attach(app, session, circular, 'Annexe "finale" – é.pdf', data)
    page = client.get("/circulars/1-with-files").text
    url = f"/circulars/1/attachments/{item.id}"
    assert f'href="{url}"' in page
    response = client.get(url)
    assert response.status_code == 200
    assert response.data == data
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''" in disposition
    assert "\r" not in disposition and "\n" not in disposition
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response.headers["Content-Security-Policy"]


def test_a_title_with_markup_is_escaped_everywhere(client, session):
    publish(session, 1, "<script>alert(1)</script> & co", body="<script>alert(2)</script>")
    for url in ("/circulars", "/circulars/1-script-alert-1-script-co"):
        html = client.get(url).text
        assert "<script>alert" not in html, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, url
    feed_bytes = client.get("/circulars/feed.atom").data
    assert b"<script>alert(1)" not in feed_bytes
    feed = feedparser.parse(feed_bytes)
    assert not feed.bozo
    assert feed.entries[0].title == "Circular No. 1: <script>alert(1)</script> & co"


# --- the feed ---------------------------------------------------------------------------


def test_feed_is_valid_atom_with_the_newest_circulars(app, client, session):
    base = app.extensions["circulars.settings"].base_url.rstrip("/")
    for number in range(1, 26):
        publish(session, number, f"Note {number}", topic="Finance" if number % 2 else None)
    response = client.get("/circulars/feed.atom")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/atom+xml")
    feed = feedparser.parse(response.data)
    assert not feed.bozo, feed.bozo_exception
    assert feed.version == "atom10"
    assert feed.feed.id == base + "/circulars/feed.atom"
    assert feed.feed.updated_parsed is not None
    assert len(feed.entries) == 20
    newest = feed.entries[0]
    assert newest.title == "Circular No. 25: Note 25"
    assert newest.link == base + "/circulars/25-note-25"
    assert newest.id == base + "/circulars/25"
    assert newest.tags[0].term == "Finance"
    assert "Body of circular 25." in newest.content[0].value
    assert [entry.title for entry in feed.entries][-1] == "Circular No. 6: Note 6"
    assert client.get(urlsplit(newest.link).path).status_code == 200


def test_empty_archive_has_a_valid_feed_and_page(client):
    assert "No circulars match." in client.get("/circulars").text
    feed = feedparser.parse(client.get("/circulars/feed.atom").data)
    assert not feed.bozo and feed.version == "atom10" and feed.entries == []


def test_archive_pages_follow_the_language_and_arabic_is_rtl(client, session):
    publish(session, 1, "Update")
    page = client.get("/circulars/1-update?lang=ar").text
    assert 'dir="rtl"' in page and 'lang="ar"' in page
    page = client.get("/circulars?lang=fr").text
    assert 'lang="fr"' in page and "Circulaires" in page


# --- the "view in browser" link -----------------------------------------------------------


@pytest.fixture
def ctx(app):
    return app.extensions["circulars.send_context"]


def send_now(session, ctx, circular):
    members = session.query(MailingList).filter_by(slug="members").one()
    send = create_send(session, circular.id, [members.id])
    session.commit()
    for first, last in engine.start_send(session, send.id, ctx):
        engine.deliver_batch(session, send.id, first, last, ctx)


def test_every_circular_email_links_to_its_page(app, client, session, ctx, smtp_server):
    members = MailingList(slug="members", name="Members")
    session.add(members)
    session.flush()
    add_to_list(session, members, "reader@example.org", name="Reader")
    session.commit()
    circular = Circular(title="Annual <meeting> & report", body_markdown="See you.")
    session.add(circular)
    session.commit()

    send_now(session, ctx, circular)
    [received] = smtp_server.messages()
    html = received.message.get_body(preferencelist=("html",)).get_content()
    text = received.message.get_body(preferencelist=("plain",)).get_content()
    session.refresh(circular)
    url = ctx.base_url.rstrip("/") + f"/circulars/{circular.number}-annual-meeting-report"
    assert f'href="{url}"' in html
    assert "View this circular in your browser" in html
    # Near the top: before the title in both parts.
    assert html.index(url) < html.index('<h1 class="title"')
    assert f"View in your browser: {url}" in text
    assert text.index(url) < text.index("Annual <meeting> & report\r\n")
    assert client.get(urlsplit(url).path).status_code == 200


def test_a_circular_kept_out_of_the_archive_has_no_browser_link(session, ctx, smtp_server):
    members = MailingList(slug="members", name="Members")
    session.add(members)
    session.flush()
    add_to_list(session, members, "reader@example.org", name="Reader")
    session.commit()
    circular = Circular(title="Internal matters", body_markdown="Staff only.", in_archive=False)
    session.add(circular)
    session.commit()
    send_now(session, ctx, circular)
    [received] = smtp_server.messages()
    html = received.message.get_body(preferencelist=("html",)).get_content()
    assert "/circulars/" not in html
    assert "in your browser" not in html


# --- the admin draft form -------------------------------------------------------------------


def test_draft_form_saves_topic_and_archive_choice(auth, client, session):
    auth.create_user()
    auth.login()
    response = auth.post_form(
        "/admin/circulars/new",
        "/admin/circulars/new",
        {"title": "With a topic", "body": "Text", "topic": "  Finance ", "in_archive": "y"},
    )
    assert response.status_code == 302
    circular = session.query(Circular).filter_by(title="With a topic").one()
    assert circular.topic == "Finance" and circular.in_archive is True
    page = client.get(f"/admin/circulars/{circular.id}")
    assert 'value="Finance"' in page.text and 'name="in_archive"' in page.text
    response = auth.post_form(
        f"/admin/circulars/{circular.id}",
        f"/admin/circulars/{circular.id}",
        {"title": "With a topic", "body": "Text", "topic": "", "revision": circular.revision},
    )
    assert response.status_code == 302
    session.refresh(circular)
    assert circular.topic is None and circular.in_archive is False


def test_a_sent_circular_can_be_withdrawn_from_the_archive_and_back(auth, client, session):
    circular = publish(session, 1, "Sent already", topic="Finance")
    auth.create_user(email="editor@example.org", role="editor")
    auth.create_user(email="sender@example.org", role="sender")
    url = f"/admin/circulars/{circular.id}/archive"
    page = f"/admin/circulars/{circular.id}"

    auth.login("editor@example.org")
    refused = auth.post_form("/admin/circulars/new", url, {"topic": "Finance"})
    assert refused.status_code == 403
    session.refresh(circular)
    assert circular.in_archive is True

    fresh = type(client)(client.application, client.application.response_class)
    sender = type(auth)(fresh, session)
    sender.login("sender@example.org")
    shown = fresh.get(page)
    assert 'href="/circulars/1"' in shown.text and "Save archive settings" in shown.text
    response = sender.post_form(page, url, {"topic": " Budget "})
    assert response.status_code == 302
    session.refresh(circular)
    assert circular.in_archive is False and circular.topic == "Budget"
    assert fresh.get("/circulars/1-sent-already").status_code == 404
    assert numbers_on(fresh.get("/circulars").text) == []

    response = sender.post_form(page, url, {"topic": "Budget", "in_archive": "y"})
    session.refresh(circular)
    assert circular.in_archive is True
    assert fresh.get("/circulars/1-sent-already").status_code == 200
    # A bad topic (a line break) changes nothing.
    sender.post_form(page, url, {"topic": "Two\nlines", "in_archive": ""})
    session.refresh(circular)
    assert circular.in_archive is True and circular.topic == "Budget"
