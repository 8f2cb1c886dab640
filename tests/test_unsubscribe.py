"""Unsubscribe links (RFC 8058 one-click and the confirmation page): one list at a time
unless the person asks for all, consent recorded, and calm answers for old links."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import func, select

from circulars.models import (
    ConsentAction,
    ConsentEvent,
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)
from circulars.subscribers import preferences as prefs
from circulars.subscribers.service import SubscriptionRefused, add_to_list, unsubscribe
from circulars.subscribers.suppression import is_suppressed

CONFIRMED = SubscriptionStatus.CONFIRMED
UNSUBSCRIBED = SubscriptionStatus.UNSUBSCRIBED
MAIL_CLIENT = "Mail-Provider-One-Click/2.0"


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


def link(app: Any, subscriber_id: int, list_id: int | None = None) -> str:
    return "/u/" + str(
        app.extensions["circulars.tokens"].make("unsubscribe", subscriber_id, list_id)
    )


def one_click(client: Any, url: str) -> Any:
    return client.post(
        url, data={"List-Unsubscribe": "One-Click"}, headers={"User-Agent": MAIL_CLIENT}
    )


def statuses(session: Any, subscriber_id: int) -> dict[str, str]:
    session.expire_all()
    rows = session.execute(
        select(MailingList.slug, Subscription.status)
        .join(Subscription, Subscription.list_id == MailingList.id)
        .where(Subscription.subscriber_id == subscriber_id)
    ).all()
    return dict(rows)


def events(session: Any, action: str) -> list[ConsentEvent]:
    session.expire_all()
    return list(
        session.scalars(
            select(ConsentEvent).where(ConsentEvent.action == action).order_by(ConsentEvent.id)
        )
    )


def suppressions(session: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(Suppression)) or 0)


# --- one click ----------------------------------------------------------------------------


def test_one_click_without_cookies_leaves_that_list_only(app, fresh_client, session, ana):
    subscriber, members, _partners = ana
    response = one_click(fresh_client, link(app, subscriber.id, members.id))
    assert response.status_code == 200
    assert response.text == "Unsubscribed.\n"
    assert "Set-Cookie" not in response.headers
    assert statuses(session, subscriber.id) == {"members": UNSUBSCRIBED, "partners": CONFIRMED}
    left = session.scalar(select(Subscription).where(Subscription.list_id == members.id))
    assert left.unsubscribed_at is not None
    session.expire_all()
    assert session.get(Subscriber, subscriber.id).status == SubscriberStatus.ACTIVE
    assert suppressions(session) == 0  # leaving one list is not leaving everything
    [event] = events(session, ConsentAction.LEFT)
    assert (event.subscriber_id, event.list_id) == (subscriber.id, members.id)
    assert (event.source, event.ip, event.user_agent) == ("one-click", "127.0.0.1", MAIL_CLIENT)

    # Providers retry: the second POST answers the same and records nothing more.
    again = one_click(fresh_client, link(app, subscriber.id, members.id))
    assert again.status_code == 200
    assert len(events(session, ConsentAction.LEFT)) == 1


def test_one_click_with_a_link_for_all_lists_suppresses(app, fresh_client, session, ana):
    subscriber, members, _partners = ana
    response = one_click(fresh_client, link(app, subscriber.id))
    assert response.status_code == 200
    assert statuses(session, subscriber.id) == {"members": UNSUBSCRIBED, "partners": UNSUBSCRIBED}
    session.expire_all()
    assert session.get(Subscriber, subscriber.id).status == SubscriberStatus.UNSUBSCRIBED
    suppression = is_suppressed(session, "ana@example.org")
    assert suppression is not None and suppression.reason == SuppressionReason.UNSUBSCRIBED
    [event] = events(session, ConsentAction.UNSUBSCRIBED_ALL)
    assert (event.source, event.user_agent) == ("one-click", MAIL_CLIENT)
    with pytest.raises(SubscriptionRefused):
        add_to_list(session, members, "ana@example.org")
    session.rollback()


# --- the confirmation page ----------------------------------------------------------------


def test_get_asks_and_changes_nothing(app, fresh_client, session, ana):
    subscriber, members, _partners = ana
    url = link(app, subscriber.id, members.id)
    page = fresh_client.get(url)
    assert page.status_code == 200
    assert (
        "Stop sending circulars of <strong>Member organisations</strong> to "
        "<strong>ana@example.org</strong>?" in page.text
    )
    assert f'<form method="post" action="{url}">' in page.text  # the button posts the same URL
    assert statuses(session, subscriber.id) == {"members": CONFIRMED, "partners": CONFIRMED}
    assert session.scalar(select(func.count()).select_from(ConsentEvent)) == 2  # the staff adds


def test_page_button_then_leave_all_my_lists(app, client, session, ana):
    subscriber, members, _partners = ana
    url = link(app, subscriber.id, members.id)
    client.get(url)
    response = client.post(url, headers={"User-Agent": "Firefox"})
    assert response.status_code == 200
    assert "You are unsubscribed" in response.text
    assert "<strong>ana@example.org</strong> will no longer receive Member organisations." in (
        response.text
    )
    assert "Your other subscriptions stay as they are." in response.text
    assert statuses(session, subscriber.id) == {"members": UNSUBSCRIBED, "partners": CONFIRMED}
    [event] = events(session, ConsentAction.LEFT)
    assert (event.source, event.user_agent) == ("unsubscribe page", "Firefox")

    # The page offers the preference centre...
    preferences = re.search(
        r'<a href="(/preferences/[^"]+)">Manage your other subscriptions</a>', response.text
    )
    assert preferences
    assert "Partners" in client.get(preferences.group(1)).text
    # ...and to leave everything, with the same token.
    form = re.search(r'<form method="post" action="(/u/[^"]+/all)">', response.text)
    assert form and form.group(1) == url + "/all"
    everything = client.post(form.group(1))
    assert everything.status_code == 200
    assert "has left all our lists" in everything.text
    assert statuses(session, subscriber.id) == {"members": UNSUBSCRIBED, "partners": UNSUBSCRIBED}
    assert is_suppressed(session, "ana@example.org") is not None
    [event] = events(session, ConsentAction.UNSUBSCRIBED_ALL)
    assert event.source == "unsubscribe page"

    # Coming back to the link later: nothing to do, calmly said.
    later = client.get(url)
    assert later.status_code == 200
    assert "is not subscribed to Member organisations" in later.text


def test_leave_all_needs_a_valid_link(app, fresh_client, session, ana):
    subscriber, members, _partners = ana
    url = link(app, subscriber.id, members.id)
    payload, _dot, signature = url.rpartition(".")
    forged = f"{payload}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
    response = fresh_client.post(forged + "/all")
    assert response.status_code == 400
    preferences_token = app.extensions["circulars.tokens"].make("preferences", subscriber.id)
    assert fresh_client.post(f"/u/{preferences_token}/all").status_code == 400
    assert statuses(session, subscriber.id) == {"members": CONFIRMED, "partners": CONFIRMED}
    assert suppressions(session) == 0


def test_a_deleted_subscribers_old_link_answers_calmly(app, client, fresh_client, session, ana):
    subscriber, members, _partners = ana
    url = link(app, subscriber.id, members.id)
    prefs.delete_data(session, subscriber, origin=prefs.Origin())
    session.commit()
    page = client.get(url)
    assert page.status_code == 200
    assert "You are not subscribed" in page.text
    clicked = client.post(url)
    assert clicked.status_code == 200
    assert "You are not subscribed" in clicked.text
    assert one_click(fresh_client, url).status_code == 200
    assert client.post(url + "/all").status_code == 200
    assert events(session, ConsentAction.LEFT) == []
    assert suppressions(session) == 1  # the hash kept by the deletion, nothing added


def test_unsubscribe_page_follows_the_subscribers_language(app, client, session, ana):
    subscriber, members, _partners = ana
    subscriber.language = "ar"
    session.commit()
    page = client.get(link(app, subscriber.id, members.id))
    assert '<html lang="ar" dir="rtl">' in page.text


# --- the service underneath ---------------------------------------------------------------


def test_unsubscribe_records_when_and_suppresses_only_for_all(session, ana):
    subscriber, members, partners = ana
    result = unsubscribe(session, subscriber.id, members.id)
    assert result is not None and [item.slug for item in result.lists] == ["members"]
    assert suppressions(session) == 0
    left = session.scalar(select(Subscription).where(Subscription.list_id == members.id))
    assert left.unsubscribed_at is not None
    result = unsubscribe(session, subscriber.id, None)
    assert result is not None and [item.slug for item in result.lists] == ["partners"]
    suppression = is_suppressed(session, "ana@example.org")
    assert suppression is not None
    assert (suppression.value, suppression.reason) == ("ana@example.org", "unsubscribed")
    assert unsubscribe(session, 987654, None) is None
