"""The admin for subscribers at scale: the suppression list and its overrides, adding a
suppressed address anyway, searching and filtering subscribers, keyset pages, the detail
page, and bulk actions on a filter result."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from sqlalchemy import func, select

from circulars.models import (
    Circular,
    ConsentAction,
    ConsentEvent,
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionOverride,
    User,
)
from circulars.sending.service import count_recipients
from circulars.subscribers.service import add_to_list
from circulars.subscribers.suppression import is_suppressed, suppress

from conftest import csrf_token

FLASH_RE = re.compile(r'<p class="flash flash-(\w+)">(.*?)</p>', re.S)


def flashes(text: str) -> list[str]:
    return [html.unescape(message) for _category, message in FLASH_RE.findall(text)]


def sign_in(auth: Any, role: str = "admin") -> Any:
    email = f"{role}@example.org"
    auth.create_user(email, role)
    assert auth.login(email).status_code == 302
    return auth


@pytest.fixture
def admin(auth: Any) -> Any:
    return sign_in(auth, "admin")


def make_list(session: Any, slug: str = "members", name: str = "Members") -> MailingList:
    found = MailingList(slug=slug, name=name)
    session.add(found)
    session.commit()
    return found


def count(session: Any, model: Any, *where: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def path_of(response: Any) -> str:
    location = urlsplit(response.headers["Location"])
    return location.path + (f"?{location.query}" if location.query else "")


# --- adding a suppressed address by hand ---------------------------------------------------


def test_adding_a_suppressed_address_is_refused_then_allowed_with_a_reason(admin, client, session):
    make_list(session)
    suppress(session, email="ana@example.org", reason="hard_bounce")
    session.commit()

    refused = admin.post_form(
        "/admin/lists/members", "/admin/lists/members/subscribers", {"email": "Ana@example.org"}
    )
    assert refused.status_code == 400
    assert "ana@example.org is on the suppression list (hard bounce)" in html.unescape(refused.text)
    assert 'name="override_reason"' in refused.text  # the second step offers the reason field
    assert count(session, Subscription) == 0

    added = client.post(
        "/admin/lists/members/subscribers",
        data={
            "email": "ana@example.org",
            "override_reason": "She fixed her mailbox and asked by phone",
            "csrf_token": csrf_token(refused.text),
        },
    )
    assert added.status_code == 302
    assert "Added ana@example.org to Members." in flashes(client.get("/admin/lists/members").text)
    override = session.scalars(select(SuppressionOverride)).one()
    admin_user = session.scalars(select(User).where(User.email == "admin@example.org")).one()
    assert (override.email, override.user_id, override.reason) == (
        "ana@example.org",
        admin_user.id,
        "She fixed her mailbox and asked by phone",
    )
    assert is_suppressed(session, "ana@example.org") is None


def test_the_add_form_offers_no_override_for_ordinary_refusals(admin, session):
    members = make_list(session)
    add_to_list(session, members, "ana@example.org")
    session.commit()
    again = admin.post_form(
        "/admin/lists/members", "/admin/lists/members/subscribers", {"email": "ana@example.org"}
    )
    assert again.status_code == 400
    assert "already on Members" in again.text
    assert 'name="override_reason"' not in again.text


# --- the suppression list page -------------------------------------------------------------


def test_block_a_domain_shows_who_is_affected_and_the_send_leaves_them_out(admin, client, session):
    members = make_list(session)
    circular = Circular(title="Update")
    session.add(circular)
    for email in ("ana@spam.example.org", "bob@spam.example.org", "zoe@example.org"):
        add_to_list(session, members, email)
    session.commit()
    assert count_recipients(session, circular.id, [members.id]) == 3

    blocked = admin.post_form(
        "/admin/suppressions",
        "/admin/suppressions",
        {"value": "@Spam.Example.org", "note": "bought list"},
    )
    assert blocked.status_code == 302
    page = client.get("/admin/suppressions")
    assert "Blocked spam.example.org: 2 subscribers affected." in " ".join(flashes(page.text))
    assert "<td>spam.example.org</td>" in page.text and "bought list" in page.text
    assert "admin@example.org" in page.text  # who
    assert count_recipients(session, circular.id, [members.id]) == 1


def test_block_an_address_and_refuse_bad_input(admin, client, session):
    blocked = admin.post_form(
        "/admin/suppressions", "/admin/suppressions", {"value": "Eve@Example.org"}
    )
    assert blocked.status_code == 302
    row = session.scalars(select(Suppression)).one()
    assert (row.kind, row.value, row.reason) == ("address", "eve@example.org", "blocked")

    for bad, message in (
        ("not an address@", "Not a valid address"),
        ("no_dots", "Not a valid domain"),
        ("", "Enter an address or a domain."),
    ):
        refused = admin.post_form("/admin/suppressions", "/admin/suppressions", {"value": bad})
        assert refused.status_code == 400, bad
        assert message in refused.text
    assert count(session, Suppression) == 1

    no_token = client.post("/admin/suppressions", data={"value": "mallory@example.org"})
    assert no_token.status_code == 400
    assert count(session, Suppression) == 1


def test_search_finds_values_and_deleted_entries_by_address(admin, client, session):
    suppress(session, email="gone@example.org", reason="deleted")
    suppress(session, email="bounced@example.org", reason="hard_bounce")
    suppress(session, domain="spam.example.org", reason="blocked")
    session.commit()
    everything = client.get("/admin/suppressions")
    assert "deleted (hash only)" in everything.text
    assert "gone@example.org" not in everything.text

    by_part = client.get("/admin/suppressions?q=bounced")
    assert "bounced@example.org" in by_part.text and "spam.example.org" not in by_part.text
    by_hash = client.get("/admin/suppressions?q=Gone@example.org")
    assert "deleted (hash only)" in by_hash.text and "bounced@" not in by_hash.text
    by_kind = client.get("/admin/suppressions?kind=domain")
    assert "spam.example.org" in by_kind.text and "bounced@" not in by_kind.text
    assert "matches “nothing”" in client.get("/admin/suppressions?q=nothing").text


def test_remove_an_entry_after_confirming(admin, client, session):
    members = make_list(session)
    add_to_list(session, members, "ana@example.org")
    row = suppress(session, email="ana@example.org", reason="blocked")
    session.commit()
    url = f"/admin/suppressions/{row.id}/remove"

    confirm = client.get(url)
    assert confirm.status_code == 200
    assert "Remove from the suppression list?" in confirm.text
    assert count(session, Suppression) == 1  # GET changes nothing

    forged = client.post(url, data={"reason": "x"})
    assert forged.status_code == 400
    assert count(session, Suppression) == 1

    removed = client.post(
        url, data={"reason": "blocked by mistake", "csrf_token": csrf_token(confirm.text)}
    )
    assert removed.status_code == 302
    assert count(session, Suppression) == 0
    assert session.scalar(select(Subscriber.status)) == SubscriberStatus.ACTIVE
    overrides = client.get("/admin/suppressions/overrides")
    assert "blocked by mistake" in overrides.text and "ana@example.org" in overrides.text
    assert client.get(url).status_code == 404


def test_overrides_page_lists_who_why_and_where(admin, client, session):
    members = make_list(session)
    user = session.scalars(select(User)).one()
    suppress(session, email="ana@example.org", reason="complaint")
    add_to_list(session, members, "ana@example.org", override_reason="asked again", user_id=user.id)
    session.commit()
    page = client.get("/admin/suppressions/overrides")
    assert page.status_code == 200
    row = re.search(r"<tr>\s*<td>ana@example.org</td>.*?</tr>", page.text, re.S)
    assert row is not None
    for expected in ("spam complaint", "Members", "asked again", "admin@example.org"):
        assert expected in row.group(0)


def test_editors_see_the_list_but_cannot_change_it(auth, client, session):
    sign_in(auth, "editor")
    row = suppress(session, email="ana@example.org", reason="blocked")
    session.commit()
    page = client.get("/admin/suppressions")
    assert page.status_code == 200 and "ana@example.org" in page.text
    assert "Block an address or domain" not in page.text
    refused = auth.post_form(
        "/admin/circulars/new", "/admin/suppressions", {"value": "x@example.org"}
    )
    assert refused.status_code == 403
    assert client.get(f"/admin/suppressions/{row.id}/remove").status_code == 403
    assert count(session, Suppression) == 1


# --- subscribers: search, filters, keyset pages, detail --------------------------------------


def emails_on(page_text: str) -> list[str]:
    return re.findall(r'<td><a href="/admin/subscribers/\d+">([^<]+)</a></td>', page_text)


@pytest.fixture
def crowd(session):
    members = make_list(session, "members", "Members")
    partners = make_list(session, "partners", "Partners")
    for n in range(120):
        person, _ = add_to_list(
            session,
            members if n % 2 == 0 else partners,
            f"p{n:03d}@{'ngo' if n % 3 == 0 else 'example'}.org",
            name=f"Person {n:03d}",
            organization="Caritas" if n % 10 == 0 else "Red Cross",
            language="fr" if n % 4 == 0 else "en",
        )
        person.attributes = {"country": "Kenya" if n % 5 == 0 else "Chile"}
    session.commit()
    return members, partners


def test_keyset_pages_through_the_web_show_everyone_once(admin, client, session, crowd):
    seen: list[str] = []
    url = "/admin/subscribers"
    pages = 0
    while url:
        page = client.get(url)
        assert page.status_code == 200
        seen += emails_on(page.text)
        pages += 1
        found = re.search(r'<a href="([^"]+)" rel="next">', page.text)
        url = html.unescape(found.group(1)) if found else ""
    assert pages == 3
    assert len(seen) == len(set(seen)) == 120
    assert seen[0] == "p119@example.org"  # newest first

    last = client.get(
        f"/admin/subscribers?after={session.scalar(select(func.min(Subscriber.id))) + 20}"
    )
    back = re.search(r'<a href="([^"]+)" rel="prev">', last.text)
    previous = client.get(html.unescape(back.group(1)))
    assert len(emails_on(previous.text)) == 50


def test_search_and_filters_through_the_web(admin, client, session, crowd):
    members, _partners = crowd
    assert emails_on(client.get("/admin/subscribers?q=p007@").text) == ["p007@example.org"]
    assert len(emails_on(client.get("/admin/subscribers?q=%40ngo.org").text)) == 40
    assert emails_on(client.get("/admin/subscribers?q=person+042").text) == ["p042@ngo.org"]
    caritas = client.get("/admin/subscribers?q=caritas&order=oldest")
    assert emails_on(caritas.text)[:2] == ["p000@ngo.org", "p010@example.org"]
    assert "12 subscribers" in caritas.text
    on_members = client.get(f"/admin/subscribers?list={members.id}&language=fr&order=oldest")
    assert emails_on(on_members.text)[:3] == [
        "p000@ngo.org",
        "p004@example.org",
        "p008@example.org",
    ]
    assert "30 subscribers" in on_members.text
    kenya = client.get("/admin/subscribers?attribute=country%3DKenya")
    assert "24 subscribers" in kenya.text
    none = client.get("/admin/subscribers?q=nobody-at-all")
    assert "No subscriber matches these filters." in none.text
    bad = client.get("/admin/subscribers?status=zombie&language=fr")
    assert bad.status_code == 200
    assert "Choose active, unsubscribed or blocked." in bad.text
    assert "30 subscribers" in bad.text  # the language filter still applies


def test_subscriber_detail_shows_profile_lists_consent_and_suppression(admin, client, session):
    members = make_list(session)
    staff = session.scalars(select(User)).one()
    person, _ = add_to_list(
        session, members, "ana@example.org", name="Ana", language="pt", user_id=staff.id
    )
    person.attributes = {"country": "Brazil"}
    suppress(session, domain="example.org", reason="blocked")
    session.commit()
    page = client.get(f"/admin/subscribers/{person.id}")
    assert page.status_code == 200
    text = html.unescape(page.text)
    for expected in (
        "ana@example.org",
        "Brazil",
        "Members",
        "every circular",
        "added by staff",
        "by admin@example.org",
        "On the suppression list (domain example.org: blocked by the secretariat)",
        "Nothing sent to this address yet.",
    ):
        assert expected in text, expected
    assert client.get("/admin/subscribers/999999").status_code == 404


# --- bulk actions ------------------------------------------------------------------------------


def confirmation(client: Any, query: dict[str, Any]) -> Any:
    page = client.get("/admin/subscribers/bulk?" + urlencode(query))
    assert page.status_code == 200, page.text
    return page


def confirm_it(client: Any, page: Any) -> Any:
    """Press the button on the confirmation page, sending its hidden fields as a browser does."""
    form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page.text))
    form = {key: html.unescape(value) for key, value in form.items()}
    form["csrf_token"] = csrf_token(page.text)
    return client.post("/admin/subscribers/bulk", data=form)


def bulk(admin: Any, client: Any, query: dict[str, Any]) -> tuple[Any, Any]:
    """Open the confirmation page, then confirm it: (confirmation, result)."""
    page = confirmation(client, query)
    return page, confirm_it(client, page)


def affected(confirm: Any) -> str:
    found = re.search(r'<p class="big" id="affected">(.*?)</p>', confirm.text, re.S)
    assert found
    return html.unescape(found.group(1))


def test_bulk_add_to_a_list_skips_the_suppressed_and_counts_them(admin, client, session, crowd):
    members, partners = crowd
    suppress(session, email="p001@example.org", reason="hard_bounce")  # on partners
    suppress(session, domain="ngo.org", reason="blocked")
    session.commit()
    # Everyone on partners (odd numbers: 60), to members as well.
    confirm = confirmation(client, {"list": partners.id, "action": "add", "target": members.id})
    # 60 on partners; 20 of them at ngo.org (suppressed domain) and p001: 21 suppressed.
    assert 'The filter matches <strong id="matched">60</strong>' in confirm.text
    assert affected(confirm) == "39 will be added to Members."
    assert "21 on the suppression list" in confirm.text
    assert count(session, Subscription) == 120  # the confirmation page changed nothing
    done = confirm_it(client, confirm)
    assert done.status_code == 302
    message = flashes(client.get(path_of(done)).text)
    assert "Added 39 subscribers to Members. Skipped: 21 suppressed." in message
    assert count(session, Subscription, Subscription.list_id == members.id) == 60 + 39
    staff_adds = count(session, ConsentEvent, ConsentEvent.source == "admin: bulk add")
    assert staff_adds == 39

    again = confirmation(client, {"list": partners.id, "action": "add", "target": members.id})
    assert affected(again) == "0 will be added to Members."
    assert "39 already on it." in again.text


def test_bulk_remove_and_unsubscribe_from_a_list(admin, client, session, crowd):
    members, _partners = crowd
    confirm, done = bulk(
        admin, client, {"q": "caritas", "action": "unsubscribe", "target": members.id}
    )
    # Caritas: every 10th person (12); the even ones (all of them) are on members.
    assert affected(confirm) == "12 will be unsubscribed from Members."
    assert done.status_code == 302
    statuses = session.scalars(
        select(Subscription.status).join(Subscriber).where(Subscriber.organization == "Caritas")
    ).all()
    assert statuses == [SubscriptionStatus.UNSUBSCRIBED] * 12
    assert count(session, ConsentEvent, ConsentEvent.action == ConsentAction.LEFT) == 12

    confirm, done = bulk(
        admin, client, {"language": "fr", "action": "remove", "target": members.id}
    )
    assert affected(confirm) == "30 will be removed from Members."
    assert done.status_code == 302
    assert count(session, Subscription, Subscription.list_id == members.id) == 30
    assert count(session, Subscriber) == 120  # people stay


def test_bulk_unsubscribe_from_everything_suppresses(admin, client, session, crowd):
    confirm, done = bulk(admin, client, {"q": "@ngo.org", "action": "unsubscribe", "target": "all"})
    assert affected(confirm) == "40 will be unsubscribed from every list."
    assert done.status_code == 302
    assert count(session, Subscriber, Subscriber.status == SubscriberStatus.UNSUBSCRIBED) == 40
    assert count(session, Suppression, Suppression.reason == "unsubscribed") == 40
    assert is_suppressed(session, "p003@ngo.org") is not None
    assert count(session, Subscription, Subscription.status == "confirmed") == 80


def test_bulk_action_needs_a_list_and_a_token(admin, client, session, crowd):
    members, _ = crowd
    missing = client.get("/admin/subscribers/bulk?action=add")
    assert missing.status_code == 302
    assert "Choose the list to add them to." in flashes(client.get(path_of(missing)).text)
    forged = client.post(
        "/admin/subscribers/bulk", data={"action": "remove", "target": str(members.id)}
    )
    assert forged.status_code == 400
    assert count(session, Subscription) == 120


def test_editors_cannot_run_bulk_actions(auth, client, session, crowd):
    members, _ = crowd
    sign_in(auth, "editor")
    page = client.get("/admin/subscribers")
    assert page.status_code == 200 and "Everyone matching" not in page.text
    assert (
        client.get(f"/admin/subscribers/bulk?action=remove&target={members.id}").status_code == 403
    )
    refused = auth.post_form(
        "/admin/circulars/new",
        "/admin/subscribers/bulk",
        {"action": "remove", "target": str(members.id)},
    )
    assert refused.status_code == 403
    assert count(session, Subscription) == 120


def test_export_of_a_filter_result(admin, client, session, crowd):
    pytest.importorskip("circulars.subscribers.export")
    confirm = confirmation(client, {"q": "caritas", "action": "export"})
    assert affected(confirm) == "12 subscribers will be exported."
    link = re.search(r'href="(/admin/subscribers/export\.csv[^"]*)"', confirm.text)
    download = client.get(html.unescape(link.group(1)))
    assert download.status_code == 200
    assert download.mimetype == "text/csv"
    lines = download.text.strip().splitlines()
    assert len(lines) == 13  # header and the 12 Caritas people
    assert all("Caritas" in line for line in lines[1:])


def test_large_bulk_actions_run_in_the_worker(admin, client, session, crowd, enqueued, monkeypatch):
    from circulars.subscribers.search import SubscriberFilter
    from circulars.tasks import BULK_SUBSCRIBERS
    from circulars.web.admin import subscribers as views

    members, partners = crowd
    monkeypatch.setattr(views, "INLINE_LIMIT", 10)
    confirm, done = bulk(admin, client, {"q": "caritas", "action": "add", "target": partners.id})
    assert done.status_code == 302
    assert "running in the background" in " ".join(flashes(client.get(path_of(done)).text))
    assert count(session, Subscription) == 120  # nothing done in the request
    [(name, args)] = [call for call in enqueued if call[0] == BULK_SUBSCRIBERS]
    filter_args, action, list_id, user_id = args
    assert SubscriberFilter.from_args(filter_args)[0] == SubscriberFilter(q="caritas")
    assert (action, list_id) == ("add", partners.id)
    assert user_id == session.scalars(select(User.id)).one()


@pytest.mark.integration
def test_a_large_bulk_action_is_done_by_a_real_worker(
    admin, client, session, crowd, worker, monkeypatch
):
    import time

    from circulars.web.admin import subscribers as views

    members, _partners = crowd
    monkeypatch.setattr(views, "INLINE_LIMIT", 10)
    _confirm, done = bulk(
        admin, client, {"q": "@ngo.org", "action": "unsubscribe", "target": "all"}
    )
    assert done.status_code == 302
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done_so_far = count(session, Subscriber, Subscriber.status == "unsubscribed")
        session.rollback()  # let go of SQLite's write lock, which the worker needs
        if done_so_far == 40:
            break
        time.sleep(0.3)
    assert count(session, Subscriber, Subscriber.status == "unsubscribed") == 40, (
        worker.log_path.read_text()[-2000:]
    )
    assert count(session, Suppression) == 40
