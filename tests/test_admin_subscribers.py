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


def test_adding_a_suppressed_address_is_refused_then_allowed_with_a_reason(
    admin, client, session
):
    make_list(session)
    suppress(session, email="ana@example.org", reason="hard_bounce")
    session.commit()

    refused = admin.post_form(
        "/admin/lists/members", "/admin/lists/members/subscribers", {"email": "Ana@example.org"}
    )
    assert refused.status_code == 400
    assert "ana@example.org is on the suppression list (hard bounce)" in html.unescape(
        refused.text
    )
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
