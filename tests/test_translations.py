"""Circulars in several languages: one message per subscriber in their version (or the
default), attachments per version, Arabic right to left in the email and on the archive
page, versions linked with hreflang, and bad input refused with nothing changed."""

from __future__ import annotations

import io
import re
from collections import Counter
from datetime import UTC, datetime
from urllib.parse import urlsplit

import feedparser
import pytest
from sqlalchemy import func, select

from circulars.language_versions import (
    TranslationRefused,
    add_version,
    set_default_language,
    version_for,
)
from circulars.models import (
    Attachment,
    Circular,
    CircularTranslation,
    Delivery,
    MailingList,
    SendVersion,
)
from circulars.sending import engine
from circulars.sending.service import create_send
from circulars.subscribers.service import add_to_list
from circulars.tasks import SEND_TEST

from conftest import ARTIFACTS, csrf_token

ARABIC_TITLE = "الميثاق العالمي: الجولة الأخيرة من المفاوضات"
ARABIC_BODY = "الزملاء الأعزاء،\n\nتبدأ **الجولة الثانية** الآن.\n"
FRENCH_TITLE = "Pacte mondial : dernier cycle de négociations"
CHINESE_TITLE = "全球契约：最后一轮谈判"


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def parts(received):
    message = received.message
    html = message.get_body(preferencelist=("html",)).get_content()
    text = message.get_body(preferencelist=("plain",)).get_content()
    files = sorted(part.get_filename() for part in message.iter_attachments())
    return message, html, text, files


# --- the whole path: CLI, real worker, real SMTP server ------------------------------------


@pytest.mark.integration
def test_each_subscriber_gets_exactly_one_message_in_their_version(
    app, runner, worker, smtp_server, client, session, tmp_path
):
    assert runner.invoke(["lists", "create", "members", "--name", "Members"]).exit_code == 0
    people = {
        "en@example.org": "en",
        "ar@example.org": "ar",
        "fr@example.org": "fr",
        "frca@example.org": "fr-ca",
        "zh@example.org": "zh",
        "de@example.org": "de",
    }
    csv = write(
        tmp_path / "people.csv",
        "email,name,language\n"
        + "".join(f"{email},Person {lang},{lang}\n" for email, lang in people.items()),
    )
    result = runner.invoke(["subscribers", "import", str(csv), "--list", "members"])
    assert result.exit_code == 0, result.output

    shared = tmp_path / "Programme.pdf"
    shared.write_bytes(b"%PDF-1.4 shared\n" + bytes(range(256)) * 20)
    arabic_annex = tmp_path / "ملحق.pdf"
    arabic_annex.write_bytes(b"%PDF-1.4 arabic annex\n" + b"\x00\xff" * 500)
    result = runner.invoke(
        [
            "circulars",
            "create",
            "--title",
            "Global Compact: last round of negotiations",
            "--body",
            str(write(tmp_path / "en.md", "Dear colleagues,\n\nThe **second round** starts.\n")),
            "--attach",
            str(shared),
            "--list",
            "members",
            "--language",
            "en",
        ]
    )
    assert result.exit_code == 0, result.output
    circular_id = int(result.output)
    for language, title, body, extra in (
        ("ar", ARABIC_TITLE, ARABIC_BODY, ["--attach", str(arabic_annex)]),
        ("fr", FRENCH_TITLE, "Le **deuxième cycle** commence.\n", []),
        ("zh", CHINESE_TITLE, "**第二轮**现在开始。\n", []),
    ):
        body_file = write(tmp_path / f"{language}.md", body)
        result = runner.invoke(
            [
                "circulars",
                "translate",
                str(circular_id),
                "--language",
                language,
                "--title",
                title,
                "--body",
                str(body_file),
                *extra,
            ]
        )
        assert result.exit_code == 0, result.output

    result = runner.invoke(["send", str(circular_id), "--wait", "--timeout", "240"])
    assert result.exit_code == 0, result.output
    received = smtp_server.wait_for(len(people), timeout=30)
    assert len(received) == len(people)
    by_address = {}
    for item in received:
        [address] = item.rcpt_tos
        by_address[address] = item
    assert Counter(r for item in received for r in item.rcpt_tos) == Counter(list(people))

    expected_subjects = {
        "en@example.org": "Circular No. 1: Global Compact: last round of negotiations",
        "de@example.org": "Circular No. 1: Global Compact: last round of negotiations",
        "ar@example.org": f"التعميم رقم 1: {ARABIC_TITLE}",
        "fr@example.org": f"Circulaire n° 1: {FRENCH_TITLE}",
        "frca@example.org": f"Circulaire n° 1: {FRENCH_TITLE}",
        "zh@example.org": f"第1号通函: {CHINESE_TITLE}",
    }
    expected_body = {
        "en@example.org": "<strong>second round</strong>",
        "de@example.org": "<strong>second round</strong>",
        "ar@example.org": "<strong>الجولة الثانية</strong>",
        "fr@example.org": "<strong>deuxième cycle</strong>",
        "frca@example.org": "<strong>deuxième cycle</strong>",
        "zh@example.org": "<strong>第二轮</strong>",
    }
    others = set(expected_body.values())
    for address, item in by_address.items():
        message, html, text, files = parts(item)
        assert message["Subject"] == expected_subjects[address], address
        assert expected_body[address] in html, address
        for other in others - {expected_body[address]}:
            assert other not in html, (address, other)
        assert "%%CIRCULARS" not in html and "%%CIRCULARS" not in text
        # The Arabic annex goes with the Arabic version only; the programme with every one.
        if address == "ar@example.org":
            assert files == sorted(["Programme.pdf", "ملحق.pdf"])
        else:
            assert files == ["Programme.pdf"], address

    # Arabic: right to left on the document, the body and (inlined) the cells.
    _message, html, text, _files = parts(by_address["ar@example.org"])
    assert re.search(r'<html lang="ar" dir="rtl"', html)
    assert re.search(r'<body lang="ar" dir="rtl"', html)
    assert re.search(r'class="content" style="[^"]*direction: ?rtl', html)
    assert re.search(r'class="content" style="[^"]*text-align: ?right', html)
    assert "عزيزتي/عزيزي Person ar،" in html and "إلغاء الاشتراك" in html
    assert "الجولة الثانية" in text
    _message, html, _text, _files = parts(by_address["en@example.org"])
    assert re.search(r'<html lang="en" dir="ltr"', html) and "direction: rtl" not in html
    assert "Dear Person en," in html

    # Each version's "view in browser" link opens that version's page.
    _message, html, _text, _files = parts(by_address["ar@example.org"])
    url = re.search(r'href="(http://circulars\.test/circulars/1-[^"]+)"', html).group(1)
    assert urlsplit(url).path == "/circulars/1-global-compact-last-round-of-negotiations/ar"
    page = client.get(urlsplit(url).path)
    assert page.status_code == 200 and ARABIC_TITLE in page.text

    # The deliveries record which version went to whom; rendered once per language.
    rows = dict(session.execute(select(Delivery.email, Delivery.language)).all())
    assert rows == {
        "en@example.org": "en",
        "de@example.org": "en",
        "ar@example.org": "ar",
        "fr@example.org": "fr",
        "frca@example.org": "fr",
        "zh@example.org": "zh",
    }
    assert sorted(session.scalars(select(SendVersion.language))) == ["ar", "fr", "zh"]


# --- the send engine in process ------------------------------------------------------------


@pytest.fixture
def ctx(app):
    return app.extensions["circulars.send_context"]


def members_with(session, languages):
    members = MailingList(slug="members", name="Members")
    session.add(members)
    session.flush()
    for index, language in enumerate(languages):
        add_to_list(session, members, f"reader{index}@example.org", language=language)
    session.commit()
    return members


def send_now(session, ctx, circular, members):
    send = create_send(session, circular.id, [members.id])
    session.commit()
    for first, last in engine.start_send(session, send.id, ctx):
        engine.deliver_batch(session, send.id, first, last, ctx)
    return send


def test_french_default_reaches_readers_without_a_version(session, ctx, smtp_server):
    members = members_with(session, ["fr", "de", "en", "AR"])
    circular = Circular(
        title="Réunion de Genève", body_markdown="Ordre du jour.", default_language="fr"
    )
    session.add(circular)
    session.flush()
    add_version(session, circular, "en", "Geneva meeting", "Agenda.")
    session.commit()
    send_now(session, ctx, circular, members)
    subjects = {
        item.rcpt_tos[0]: item.message["Subject"] for item in smtp_server.wait_for(4, timeout=10)
    }
    assert subjects == {
        "reader0@example.org": "Circulaire n° 1: Réunion de Genève",
        "reader1@example.org": "Circulaire n° 1: Réunion de Genève",  # de: the default
        "reader2@example.org": "Circular No. 1: Geneva meeting",
        "reader3@example.org": "Circulaire n° 1: Réunion de Genève",  # ar: no version
    }


def test_a_version_that_cannot_render_fails_the_send_and_says_which(session, ctx, smtp_server):
    members = members_with(session, ["en", "ar"])
    circular = Circular(title="Fine", body_markdown="Text.")
    session.add(circular)
    session.flush()
    # Bypassing the checks, as a row written by hand would.
    circular.translations.append(
        CircularTranslation(language="ar", title="سطر\r\nBcc: x@example.org", body_markdown="")
    )
    session.commit()
    send = send_now(session, ctx, circular, members)
    session.refresh(send)
    assert send.status == "failed" and "(ar version)" in send.error
    assert smtp_server.messages() == []
    assert session.scalar(select(func.count()).select_from(SendVersion)) == 0


def test_version_for_reads_the_base_language():
    assert version_for("fr-CA", ["en", "fr"], "en") == "fr"
    assert version_for("zh_TW", ["en", "zh"], "en") == "zh"
    assert version_for("de", ["en", "fr"], "en") == "en"
    assert version_for("", ["fr", "en"], "fr") == "fr"
    assert version_for("ara", ["en", "ar"], "en") == "en"  # a longer code is not "ar"


# --- the public archive -----------------------------------------------------------------


def publish_with_versions(app, session):
    circular = Circular(
        title="Global Compact: last round",
        body_markdown="The **second round** starts.",
        status="draft",
        topic="Migration",
    )
    session.add(circular)
    session.flush()
    add_version(session, circular, "ar", ARABIC_TITLE, ARABIC_BODY)
    add_version(session, circular, "fr", FRENCH_TITLE, "Le deuxième cycle commence.")
    store = app.extensions["circulars.files"]
    for name, language in (("Programme.pdf", None), ("ملحق.pdf", "ar")):
        stored = store.save(io.BytesIO(b"%PDF " + name.encode()), name, "application/pdf")
        circular.attachments.append(
            Attachment(
                filename=stored.filename,
                content_type=stored.content_type,
                size=stored.size,
                sha256=stored.sha256,
                language=language,
            )
        )
    circular.number, circular.status = 27, "sent"
    circular.first_sent_at = datetime(2026, 3, 5, 9, 0, tzinfo=UTC)
    session.commit()
    return circular


def test_archive_page_links_the_versions_and_arabic_is_rtl(app, client, fresh_client, session):
    publish_with_versions(app, session)
    base = "/circulars/27-global-compact-last-round"
    page = client.get(base)
    assert page.status_code == 200
    html = page.text
    for language in ("ar", "fr", "en"):
        href = base if language == "en" else f"{base}/{language}"
        assert f'<link rel="alternate" hreflang="{language}" href="{href}">' in html
    assert f'<link rel="alternate" hreflang="x-default" href="{base}">' in html
    versions = re.search(r'<nav class="versions".*?</nav>', html, re.S).group(0)
    assert f'href="{base}/ar" hreflang="ar" lang="ar"' in versions
    assert f'href="{base}/fr" hreflang="fr" lang="fr"' in versions
    assert 'aria-current="page">English<' in versions
    assert "Circular No. 27: Global Compact: last round" in html
    assert "Programme.pdf" in html and "ملحق.pdf" not in html

    # A reader who has chosen nothing gets the Arabic page right to left, all of it.
    arabic = fresh_client.get(f"{base}/ar")
    assert arabic.status_code == 200
    assert re.search(r'<html lang="ar" dir="rtl"', arabic.text)
    assert f'<h1 lang="ar" dir="rtl">التعميم رقم 27: {ARABIC_TITLE}</h1>' in arabic.text
    assert '<div class="circular-body" lang="ar" dir="rtl">' in arabic.text
    assert "<strong>الجولة الثانية</strong>" in arabic.text
    assert "Programme.pdf" in arabic.text and "ملحق.pdf" in arabic.text
    assert f'href="{base}" hreflang="en" lang="en"' in arabic.text
    # The French version, under pages in English (the reader asked for them).
    french = client.get(f"{base}/fr?lang=en")
    assert re.search(r'<html lang="en" dir="ltr"', french.text)
    assert '<div class="circular-body" lang="fr" dir="ltr">' in french.text

    assert urlsplit(client.get(f"{base}/en").location).path == base  # the default's own URL
    assert urlsplit(client.get("/circulars/27/ar").location).path == f"{base}/ar"
    assert urlsplit(client.get("/circulars/27-old-slug/ar").location).path == f"{base}/ar"
    assert client.get(f"{base}/de").status_code == 404
    assert client.get(f"{base}/xx").status_code == 404
    assert client.get("/circulars/27/de").status_code == 404

    # The list and the feed keep working, with the default version; search reads every version.
    assert 'id="circular-27"' in client.get("/circulars").text
    assert 'id="circular-27"' in client.get("/circulars?q=الثانية").text
    assert 'id="circular-27"' in client.get("/circulars?q=cycle+second").text
    assert 'id="circular-27"' not in client.get("/circulars?q=cycle+absent").text
    feed = feedparser.parse(client.get("/circulars/feed.atom").data)
    assert not feed.bozo
    assert [entry.title for entry in feed.entries] == [
        "Circular No. 27: Global Compact: last round"
    ]


# --- bad input ------------------------------------------------------------------------------


def test_archive_list_and_feed_name_the_other_versions(app, client, session):
    publish_with_versions(app, session)
    listing = client.get("/circulars").text
    also = re.search(r'<p class="versions muted">(.*?)</p>', listing, re.S)
    assert also is not None
    links = re.findall(r'<a href="([^"]+)" hreflang="(\w+)"', also.group(1))
    assert links == [
        ("/circulars/27-global-compact-last-round/ar", "ar"),
        ("/circulars/27-global-compact-last-round/fr", "fr"),
    ]
    for href, _ in links:
        assert client.get(href).status_code == 200

    feed = feedparser.parse(client.get("/circulars/feed.atom").data)
    assert not feed.bozo, feed.bozo_exception
    (entry,) = feed.entries
    assert entry.link.endswith("/circulars/27-global-compact-last-round")
    assert [link.get("hreflang") for link in entry.links if link.rel == "alternate"] == ["en"]
    assert '<entry xml:lang="en">' in client.get("/circulars/feed.atom").text


def snapshot(session, circular_id):
    session.expire_all()
    circular = session.get(Circular, circular_id)
    return (
        circular.title,
        circular.body_markdown,
        circular.default_language,
        circular.revision,
        [(t.language, t.title, t.body_markdown) for t in circular.translations],
        [(a.filename, a.language) for a in circular.attachments],
    )


def test_cli_refuses_bad_versions_and_changes_nothing(runner, session, tmp_path):
    body = write(tmp_path / "body.md", "Text.")
    result = runner.invoke(
        ["circulars", "create", "--title", "T", "--body", str(body), "--language", "klingon"]
    )
    assert result.exit_code == 2 and "Unknown language code 'klingon'" in result.output
    assert session.scalar(select(func.count()).select_from(Circular)) == 0

    circular_id = int(
        runner.invoke(["circulars", "create", "--title", "T", "--body", str(body)]).output
    )
    ok = ["circulars", "translate", str(circular_id), "--body", str(body)]
    assert runner.invoke([*ok, "--language", "ar", "--title", "عنوان"]).exit_code == 0
    before = snapshot(session, circular_id)
    for args, message in (
        (["--language", "xx", "--title", "X"], "Unknown language code 'xx'"),
        (["--language", "ar", "--title", "Another"], "has a version in العربية already"),
        (["--language", "en", "--title", "Another"], "has a version in English already"),
        (["--language", "fr", "--title", "Deux\r\nBcc: x@example.org"], "single line"),
        (["--language", "fr", "--title", "Deux\nlignes"], "single line"),
        (["--language", "fr", "--title", "   "], "1 to 300 characters"),
    ):
        result = runner.invoke([*ok, *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert snapshot(session, circular_id) == before, args
    result = runner.invoke(
        [*ok, "--language", "fr", "--title", "Fr", "--attach", str(tmp_path / "missing.pdf")]
    )
    assert result.exit_code == 2 and snapshot(session, circular_id) == before

    circular = session.get(Circular, circular_id)
    circular.number, circular.status = 1, "sent"
    session.commit()
    before = snapshot(session, circular_id)
    result = runner.invoke([*ok, "--language", "fr", "--title", "Trop tard"])
    assert result.exit_code == 2 and "has been sent" in result.output
    result = runner.invoke([*ok, "--language", "ar", "--title", "متأخر", "--replace"])
    assert result.exit_code == 2 and "has been sent" in result.output
    assert snapshot(session, circular_id) == before


def test_rules_refuse_without_changing_anything(session):
    circular = Circular(title="Base", body_markdown="Text.")
    session.add(circular)
    session.flush()
    add_version(session, circular, "ar", "عنوان", "نص")
    session.commit()
    before = snapshot(session, circular.id)
    circular = session.get(Circular, circular.id)
    for call, args in (
        (set_default_language, ("tlh",)),
        (add_version, ("AR", "مرة أخرى", "")),
        (add_version, ("es", "x" * 301, "")),
    ):
        with pytest.raises(TranslationRefused):
            call(session, circular, *args)
        session.rollback()
        assert snapshot(session, circular.id) == before
        circular = session.get(Circular, circular.id)
    # Making Arabic the default swaps the texts; English becomes a translation.
    set_default_language(session, circular, "ar")
    session.commit()
    title, body, default, _revision, translations, _files = snapshot(session, circular.id)
    assert (title, body, default) == ("عنوان", "نص", "ar")
    assert translations == [("en", "Base", "Text.")]


# --- the admin ------------------------------------------------------------------------------


def test_admin_adds_edits_previews_and_removes_versions(app, auth, client, session, enqueued):
    auth.create_user()
    auth.login()
    circular = Circular(title="Annual meeting", body_markdown="See you **there**.")
    session.add(circular)
    session.commit()
    store = app.extensions["circulars.files"]
    stored = store.save(io.BytesIO(b"%PDF agenda"), "Agenda.pdf", "application/pdf")
    attachment = Attachment(
        circular_id=circular.id,
        filename=stored.filename,
        content_type=stored.content_type,
        size=stored.size,
        sha256=stored.sha256,
    )
    session.add(attachment)
    session.commit()
    draft = f"/admin/circulars/{circular.id}"
    new = f"{draft}/versions/new"

    page = client.get(draft)
    assert 'id="languages"' in page.text and "Add a language version" in page.text
    form = client.get(new)
    assert '<option value="ar" lang="ar">العربية (ar)</option>' in form.text
    assert '<option value="en"' not in form.text  # the default has its version already

    response = auth.post_form(
        new, new, {"language": "ar", "title": ARABIC_TITLE, "body": ARABIC_BODY}
    )
    assert response.status_code == 302
    # Refused, nothing changed: a duplicate, an unknown code, a line break in the title.
    before = snapshot(session, circular.id)
    for data, message in (
        ({"language": "ar", "title": "مكرر"}, "has a version in العربية already"),
        ({"language": "xx", "title": "X"}, "Unknown language code"),
        ({"language": "fr", "title": "Deux\r\nlignes"}, "Must be a single line."),
    ):
        refused = auth.post_form(new, new, data)
        assert refused.status_code == 400, data
        assert message in refused.text, data
        assert snapshot(session, circular.id) == before

    edit = f"{draft}/versions/ar"
    page = client.get(edit)
    assert 'dir="rtl"' in page.text and ARABIC_TITLE in page.text
    auth.post_form(edit, edit, {"title": ARABIC_TITLE + " (مراجعة)", "body": ARABIC_BODY})
    session.expire_all()
    assert circular.translations[0].title == ARABIC_TITLE + " (مراجعة)"

    # The attachment goes with the Arabic version only.
    response = auth.post_form(
        draft, f"{draft}/attachments/{attachment.id}/language", {"language": "ar"}
    )
    session.expire_all()
    assert attachment.language == "ar"
    refused = auth.post_form(
        draft, f"{draft}/attachments/{attachment.id}/language", {"language": "ru"}
    )
    session.expire_all()
    assert attachment.language == "ar"  # no Russian version: refused
    assert "no version in Русский" in client.get(draft).text

    preview = client.get(f"/admin/circulars/{circular.id}/preview?lang=ar")
    assert preview.status_code == 200
    assert f"التعميم رقم 1: {ARABIC_TITLE} (مراجعة)" in preview.text  # with the next number
    assert "1 attachment(s)" in preview.text
    email = client.get(f"/admin/circulars/{circular.id}/preview/email.html?lang=ar")
    assert re.search(r'<html lang="ar" dir="rtl"', email.text) and "Agenda.pdf" in email.text
    english = client.get(f"/admin/circulars/{circular.id}/preview/email.html")
    assert "Agenda.pdf" not in english.text and "See you <strong>there</strong>" in english.text
    assert client.get(f"/admin/circulars/{circular.id}/preview?lang=de").status_code == 404

    # A test in Arabic is queued with its language; an unknown version is refused.
    auth.post_form(draft, f"{draft}/test", {"address": "me@example.org", "language": "ar"})
    auth.post_form(draft, f"{draft}/test", {"address": "me@example.org", "language": "de"})
    assert [call for call in enqueued if call[0] == SEND_TEST] == [
        (SEND_TEST, (circular.id, "me@example.org", "ar"))
    ]

    # The version cannot go while an attachment is its own; then it can.
    remove = f"{draft}/versions/ar/delete"
    auth.post_form(draft, remove, {})
    session.expire_all()
    assert [t.language for t in circular.translations] == ["ar"]
    auth.post_form(draft, f"{draft}/attachments/{attachment.id}/language", {"language": ""})
    auth.post_form(draft, remove, {})
    session.expire_all()
    assert circular.translations == [] and attachment.language is None


@pytest.mark.parametrize("language", ["fr", "en"])
def test_a_version_saved_by_someone_else_meanwhile_is_not_overwritten(
    auth, client, session, language
):
    """Two people edit the same version: the second save to arrive is refused with its text
    kept for copying, instead of silently replacing the first (the default version too)."""
    auth.create_user()
    auth.login()
    circular = Circular(title="Annual meeting", body_markdown="See you there.")
    session.add(circular)
    session.commit()
    add_version(session, circular, "fr", "Assemblée annuelle", "À bientôt.")
    session.commit()
    edit = f"/admin/circulars/{circular.id}/versions/{language}"

    mine = client.get(edit)
    base = re.search(r'name="base" type="hidden" value="([0-9a-f]+)"', mine.text)
    assert base is not None, mine.text
    fields = {"csrf_token": csrf_token(mine.text), "base": base.group(1)}
    # Someone else saves the same version first.
    theirs = client.post(edit, data={**fields, "title": "Their title", "body": "Their text."})
    assert theirs.status_code == 302

    late = client.post(edit, data={**fields, "title": "My title", "body": "My own text."})
    assert late.status_code == 409
    assert "Someone else saved this version after you opened it" in late.text
    assert "My own text." in late.text  # shown again, to copy
    session.expire_all()
    saved = session.get(Circular, circular.id).version(language)
    assert (saved.title, saved.body_markdown) == ("Their title", "Their text.")

    # Reloaded, the form starts from their text and saves.
    again = client.get(edit)
    fresh = re.search(r'name="base" type="hidden" value="([0-9a-f]+)"', again.text).group(1)
    ok = client.post(
        edit,
        data={"csrf_token": csrf_token(again.text), "base": fresh, "title": "Mine", "body": "B"},
    )
    assert ok.status_code == 302
    session.expire_all()
    assert session.get(Circular, circular.id).version(language).title == "Mine"


def test_test_send_in_a_chosen_version(session, ctx, smtp_server):
    circular = Circular(title="Meeting", body_markdown="Agenda.")
    session.add(circular)
    session.flush()
    add_version(session, circular, "zh", CHINESE_TITLE, "议程。")
    session.commit()
    engine.send_test(session, circular.id, "me@example.org", ctx, "zh")
    [received] = smtp_server.wait_for(1, timeout=10)
    message, html, _text, _files = parts(received)
    assert message["Subject"] == f"[Test] {CHINESE_TITLE}"
    assert "议程。" in html and '<html lang="zh" dir="ltr"' in html


def test_a_sent_circular_versions_cannot_change_in_the_admin(auth, client, session):
    auth.create_user()
    auth.login()
    circular = Circular(title="Sent", body_markdown="Text.", status="sent", number=3)
    session.add(circular)
    session.flush()
    circular.translations.append(CircularTranslation(language="fr", title="Envoyée"))
    session.commit()
    before = snapshot(session, circular.id)
    draft = f"/admin/circulars/{circular.id}"
    for url, data in (
        (f"{draft}/versions/new", {"language": "ar", "title": "عنوان"}),
        (f"{draft}/versions/fr", {"title": "Changée"}),
        (f"{draft}/versions/fr/delete", {}),
        (f"{draft}/default-language", {"language": "fr"}),
    ):
        response = auth.post_form(draft, url, data)
        assert response.status_code == 302, url
        assert snapshot(session, circular.id) == before, url
    page = client.get(draft).text
    assert "can no longer change" in page
    assert f'href="/admin/circulars/{circular.id}/preview?lang=fr" lang="fr">Français</a>' in page


# --- a real browser -------------------------------------------------------------------------


@pytest.mark.browser
def test_arabic_archive_page_is_right_to_left_in_chromium(
    app, session, live_server, browser, stack
):
    publish_with_versions(app, session)
    shots = ARTIFACTS / f"browser-{stack['STACK']}"
    shots.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1100, "height": 900}, locale="en-GB")
    page.goto(f"{live_server}/circulars/27-global-compact-last-round")
    page.click("nav.versions a[hreflang='ar']")
    page.wait_for_url("**/27-global-compact-last-round/ar")
    direction = page.evaluate(
        "getComputedStyle(document.querySelector('.circular-body')).direction"
    )
    assert direction == "rtl"
    assert page.evaluate("getComputedStyle(document.documentElement).direction") == "rtl"
    heading = page.locator("h1")
    assert heading.inner_text().startswith("التعميم رقم 27")
    # Right to left for real: the heading's text ends at the right edge of its box.
    box = heading.bounding_box()
    text_right = page.evaluate(
        """() => { const range = document.createRange();
                   range.selectNodeContents(document.querySelector('h1'));
                   return range.getBoundingClientRect().right; }"""
    )
    assert box is not None and abs(text_right - (box["x"] + box["width"])) < 2
    page.screenshot(path=str(shots / "translations-archive-ar.png"), full_page=True)
    # Back to English through the hreflang link.
    page.click("nav.versions a[hreflang='en']")
    page.wait_for_url("**/27-global-compact-last-round")
    assert (
        page.evaluate("getComputedStyle(document.querySelector('.circular-body')).direction")
        == "ltr"
    )
    page.close()


def test_send_page_counts_the_recipients_of_each_version(auth, client, session):
    auth.create_user()
    auth.login()
    members = members_with(session, ["en", "ar", "de", "fr-CA", "ar-EG"])
    circular = Circular(title="Meeting", body_markdown="Agenda.")
    session.add(circular)
    session.flush()
    add_version(session, circular, "ar", "اجتماع", "جدول الأعمال")
    add_version(session, circular, "fr", "Réunion", "Ordre du jour")
    add_version(session, circular, "zh", "会议", "议程")
    session.commit()
    page = client.get(f"/admin/circulars/{circular.id}/send?lists={members.id}").text
    assert "5 people will receive it." in page
    line = re.search(r'<p id="recipient-versions">(.*?)</p>', page, re.S).group(1)
    assert re.sub(r"<[^>]+>", "", line) == (
        "In their language: 2 in English (the default, also for languages without a version), "
        "2 in العربية, 1 in Français."
    )
