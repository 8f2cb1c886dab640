"""The admin as the secretariat uses it: signing in, roles, drafts, attachments,
previews, sends, lists and subscribers, and the Outbox."""

from __future__ import annotations

import hashlib
import io
import re
import smtplib
import time
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import pytest
from sqlalchemy import func, select, update

from circulars.mail.capture import start_capture_server
from circulars.mail.outbox import Outbox
from circulars.models import (
    Attachment,
    Circular,
    Counter,
    MailingList,
    Send,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from circulars.subscribers.service import add_to_list, unsubscribe
from circulars.tasks import START_SEND

from conftest import csrf_token, free_port

PASSWORD = "correct horse battery"
FLASH_RE = re.compile(r'<p class="flash flash-(\w+)">(.*?)</p>')
CSRF_VALUE_RE = re.compile(r'name="csrf_token"[^>]*value="[^"]+"')


# --- helpers ------------------------------------------------------------------------------


def sign_in(auth: Any, role: str = "admin") -> Any:
    email = f"{role}@example.org"
    auth.create_user(email, role)
    response = auth.login(email)
    assert response.status_code == 302, response.text
    return auth


@pytest.fixture
def admin(auth: Any) -> Any:
    return sign_in(auth, "admin")


def path_of(response: Any) -> str:
    return urlsplit(response.headers["Location"]).path


def flashes(html: str) -> list[str]:
    return [message for _category, message in FLASH_RE.findall(html)]


def count(session: Any, model: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def counter_value(session: Any) -> int:
    return int(session.scalar(select(Counter.value).where(Counter.name == "circular")) or 0)


def make_list(session: Any, slug: str, name: str) -> MailingList:
    item = MailingList(slug=slug, name=name)
    session.add(item)
    session.commit()
    return item


def subscribe(session: Any, mailing_list: MailingList, *emails: str) -> None:
    for email in emails:
        add_to_list(session, mailing_list, email)
    session.commit()


def make_draft(
    session: Any,
    title: str = "Annual meeting",
    body: str = "Dear colleagues,\n\nThe meeting is on **Monday**.",
    lists: tuple[MailingList, ...] = (),
) -> Circular:
    circular = Circular(title=title, body_markdown=body)
    circular.lists = list(lists)
    session.add(circular)
    session.commit()
    return circular


def close_body(response: Any) -> Any:
    """Close the encoded request body: the test client spools a large one to a temporary
    file and leaves it open when the app refuses the request unread (413)."""
    response.request.environ["wsgi.input"].close()
    return response


def upload(
    auth: Any, circular_id: int, content: bytes, filename: str, page_url: str | None = None
) -> Any:
    page = auth.client.get(page_url or f"/admin/circulars/{circular_id}")
    assert page.status_code == 200
    response = auth.client.post(
        f"/admin/circulars/{circular_id}/attachments",
        data={"file": (io.BytesIO(content), filename), "csrf_token": csrf_token(page.text)},
        content_type="multipart/form-data",
    )
    return close_body(response)


def import_csv(auth: Any, slug: str, content: bytes, filename: str = "people.csv") -> Any:
    page = auth.client.get(f"/admin/lists/{slug}")
    assert page.status_code == 200
    response = auth.client.post(
        f"/admin/lists/{slug}/import",
        data={"file": (io.BytesIO(content), filename), "csrf_token": csrf_token(page.text)},
        content_type="multipart/form-data",
    )
    return close_body(response)


# --- signing in and out -------------------------------------------------------------------


def test_wrong_password_and_unknown_address_look_the_same(auth, client):
    auth.create_user("ana@example.org", "admin")
    wrong = auth.login("ana@example.org", "not the password at all")
    unknown = auth.login("nobody@example.org", "not the password at all")

    assert wrong.status_code == unknown.status_code == 400
    for response in (wrong, unknown):
        assert "The email or password is not right." in response.text

    def without_variables(html: str, email: str) -> str:
        return CSRF_VALUE_RE.sub("", html).replace(email, "EMAIL")

    assert without_variables(wrong.text, "ana@example.org") == without_variables(
        unknown.text, "nobody@example.org"
    )
    assert client.get("/admin/circulars").status_code == 302  # still signed out


def test_sign_in_leads_to_the_circulars(auth, client):
    auth.create_user("ana@example.org", "sender")
    response = auth.login("Ana@Example.org")
    assert response.status_code == 302
    assert path_of(response) == "/admin/circulars"
    page = client.get("/admin/circulars")
    assert page.status_code == 200
    assert "Signed in." in flashes(page.text)
    assert "ana@example.org" in page.text


def test_sign_in_without_csrf_token_is_refused(auth, client):
    auth.create_user("ana@example.org", "admin")
    response = client.post("/admin/login", data={"email": "ana@example.org", "password": PASSWORD})
    assert response.status_code == 400
    assert "The form has expired" in response.text
    assert client.get("/admin/circulars").status_code == 302


def browser_target(location: str, base: str = "http://circulars.test/admin/login") -> str:
    """Where a browser goes for a Location header: WHATWG parsing drops tabs and newlines
    and reads a backslash as a slash in http(s) URLs."""
    cleaned = re.sub(r"[\t\n\r]", "", location).replace("\\", "/")
    return urljoin(base, cleaned)


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example",
        "https://evil.example/admin/circulars",
        "//evil.example/admin/",
        "javascript:alert(1)",
    ],
)
def test_sign_in_does_not_redirect_off_site(auth, client, target):
    auth.create_user("ana@example.org", "admin")
    page = client.get("/admin/login", query_string={"next": target})
    response = client.post(
        "/admin/login",
        query_string={"next": target},
        data={
            "email": "ana@example.org",
            "password": PASSWORD,
            "csrf_token": csrf_token(page.text),
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/circulars"


@pytest.mark.parametrize("target", ["/\\evil.example", "/\t/evil.example", "/%09/evil.example"])
def test_sign_in_redirect_stays_on_site_for_disguised_targets(auth, client, target):
    auth.create_user("ana@example.org", "admin")
    page = client.get("/admin/login", query_string={"next": target})
    response = client.post(
        "/admin/login",
        query_string={"next": target},
        data={
            "email": "ana@example.org",
            "password": PASSWORD,
            "csrf_token": csrf_token(page.text),
        },
    )
    assert response.status_code == 302
    assert urlsplit(browser_target(response.headers["Location"])).netloc == "circulars.test"


def test_sign_in_follows_a_local_next(auth, client):
    auth.create_user("ana@example.org", "admin")
    page = client.get("/admin/login?next=/admin/lists")
    response = client.post(
        "/admin/login?next=/admin/lists",
        data={
            "email": "ana@example.org",
            "password": PASSWORD,
            "csrf_token": csrf_token(page.text),
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/lists"


@pytest.mark.parametrize(
    "path",
    [
        "/admin/",
        "/admin/circulars",
        "/admin/circulars/new",
        "/admin/circulars/1/preview",
        "/admin/sends",
        "/admin/lists",
        "/admin/lists/new",
        "/admin/attachments/1",
        "/admin/outbox",
    ],
)
def test_admin_pages_send_anonymous_visitors_to_sign_in(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert path_of(response) == "/admin/login"


def test_sign_out_needs_a_post_with_csrf_token(admin, client):
    assert client.get("/admin/logout").status_code == 405
    refused = client.post("/admin/logout")
    assert refused.status_code == 400
    assert client.get("/admin/circulars").status_code == 200  # still signed in

    page = client.get("/admin/circulars")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, "no sign-out form on the page"
    response = client.post("/admin/logout", data={"csrf_token": token.group(1)})
    assert response.status_code == 302
    assert path_of(response) == "/admin/login"
    assert client.get("/admin/circulars").status_code == 302


# --- roles --------------------------------------------------------------------------------


def test_editor_writes_drafts_but_cannot_send_or_manage_lists(auth, client, session):
    members = make_list(session, "members", "Members")
    subscribe(session, members, "ana@example.org")
    draft = make_draft(session, lists=(members,))
    sign_in(auth, "editor")

    page = client.get(f"/admin/circulars/{draft.id}/send")
    assert page.status_code == 403
    assert "Your role does not allow this." in page.text
    send_url = f"/admin/circulars/{draft.id}/send"
    posted = auth.post_form("/admin/circulars/new", send_url, {"lists": [str(members.id)]})
    assert posted.status_code == 403
    assert client.get("/admin/lists/new").status_code == 403
    posted = auth.post_form(
        "/admin/circulars/new", "/admin/lists/new", {"slug": "partners", "name": "Partners"}
    )
    assert posted.status_code == 403
    posted = auth.post_form(
        "/admin/circulars/new", "/admin/lists/members/subscribers", {"email": "li@example.org"}
    )
    assert posted.status_code == 403
    assert count(session, Send) == 0
    assert count(session, MailingList) == 1
    assert count(session, Subscriber) == 1
    session.refresh(draft)
    assert draft.number is None

    created = auth.post_form(
        "/admin/circulars/new",
        "/admin/circulars/new",
        {"title": "The editor's draft", "body": "Text", "lists": [str(members.id)]},
    )
    assert created.status_code == 302
    assert session.scalar(select(Circular.id).where(Circular.title == "The editor's draft"))
    edit_page = client.get(path_of(created))
    assert edit_page.status_code == 200
    assert "Send…" not in edit_page.text  # no button that would lead to a 403


def test_sender_can_send_and_create_lists(auth, client, session):
    draft = make_draft(session)
    sign_in(auth, "sender")
    assert client.get(f"/admin/circulars/{draft.id}/send").status_code == 200
    response = auth.post_form(
        "/admin/lists/new", "/admin/lists/new", {"slug": "partners", "name": "Partners"}
    )
    assert response.status_code == 302
    assert path_of(response) == "/admin/lists/partners"
    assert session.scalar(select(MailingList.name).where(MailingList.slug == "partners")) == (
        "Partners"
    )


# --- drafts -------------------------------------------------------------------------------


def test_create_a_draft(admin, client, session):
    members = make_list(session, "members", "Members")
    partners = make_list(session, "partners", "Partners")
    make_list(session, "press", "Press")
    response = admin.post_form(
        "/admin/circulars/new",
        "/admin/circulars/new",
        {
            "title": "  Global Compact: last round  ",
            "body": "Dear colleagues,\n\n**Save the date.**",
            "lists": [str(members.id), str(partners.id)],
        },
    )
    assert response.status_code == 302
    circular = session.scalars(select(Circular)).one()
    assert path_of(response) == f"/admin/circulars/{circular.id}"
    assert circular.title == "Global Compact: last round"
    assert circular.body_markdown == "Dear colleagues,\n\n**Save the date.**"
    assert sorted(item.slug for item in circular.lists) == ["members", "partners"]
    assert circular.number is None
    assert circular.is_draft

    page = client.get(path_of(response))
    assert page.status_code == 200
    assert flashes(page.text)[0].startswith("Draft saved.")
    assert 'value="Global Compact: last round"' in page.text


def test_title_with_a_line_break_is_refused_inline(admin, session):
    response = admin.post_form(
        "/admin/circulars/new",
        "/admin/circulars/new",
        {"title": "Hello\r\nBcc: everyone@example.org", "body": "Text"},
    )
    assert response.status_code == 400
    assert '<p class="error" id="title-error">Must be a single line.</p>' in response.text
    assert count(session, Circular) == 0


def test_editing_a_draft_with_a_line_break_in_the_title_keeps_the_draft(admin, session):
    draft = make_draft(session, title="Original")
    url = f"/admin/circulars/{draft.id}"
    response = admin.post_form(url, url, {"title": "New\nline", "body": "x", "revision": "1"})
    assert response.status_code == 400
    assert "Must be a single line." in response.text
    session.expire_all()
    stored = session.get(Circular, draft.id)
    assert stored.title == "Original"
    assert stored.revision == 1


def test_stale_save_is_refused_and_overwrites_nothing(admin, client, session):
    draft = make_draft(session, title="Original", body="Original text")
    url = f"/admin/circulars/{draft.id}"
    page = client.get(url)
    assert 'name="revision" type="hidden" value="1"' in page.text
    token = csrf_token(page.text)

    theirs = client.post(
        url,
        data={"title": "Their version", "body": "Their text", "revision": "1", "csrf_token": token},
    )
    assert theirs.status_code == 302
    mine = client.post(
        url,
        data={"title": "My version", "body": "My own text", "revision": "1", "csrf_token": token},
    )
    assert mine.status_code == 409
    assert "Someone else saved this draft after you opened it." in mine.text
    assert "My own text" in mine.text  # shown so the editor can copy it

    session.expire_all()
    stored = session.get(Circular, draft.id)
    assert stored.title == "Their version"
    assert stored.body_markdown == "Their text"
    assert stored.revision == 2


# --- attachments --------------------------------------------------------------------------


def test_attach_a_file_with_a_non_ascii_name_and_download_it(admin, client, session):
    draft = make_draft(session)
    content = b"%PDF-1.4\n" + bytes(range(256)) * 40
    name = "Déclaration – finale.pdf"
    response = upload(admin, draft.id, content, name)
    assert response.status_code == 302
    assert path_of(response) == f"/admin/circulars/{draft.id}"

    page = client.get(f"/admin/circulars/{draft.id}")
    assert f"Attached {name}." in flashes(page.text)
    assert f">{name}</a>" in page.text
    attachment = session.scalars(select(Attachment)).one()
    assert attachment.circular_id == draft.id
    assert attachment.filename == name
    assert attachment.size == len(content)
    assert attachment.content_type == "application/pdf"
    assert attachment.sha256 == hashlib.sha256(content).hexdigest()

    download = client.get(f"/admin/attachments/{attachment.id}")
    assert download.status_code == 200
    assert download.data == content
    disposition = download.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert f"filename*=UTF-8''{quote(name)}" in disposition


def test_file_over_the_limit_is_refused_and_nothing_is_kept(admin, app, client, session):
    draft = make_draft(session)
    content = b"%PDF-1.4\n" + b"x" * (2 * 1024 * 1024 + 512 * 1024)  # 2.5 MB, limit 2 MB
    response = upload(admin, draft.id, content, "big.pdf")
    assert response.status_code == 302

    page = client.get(f"/admin/circulars/{draft.id}")
    assert "Not attached: The file is larger than the limit of 2.0 MB." in flashes(page.text)
    assert "No attachments yet." in page.text
    assert count(session, Attachment) == 0
    store = app.extensions["circulars.files"]
    assert not store.path_for(hashlib.sha256(content).hexdigest()).exists()
    assert list(store.root.glob(".upload-*")) == []
    session.refresh(draft)
    assert draft.revision == 1


def test_request_body_over_the_limit_gets_a_413_page(admin, session):
    draft = make_draft(session)
    response = upload(admin, draft.id, b"x" * (4 * 1024 * 1024), "huge.pdf")
    assert response.status_code == 413
    assert "File too large" in response.text
    assert "Uploads may be at most 2.0 MB." in response.text
    assert count(session, Attachment) == 0


@pytest.mark.parametrize(
    ("sent_name", "shown_name"),
    [
        ("../../etc/passwd", "passwd"),
        ("invoice\u202efdp.exe", "invoice_fdp.exe"),
        ("..", "attachment"),
    ],
)
def test_file_name_is_made_safe_for_display(admin, client, session, sent_name, shown_name):
    draft = make_draft(session)
    response = upload(admin, draft.id, b"root:x:0:0:root:/root:/bin/sh\n", sent_name)
    assert response.status_code == 302
    attachment = session.scalars(select(Attachment)).one()
    assert attachment.filename == shown_name
    page = client.get(f"/admin/circulars/{draft.id}")
    assert f">{shown_name}</a>" in page.text
    download = client.get(f"/admin/attachments/{attachment.id}")
    assert download.data == b"root:x:0:0:root:/root:/bin/sh\n"
    assert "/" not in download.headers["Content-Disposition"].replace("UTF-8''", "")


def test_remove_an_attachment(admin, client, session):
    draft = make_draft(session)
    upload(admin, draft.id, b"%PDF-1.4 report", "report.pdf")
    attachment = session.scalars(select(Attachment)).one()
    delete_url = f"/admin/circulars/{draft.id}/attachments/{attachment.id}/delete"

    assert client.post(delete_url).status_code == 400  # no CSRF token: nothing removed
    assert count(session, Attachment) == 1

    response = admin.post_form(f"/admin/circulars/{draft.id}", delete_url, {})
    assert response.status_code == 302
    page = client.get(f"/admin/circulars/{draft.id}")
    assert "Removed report.pdf." in flashes(page.text)
    assert "No attachments yet." in page.text
    assert count(session, Attachment) == 0


# --- preview ------------------------------------------------------------------------------


def test_preview_shows_the_subject_with_the_next_number(admin, client, session):
    draft = make_draft(session, title="Annual meeting")
    page = client.get(f"/admin/circulars/{draft.id}/preview")
    assert page.status_code == 200
    assert '<dd id="preview-subject">Circular No. 1: Annual meeting</dd>' in page.text

    session.execute(update(Counter).where(Counter.name == "circular").values(value=41))
    session.commit()
    page = client.get(f"/admin/circulars/{draft.id}/preview")
    assert '<dd id="preview-subject">Circular No. 42: Annual meeting</dd>' in page.text
    # Previewing reserves nothing.
    assert counter_value(session) == 41
    session.refresh(draft)
    assert draft.number is None


def test_preview_email_is_sandboxed_and_shows_raw_html_as_text(admin, client, session):
    draft = make_draft(
        session,
        body="Dear colleagues,\n\nThe meeting is on **Monday**.\n\n<script>alert(1)</script>\n",
    )
    response = client.get(f"/admin/circulars/{draft.id}/preview/email.html")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert csp.startswith("sandbox")
    assert "allow-scripts" not in csp
    html = response.text
    assert "Circular No. 1" in html
    assert "Annual meeting" in html
    assert "<strong>Monday</strong>" in html
    assert "Dear Ana Sample," in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html

    page = client.get(f"/admin/circulars/{draft.id}/preview")
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text  # the plain-text part


# --- sending ------------------------------------------------------------------------------


@pytest.fixture
def audience(session: Any) -> tuple[MailingList, MailingList]:
    """Members (3) and partners (3 confirmed, 1 who left), with one person on both."""
    members = make_list(session, "members", "Members")
    partners = make_list(session, "partners", "Partners")
    subscribe(session, members, "amina@example.org", "li@example.org", "jose@example.org")
    subscribe(
        session, partners, "jose@example.org", "sara@example.org", "olga@example.org", "left@x.org"
    )
    gone = session.scalar(select(Subscriber.id).where(Subscriber.email == "left@x.org"))
    unsubscribe(session, gone, partners.id)
    session.commit()
    return members, partners


def test_send_page_counts_each_person_once(admin, client, session, audience):
    members, partners = audience
    draft = make_draft(session, lists=(members, partners))
    page = client.get(f"/admin/circulars/{draft.id}/send")
    assert page.status_code == 200
    assert '<p class="big" id="recipient-count">5 people will receive it.</p>' in page.text
    assert "Circular No. 1" in page.text

    page = client.get(f"/admin/circulars/{draft.id}/send?lists={members.id}")
    assert "3 people will receive it." in page.text
    page = client.get(f"/admin/circulars/{draft.id}/send?lists={partners.id}")
    assert "3 people will receive it." in page.text


def test_send_creates_a_send_and_shows_its_progress(admin, client, session, audience, enqueued):
    members, partners = audience
    draft = make_draft(session, lists=(members, partners))
    url = f"/admin/circulars/{draft.id}/send"
    response = admin.post_form(
        url, url, {"lists": [str(members.id), str(partners.id)], "expected": "5"}
    )
    assert response.status_code == 302
    send = session.scalars(select(Send)).one()
    assert path_of(response) == f"/admin/sends/{send.id}"
    assert enqueued == [(START_SEND, (send.id,))]
    assert sorted(item.slug for item in send.lists) == ["members", "partners"]
    session.refresh(draft)
    assert draft.number == 1
    assert not draft.is_draft
    assert counter_value(session) == 1

    page = client.get(path_of(response))
    assert page.status_code == 200
    assert "Sending Circular No. 1: Annual meeting." in flashes(page.text)
    progress = client.get(f"/admin/sends/{send.id}/progress.json")
    assert progress.status_code == 200
    data = progress.get_json()
    assert {"total", "sent", "failed", "percent"} <= data.keys()
    assert data["id"] == send.id
    assert data["sent"] == data["failed"] == data["percent"] == 0
    assert client.get("/admin/sends/999999/progress.json").status_code == 404

    # A sent circular is part of the record: no more edits, no more attachments.
    shown = client.get(f"/admin/circulars/{draft.id}")
    assert "can no longer be edited" in shown.text
    refused = upload(admin, draft.id, b"late", "late.pdf", page_url="/admin/circulars/new")
    assert refused.status_code == 409
    assert count(session, Attachment) == 0


def test_send_with_no_list_chosen_is_refused(admin, client, session, audience, enqueued):
    members, _partners = audience
    draft = make_draft(session, lists=(members,))
    url = f"/admin/circulars/{draft.id}/send"
    response = admin.post_form(url, url, {})
    assert response.status_code == 200
    assert "Choose at least one list to send to." in flashes(response.text)
    assert count(session, Send) == 0
    assert enqueued == []
    session.refresh(draft)
    assert draft.number is None
    assert draft.is_draft
    assert counter_value(session) == 0


def test_send_to_lists_with_nobody_is_refused(admin, client, session, enqueued):
    empty = make_list(session, "empty", "Empty")
    draft = make_draft(session, lists=(empty,))
    url = f"/admin/circulars/{draft.id}/send"
    page = client.get(url)
    assert "No one would receive it." in page.text
    # The page offers no send button; post as a stale or hand-made form would.
    response = admin.post_form("/admin/circulars/new", url, {"lists": [str(empty.id)]})
    assert response.status_code == 200
    assert any(
        message.startswith("No one would receive it: the chosen lists have no confirmed")
        for message in flashes(response.text)
    )
    assert count(session, Send) == 0
    assert enqueued == []
    session.refresh(draft)
    assert draft.number is None
    assert counter_value(session) == 0


# --- lists and subscribers ----------------------------------------------------------------


def test_new_list_checks_the_short_name(admin, client, session):
    bad = admin.post_form(
        "/admin/lists/new", "/admin/lists/new", {"slug": "Bad Slug!", "name": "Bad"}
    )
    assert bad.status_code == 400
    assert "Use lower-case letters, digits and hyphens." in bad.text
    assert count(session, MailingList) == 0

    created = admin.post_form(
        "/admin/lists/new",
        "/admin/lists/new",
        {"slug": "members", "name": "Members", "description": "Member organisations"},
    )
    assert created.status_code == 302
    assert "List Members created." in flashes(client.get(path_of(created)).text)

    again = admin.post_form(
        "/admin/lists/new", "/admin/lists/new", {"slug": "members", "name": "Other members"}
    )
    assert again.status_code == 400
    assert "A list with this short name exists already." in again.text
    assert session.scalars(select(MailingList.name)).all() == ["Members"]


def test_add_a_subscriber_by_hand(admin, client, session):
    make_list(session, "members", "Members")
    page_url = "/admin/lists/members"
    added = admin.post_form(
        page_url,
        "/admin/lists/members/subscribers",
        {"email": "Ana.Lopez@Example.ORG", "name": "Ana López", "organization": "MRN"},
    )
    assert added.status_code == 302
    page = client.get(page_url)
    assert "Added ana.lopez@example.org to Members." in flashes(page.text)
    assert "<td>Ana López</td>" in page.text
    subscriber = session.scalars(select(Subscriber)).one()
    assert (subscriber.email, subscriber.name) == ("ana.lopez@example.org", "Ana López")

    invalid = admin.post_form(
        page_url, "/admin/lists/members/subscribers", {"email": "not-an-address", "name": "X"}
    )
    assert invalid.status_code == 400
    assert re.search(r'<p class="error" id="email-error">Not a valid address: ', invalid.text)
    assert count(session, Subscriber) == 1


def test_someone_who_left_a_list_is_not_put_back_by_staff(admin, session):
    members = make_list(session, "members", "Members")
    subscriber, _ = add_to_list(session, members, "ana@example.org")
    unsubscribe(session, subscriber.id, members.id)
    session.commit()

    response = admin.post_form(
        "/admin/lists/members", "/admin/lists/members/subscribers", {"email": "ana@example.org"}
    )
    assert response.status_code == 400
    assert "ana@example.org unsubscribed from Members; only they can subscribe again." in (
        response.text
    )
    session.expire_all()
    assert session.scalars(select(Subscription.status)).all() == [SubscriptionStatus.UNSUBSCRIBED]


def test_subscribers_are_shown_fifty_a_page(admin, client, session):
    members = make_list(session, "members", "Members")
    for i in range(120):
        add_to_list(session, members, f"person{i:03d}@example.org", name=f"Person {i:03d}")
    session.commit()

    page = client.get("/admin/lists/members")
    emails = re.findall(r"<td>(person\d{3}@example\.org)</td>", page.text)
    assert len(emails) == 50
    assert emails[0] == "person000@example.org"
    assert emails[-1] == "person049@example.org"
    assert "Page 1 of 3" in page.text

    page = client.get("/admin/lists/members?page=3")
    emails = re.findall(r"<td>(person\d{3}@example\.org)</td>", page.text)
    assert emails == [f"person{i:03d}@example.org" for i in range(100, 120)]
    assert "Page 3 of 3" in page.text


def test_search_subscribers_by_name(admin, client, session):
    members = make_list(session, "members", "Members")
    add_to_list(session, members, "amina@example.org", name="Amina Diallo")
    add_to_list(session, members, "li@example.org", name="Li Wei")
    add_to_list(session, members, "sara@example.org", name="Sara", organization="Diallo Trust")
    session.commit()

    page = client.get("/admin/lists/members?q=WEI")
    assert re.findall(r"<td>(\S+@example\.org)</td>", page.text) == ["li@example.org"]
    page = client.get("/admin/lists/members?q=diallo")
    assert re.findall(r"<td>(\S+@example\.org)</td>", page.text) == [
        "amina@example.org",
        "sara@example.org",
    ]
    page = client.get("/admin/lists/members?q=nobody")
    assert "No subscriber matches “nobody”." in page.text


def test_remove_a_subscriber_from_a_list(admin, client, session):
    members = make_list(session, "members", "Members")
    partners = make_list(session, "partners", "Partners")
    subscribe(session, members, "ana@example.org", "li@example.org")
    subscribe(session, partners, "ana@example.org")
    ana = session.scalar(select(Subscriber).where(Subscriber.email == "ana@example.org"))

    response = admin.post_form(
        "/admin/lists/members", f"/admin/lists/members/subscribers/{ana.id}/remove", {}
    )
    assert response.status_code == 302
    page = client.get(response.headers["Location"])
    assert "Removed ana@example.org from Members." in flashes(page.text)
    assert "<td>ana@example.org</td>" not in page.text
    assert "<td>li@example.org</td>" in page.text
    lists = session.scalars(
        select(Subscription.list_id).where(Subscription.subscriber_id == ana.id)
    ).all()
    assert lists == [partners.id]
    assert session.get(Subscriber, ana.id) is not None  # the person and their history stay


def test_csv_import_reports_the_line_of_a_bad_row(admin, session):
    make_list(session, "members", "Members")
    content = (
        b"email,name,language,organization\n"
        b"ana@example.org,Ana,es,Red Migrante\n"
        b"not-an-address,Bob,en,\n"
        b"li@example.org,Li Wei,zh,\n"
    )
    response = import_csv(admin, "members", content)
    assert response.status_code == 200
    assert (
        "Imported: 2 added to the list (2 new subscribers), 0 already on it, 1 rows rejected."
        in flashes(response.text)
    )
    assert "Rejected rows" in response.text
    assert re.search(r"<tr><td>3</td><td>not-an-address</td><td>invalid address", response.text)
    assert sorted(session.scalars(select(Subscriber.email))) == [
        "ana@example.org",
        "li@example.org",
    ]


def test_csv_import_refuses_a_latin1_file(admin, session):
    make_list(session, "members", "Members")
    content = "email,name\njose@example.org,José Martínez\nana@example.org,Ana\n".encode("latin-1")
    response = import_csv(admin, "members", content)
    assert response.status_code == 400
    assert "Nothing was imported: The file is not UTF-8 text" in response.text
    assert count(session, Subscriber) == 0
    assert count(session, Subscription) == 0


# --- outbox -------------------------------------------------------------------------------


def test_outbox_is_absent_when_mail_goes_to_a_relay(admin, client):
    assert client.get("/admin/outbox").status_code == 404
    assert client.get("/admin/outbox/1234.abc").status_code == 404
    assert ">Outbox</a>" not in client.get("/admin/circulars").text


def test_capture_server_keeps_messages_for_the_outbox(tmp_path):
    port = free_port()
    controller = start_capture_server(tmp_path / "outbox", "127.0.0.1", port)
    try:
        message = EmailMessage()
        message["From"] = "secretariat@circulars.test"
        message["To"] = "ana@example.org"
        message["Subject"] = "Circular No. 7: Réunion annuelle"
        message.set_content("Bonjour à tous\n")
        message.add_alternative("<p>Bonjour à tous</p>", subtype="html")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.send_message(message)
    finally:
        controller.stop()

    box = Outbox(tmp_path / "outbox")
    items, total = box.summaries(0, 50)
    assert total == 1
    assert items[0].subject == "Circular No. 7: Réunion annuelle"
    assert items[0].to == "ana@example.org"
    captured = box.message(items[0].key)
    assert captured is not None
    assert captured["X-Captured-Envelope-To"] == "ana@example.org"
    assert captured.get_body(preferencelist=("plain",)).get_content().rstrip() == "Bonjour à tous"
    assert "<p>Bonjour à tous</p>" in captured.get_body(preferencelist=("html",)).get_content()
    assert box.message("../../secret_key") is None
    assert box.raw("nonexistent") is None
    assert box.clear() == 1
    assert box.summaries(0, 50) == ([], 0)


# --- a test send through the real worker --------------------------------------------------


def test_test_send_reaches_the_address_marked_as_a_test(
    admin, client, session, worker, smtp_server
):
    draft = make_draft(session, title="Annual meeting")
    page_url = f"/admin/circulars/{draft.id}"
    response = admin.post_form(
        page_url, f"/admin/circulars/{draft.id}/test", {"address": "tester@example.org"}
    )
    assert response.status_code == 302
    page = client.get(page_url)
    assert "A test is on its way to tester@example.org." in flashes(page.text)
    session.remove()  # let the worker write (SQLite allows one writer at a time)

    smtp_server.wait_for(1)
    deadline = time.monotonic() + 60
    received = []
    while not received and time.monotonic() < deadline:
        received = [m for m in smtp_server.messages() if "tester@example.org" in m.rcpt_tos]
        time.sleep(0.1)
    assert received, "the test message did not arrive"
    subject = received[0].message["Subject"]
    assert subject.startswith("[Test] ")
    assert subject == "[Test] Annual meeting"
    assert count(session, Send) == 0
