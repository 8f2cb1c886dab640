"""The admin for subscribers at scale: the suppression list and its overrides, adding a
suppressed address anyway, searching and filtering subscribers, keyset pages, the detail
page, and bulk actions on a filter result."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from circulars.models import (
    Circular,
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
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
