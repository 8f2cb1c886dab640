"""The pages subscribers reach from the links in every email: unsubscribe (including
RFC 8058 one-click) and preferences, authorised by signed tokens; plus what every
page shares (security headers, health check)."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any

import pytest
from itsdangerous.timed import TimestampSigner
from sqlalchemy import select

from circulars.models import (
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
)
from circulars.subscribers.service import add_to_list
from circulars.subscribers.tokens import TokenError, TokenSigner

from conftest import IsolatedClient, csrf_token

CONFIRMED = SubscriptionStatus.CONFIRMED
UNSUBSCRIBED = SubscriptionStatus.UNSUBSCRIBED


@pytest.fixture
def ana(session: Any) -> tuple[Subscriber, MailingList, MailingList]:
    """Ana, confirmed on two lists."""
    members = MailingList(slug="members", name="Member organisations")
    partners = MailingList(slug="partners", name="Partners")
    session.add_all([members, partners])
    session.flush()
    subscriber, _ = add_to_list(session, members, "ana@example.org", name="Ana")
    add_to_list(session, partners, "ana@example.org")
    session.commit()
    return subscriber, members, partners


def make_token(app: Any, purpose: str, subscriber_id: int, list_id: int | None = None) -> str:
    return str(app.extensions["circulars.tokens"].make(purpose, subscriber_id, list_id))


def statuses(session: Any, subscriber_id: int) -> dict[str, str]:
    session.expire_all()
    rows = session.execute(
        select(MailingList.slug, Subscription.status)
        .join(Subscription, Subscription.list_id == MailingList.id)
        .where(Subscription.subscriber_id == subscriber_id)
    ).all()
    return {slug: status for slug, status in rows}


def subscriber_status(session: Any, subscriber_id: int) -> str:
    return str(session.scalar(select(Subscriber.status).where(Subscriber.id == subscriber_id)))


def tampered(token: str) -> str:
    """The same payload with a different signature (its first character changed)."""
    payload, _dot, signature = token.rpartition(".")
    return f"{payload}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"


def token_made_days_ago(app: Any, monkeypatch: pytest.MonkeyPatch, days: int, *args: Any) -> str:
    made_at = int(time.time()) - days * 86400
    with monkeypatch.context() as patch:
        patch.setattr(TimestampSigner, "get_timestamp", lambda _self: made_at)
        return make_token(app, *args)


def one_click(app: Any, token: str) -> Any:
    return IsolatedClient(app, app.response_class, use_cookies=False).post(
        f"/u/{token}", data={"List-Unsubscribe": "One-Click"}
    )


# --- unsubscribe --------------------------------------------------------------------------


def test_unsubscribe_link_asks_first_and_changes_nothing(app, client, session, ana):
    subscriber, members, _partners = ana
    token = make_token(app, "unsubscribe", subscriber.id, members.id)
    page = client.get(f"/u/{token}")
    assert page.status_code == 200
    assert (
        "Stop sending circulars of <strong>Member organisations</strong> to "
        "<strong>ana@example.org</strong>?" in page.text
    )
    assert f'<form method="post" action="/u/{token}">' in page.text
    assert statuses(session, subscriber.id) == {"members": CONFIRMED, "partners": CONFIRMED}


def test_one_click_unsubscribes_from_that_list_only(app, session, ana):
    subscriber, members, _partners = ana
    token = make_token(app, "unsubscribe", subscriber.id, members.id)
    response = one_click(app, token)
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.text == "Unsubscribed.\n"
    assert statuses(session, subscriber.id) == {"members": UNSUBSCRIBED, "partners": CONFIRMED}
    assert subscriber_status(session, subscriber.id) == SubscriberStatus.ACTIVE
    left_at = session.scalar(
        select(Subscription.updated_at).where(Subscription.list_id == members.id)
    )

    again = one_click(app, token)  # mail clients retry
    assert again.status_code == 200
    assert statuses(session, subscriber.id) == {"members": UNSUBSCRIBED, "partners": CONFIRMED}
    assert (
        session.scalar(select(Subscription.updated_at).where(Subscription.list_id == members.id))
        == left_at
    )


def test_confirmation_button_unsubscribes_and_offers_the_preferences(app, client, session, ana):
    subscriber, members, _partners = ana
    token = make_token(app, "unsubscribe", subscriber.id, members.id)
    client.get(f"/u/{token}")
    response = client.post(f"/u/{token}")  # the page's button: no CSRF token needed
    assert response.status_code == 200
    assert "You are unsubscribed" in response.text
    assert (
        "<strong>ana@example.org</strong> will no longer receive Member organisations."
        in response.text
    )
    assert statuses(session, subscriber.id) == {"members": UNSUBSCRIBED, "partners": CONFIRMED}

    link = re.search(
        r'<a href="(/preferences/[^"]+)">Manage your other subscriptions</a>', response.text
    )
    assert link
    preferences = client.get(link.group(1))
    assert preferences.status_code == 200
    assert "Partners" in preferences.text


def test_tampered_token_is_refused_and_changes_nothing(app, client, session, ana):
    subscriber, members, _partners = ana
    token = tampered(make_token(app, "unsubscribe", subscriber.id, members.id))
    for response in (client.get(f"/u/{token}"), one_click(app, token)):
        assert response.status_code == 400
        assert "This link does not work" in response.text
        assert "Nothing was changed." in response.text
    preferences = client.get(
        f"/preferences/{tampered(make_token(app, 'preferences', subscriber.id))}"
    )
    assert preferences.status_code == 400
    assert "This link does not work" in preferences.text
    assert statuses(session, subscriber.id) == {"members": CONFIRMED, "partners": CONFIRMED}


def test_expired_token_is_refused_and_changes_nothing(app, client, session, ana, monkeypatch):
    subscriber, members, _partners = ana
    max_age = app.extensions["circulars.settings"].unsubscribe_token_max_age_days
    expired = token_made_days_ago(
        app, monkeypatch, max_age + 1, "unsubscribe", subscriber.id, members.id
    )
    for response in (client.get(f"/u/{expired}"), one_click(app, expired)):
        assert response.status_code == 400
        assert "This link has expired" in response.text
        assert "Nothing was changed." in response.text
    assert statuses(session, subscriber.id) == {"members": CONFIRMED, "partners": CONFIRMED}

    # Just inside the limit the same kind of link still works.
    recent = token_made_days_ago(
        app, monkeypatch, max_age - 1, "unsubscribe", subscriber.id, members.id
    )
    assert client.get(f"/u/{recent}").status_code == 200


def test_token_signer_tells_expired_from_invalid(app):
    secret = app.extensions["circulars.settings"].secret_key
    signer = TokenSigner(secret, timedelta(seconds=-1))  # every token is already too old
    with pytest.raises(TokenError) as expired:
        signer.read("unsubscribe", signer.make("unsubscribe", 7, 3))
    assert expired.value.expired
    with pytest.raises(TokenError) as invalid:
        TokenSigner("another secret key, long enough", timedelta(days=1)).read(
            "unsubscribe", signer.make("unsubscribe", 7, 3)
        )
    assert not invalid.value.expired


def test_a_preferences_token_cannot_unsubscribe(app, client, session, ana):
    subscriber, members, _partners = ana
    preferences_token = make_token(app, "preferences", subscriber.id)
    for response in (client.get(f"/u/{preferences_token}"), one_click(app, preferences_token)):
        assert response.status_code == 400
        assert "This link does not work" in response.text
    unsubscribe_token = make_token(app, "unsubscribe", subscriber.id, members.id)
    assert client.get(f"/preferences/{unsubscribe_token}").status_code == 400
    assert statuses(session, subscriber.id) == {"members": CONFIRMED, "partners": CONFIRMED}


def test_links_from_a_test_send_change_nothing(app, client, session, ana):
    subscriber, _members, _partners = ana
    token = make_token(app, "unsubscribe", 0, 0)
    page = client.get(f"/u/{token}")
    assert page.status_code == 200
    assert "This link comes from a test message" in page.text
    assert one_click(app, token).status_code == 200
    assert statuses(session, subscriber.id) == {"members": CONFIRMED, "partners": CONFIRMED}


# --- preferences --------------------------------------------------------------------------


def test_preferences_page_lists_the_subscriptions(app, client, ana):
    subscriber, _members, _partners = ana
    page = client.get(f"/preferences/{make_token(app, 'preferences', subscriber.id)}")
    assert page.status_code == 200
    assert "For <strong>ana@example.org</strong>." in page.text
    assert re.findall(r'<strong class="list-name">([^<]+)</strong>', page.text) == [
        "Member organisations",
        "Partners",
    ]
    assert "Leave everything" in page.text


def test_preferences_unsubscribe_from_one_list(app, client, session, ana):
    subscriber, members, _partners = ana
    url = f"/preferences/{make_token(app, 'preferences', subscriber.id)}"
    page = client.get(url)
    response = client.post(
        f"{url}/lists/{members.id}", data={"action": "leave", "csrf_token": csrf_token(page.text)}
    )
    assert response.status_code == 302
    page = client.get(url)
    assert "You left Member organisations." in page.text
    assert statuses(session, subscriber.id) == {"members": UNSUBSCRIBED, "partners": CONFIRMED}
    assert subscriber_status(session, subscriber.id) == SubscriberStatus.ACTIVE


def test_preferences_unsubscribe_from_everything(app, client, session, ana):
    subscriber, _members, _partners = ana
    url = f"/preferences/{make_token(app, 'preferences', subscriber.id)}"
    page = client.get(f"{url}/leave")
    response = client.post(f"{url}/leave", data={"csrf_token": csrf_token(page.text)})
    assert response.status_code == 302
    assert response.headers["Location"] == url
    page = client.get(url)
    assert "You left all our lists." in page.text
    assert statuses(session, subscriber.id) == {"members": UNSUBSCRIBED, "partners": UNSUBSCRIBED}
    assert subscriber_status(session, subscriber.id) == SubscriberStatus.UNSUBSCRIBED


def test_preferences_post_needs_a_csrf_token(app, client, session, ana):
    subscriber, _members, _partners = ana
    url = f"/preferences/{make_token(app, 'preferences', subscriber.id)}"
    client.get(url)
    response = client.post(f"{url}/leave")
    assert response.status_code == 400
    assert "The form has expired" in response.text
    assert statuses(session, subscriber.id) == {"members": CONFIRMED, "partners": CONFIRMED}
    assert subscriber_status(session, subscriber.id) == SubscriberStatus.ACTIVE


def test_preferences_of_an_unknown_subscriber(app, client):
    page = client.get(f"/preferences/{make_token(app, 'preferences', 987654)}")
    assert page.status_code == 404
    assert "There is nothing to manage" in page.text


# --- what every page shares ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/admin/login", "/healthz", "/no-such-page"])
def test_security_headers(client, path):
    response = client.get(path)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'self'" in csp


def test_public_pages_carry_the_security_headers(app, client, ana):
    subscriber, members, _partners = ana
    response = client.get(f"/u/{make_token(app, 'unsubscribe', subscriber.id, members.id)}")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]


def test_health_check(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.text == "ok"


def test_home_leads_to_the_admin(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/circulars"
