"""The preference centre, reached from the signed link in every email: details, lists and
how they arrive, pause, download, leave everything and delete, each checked as the
subscriber sees it (the page after the redirect) and as the database keeps it."""

from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from itsdangerous.timed import TimestampSigner
from sqlalchemy import func, select

from circulars.models import (
    Circular,
    CircularStatus,
    ConsentAction,
    ConsentEvent,
    Delivery,
    DeliveryMode,
    DeliveryStatus,
    MailingList,
    Send,
    SendStatus,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionKind,
    SuppressionReason,
)
from circulars.sending.service import recipients_query
from circulars.subscribers import preferences as prefs
from circulars.subscribers.service import SubscriptionRefused, add_to_list
from circulars.subscribers.suppression import is_suppressed

from conftest import csrf_token

CONFIRMED = SubscriptionStatus.CONFIRMED
UNSUBSCRIBED = SubscriptionStatus.UNSUBSCRIBED
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) PreferencesTest/1.0"


@pytest.fixture
def lists(session: Any) -> dict[str, MailingList]:
    made = {
        "members": MailingList(slug="members", name="Member organisations"),
        "partners": MailingList(slug="partners", name="Partners", description="For partners"),
        "news": MailingList(slug="news", name="News"),
        "board": MailingList(slug="board", name="Board", public=False),
    }
    session.add_all(made.values())
    session.commit()
    return made


@pytest.fixture
def ana(session: Any, lists: dict[str, MailingList]) -> Subscriber:
    """Ana, confirmed on Member organisations and Partners."""
    subscriber, _ = add_to_list(session, lists["members"], "ana@example.org", name="Ana")
    add_to_list(session, lists["partners"], "ana@example.org")
    session.commit()
    return subscriber


@pytest.fixture
def ben(session: Any, lists: dict[str, MailingList]) -> Subscriber:
    """Ben, on the non-public Board list and on News."""
    subscriber, _ = add_to_list(session, lists["board"], "ben@example.org", name="Ben")
    add_to_list(session, lists["news"], "ben@example.org")
    session.commit()
    return subscriber


def token_for(app: Any, subscriber_id: int, purpose: str = "preferences") -> str:
    return str(app.extensions["circulars.tokens"].make(purpose, subscriber_id))


def url_for_subscriber(app: Any, subscriber: Subscriber) -> str:
    return f"/preferences/{token_for(app, subscriber.id)}"


def post(client: Any, page: str, path: str, data: dict[str, Any]) -> Any:
    """Submit a form of the page as a browser does: CSRF token from the page, its user agent."""
    shown = client.get(page)
    assert shown.status_code == 200, shown.status_code
    return client.post(
        page + path,
        data={**data, "csrf_token": csrf_token(shown.text)},
        headers={"User-Agent": BROWSER},
    )


def follow(client: Any, response: Any, page: str) -> str:
    """The page the redirect leads to, with its flash message."""
    assert response.status_code == 302, (response.status_code, response.text[:500])
    assert response.headers["Location"] == page
    shown = client.get(page)
    assert shown.status_code == 200
    return str(shown.text)


def statuses(session: Any, subscriber_id: int) -> dict[str, str]:
    session.expire_all()
    rows = session.execute(
        select(MailingList.slug, Subscription.status)
        .join(Subscription, Subscription.list_id == MailingList.id)
        .where(Subscription.subscriber_id == subscriber_id)
    ).all()
    return dict(rows)


def subscription(session: Any, subscriber_id: int, mailing_list: MailingList) -> Subscription:
    session.expire_all()
    found = session.scalar(
        select(Subscription).where(
            Subscription.subscriber_id == subscriber_id,
            Subscription.list_id == mailing_list.id,
        )
    )
    assert found is not None
    return found


def events(session: Any, subscriber_id: int | None, action: str) -> list[ConsentEvent]:
    session.expire_all()
    return list(
        session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.subscriber_id == subscriber_id, ConsentEvent.action == action)
            .order_by(ConsentEvent.id)
        )
    )


def list_row(page: str, name: str) -> str:
    """The <li> of one list on the page."""
    for row in re.findall(r"<li id=\"list-\d+\">.*?</li>", page, re.S):
        if f'<strong class="list-name">{name}</strong>' in row:
            return str(row)
    raise AssertionError(f"{name} is not on the page")


def every_circular_recipients(session: Any, mailing_list: MailingList) -> set[str]:
    circular = session.scalar(select(Circular).where(Circular.title == "Circular for tests"))
    if circular is None:
        circular = Circular(title="Circular for tests")
        session.add(circular)
        session.flush()
    rows = session.execute(recipients_query(circular.id, [mailing_list.id])).all()
    return {row.email for row in rows}


# --- the page -----------------------------------------------------------------------------


def test_page_shows_every_section_and_the_lists(app, client, ana, ben, lists):
    page = url_for_subscriber(app, ana)
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    text = response.text
    assert "<title>Your preferences" in text
    assert "For <strong>ana@example.org</strong>." in text
    for heading in ("Your details", "Your lists", "Pause", "Your data", "Delete my data"):
        assert heading in text
    # Every public list; Board is not public and Ana is not on it.
    assert re.findall(r'<strong class="list-name">([^<]+)</strong>', text) == [
        "Member organisations",
        "News",
        "Partners",
    ]
    assert "Joined" in list_row(text, "Member organisations")
    assert 'value="leave"' in list_row(text, "Partners")
    assert "Not joined" in list_row(text, "News")
    assert 'value="join"' in list_row(text, "News")
    assert f'href="{page}/data.json"' in text

    # Ben sees the non-public list he is on, without a way to join others to it.
    bens = client.get(url_for_subscriber(app, ben)).text
    assert "Joined" in list_row(bens, "Board")
    assert "Not joined" in list_row(bens, "Member organisations")


def test_page_follows_the_subscribers_language(app, client, session, ana):
    ana.language = "ar"
    session.commit()
    text = client.get(url_for_subscriber(app, ana)).text
    assert '<html lang="ar" dir="rtl">' in text


# --- details ------------------------------------------------------------------------------


def test_change_name_organisation_and_language(app, client, session, ana):
    page = url_for_subscriber(app, ana)
    response = post(
        client,
        page,
        "/details",
        {"name": "Ana María", "organization": "Red de Migrantes", "language": "fr"},
    )
    shown = follow(client, response, page)
    assert '<html lang="fr" dir="ltr">' in shown  # the page now speaks the new language
    assert 'value="Ana María"' in shown
    assert 'value="Red de Migrantes"' in shown
    assert '<option selected value="fr">Français</option>' in shown
    session.expire_all()
    assert (ana.name, ana.organization, ana.language) == ("Ana María", "Red de Migrantes", "fr")
    [event] = events(session, ana.id, ConsentAction.PREFERENCES)
    assert event.source == "preference centre"
    assert event.user_agent == BROWSER
    assert event.ip == "127.0.0.1"
    assert event.detail == "changed: name, organization, language en -> fr"
    assert "Ana" not in (event.detail or "")  # the record names fields, not a copy of them

    # Saving the same again changes nothing and records nothing.
    again = post(
        client,
        page,
        "/details",
        {"name": "Ana María", "organization": "Red de Migrantes", "language": "fr"},
    )
    assert again.status_code == 302
    assert len(events(session, ana.id, ConsentAction.PREFERENCES)) == 1


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"name": "Ana", "organization": "", "language": "xx"}, "Not a valid choice"),
        ({"name": "Ana\nBcc: x@example.org", "organization": "", "language": "en"}, "single line"),
        ({"name": "A" * 201, "organization": "", "language": "en"}, "At most 200 characters."),
    ],
)
def test_bad_details_are_refused_inline_and_change_nothing(app, client, session, ana, data, error):
    page = url_for_subscriber(app, ana)
    response = post(client, page, "/details", data)
    assert response.status_code == 400
    assert error in response.text
    assert 'class="field has-error"' in response.text
    session.expire_all()
    assert (ana.name, ana.language) == ("Ana", "en")
    assert events(session, ana.id, ConsentAction.PREFERENCES) == []


def test_only_supported_languages_in_the_domain(session, ana):
    with pytest.raises(prefs.PreferenceError):
        prefs.update_profile(
            session, ana, name="Ana", organization="", language="de", origin=prefs.Origin()
        )
    # A language an import set earlier may stay while other fields change.
    ana.language = "es"
    session.flush()
    assert prefs.update_profile(
        session, ana, name="Ana M", organization="", language="es", origin=prefs.Origin()
    ) == ["name"]


# --- lists --------------------------------------------------------------------------------


def test_join_a_public_list(app, client, session, ana, lists):
    page = url_for_subscriber(app, ana)
    response = post(
        client, page, f"/lists/{lists['news'].id}", {"action": "join", "delivery": "monthly"}
    )
    shown = follow(client, response, page)
    assert "You joined News." in shown
    assert "Joined" in list_row(shown, "News")
    assert '<option value="monthly" selected>' in list_row(shown, "News")
    joined = subscription(session, ana.id, lists["news"])
    assert joined.status == CONFIRMED
    assert joined.delivery == DeliveryMode.MONTHLY
    assert joined.confirmed_at is not None
    [event] = events(session, ana.id, ConsentAction.JOINED)
    assert event.list_id == lists["news"].id
    assert (event.ip, event.user_agent, event.source) == ("127.0.0.1", BROWSER, "preference centre")
    assert event.consent_text == "Join News"

    # A second click (another tab) changes nothing more.
    again = post(client, page, f"/lists/{lists['news'].id}", {"action": "join"})
    assert "You are on News already." in follow(client, again, page)
    assert len(events(session, ana.id, ConsentAction.JOINED)) == 1


def test_joining_confirms_a_pending_subscription(app, client, session, ana, lists):
    session.add(
        Subscription(
            subscriber_id=ana.id, list_id=lists["news"].id, status=SubscriptionStatus.UNCONFIRMED
        )
    )
    session.commit()
    page = url_for_subscriber(app, ana)
    assert "Not confirmed yet" in list_row(client.get(page).text, "News")
    response = post(client, page, f"/lists/{lists['news'].id}", {"action": "join"})
    assert "You joined News." in follow(client, response, page)
    assert subscription(session, ana.id, lists["news"]).status == CONFIRMED


def test_a_non_public_list_cannot_be_joined(app, client, session, ana, lists):
    page = url_for_subscriber(app, ana)
    response = post(client, page, f"/lists/{lists['board'].id}", {"action": "join"})
    assert "This list cannot be joined here." in follow(client, response, page)
    assert "board" not in statuses(session, ana.id)
    assert events(session, ana.id, ConsentAction.JOINED) == []


def test_leave_one_list_keeps_the_others(app, client, session, ana, lists):
    page = url_for_subscriber(app, ana)
    response = post(client, page, f"/lists/{lists['members'].id}", {"action": "leave"})
    shown = follow(client, response, page)
    assert "You left Member organisations." in shown
    assert "Not joined" in list_row(shown, "Member organisations")
    assert "Joined" in list_row(shown, "Partners")
    assert statuses(session, ana.id) == {"members": UNSUBSCRIBED, "partners": CONFIRMED}
    assert subscription(session, ana.id, lists["members"]).unsubscribed_at is not None
    assert ana.status == SubscriberStatus.ACTIVE
    assert is_suppressed(session, "ana@example.org") is None
    [event] = events(session, ana.id, ConsentAction.LEFT)
    assert event.list_id == lists["members"].id

    again = post(client, page, f"/lists/{lists['members'].id}", {"action": "leave"})
    assert "You are not on this list." in follow(client, again, page)
    assert len(events(session, ana.id, ConsentAction.LEFT)) == 1


def test_digest_readers_drop_out_of_the_per_circular_send(app, client, session, ana, lists):
    assert every_circular_recipients(session, lists["partners"]) == {"ana@example.org"}
    page = url_for_subscriber(app, ana)
    response = post(
        client, page, f"/lists/{lists['partners'].id}", {"action": "delivery", "delivery": "weekly"}
    )
    shown = follow(client, response, page)
    assert "Partners: Weekly digest from now on." in shown
    assert '<option value="weekly" selected>' in list_row(shown, "Partners")
    assert subscription(session, ana.id, lists["partners"]).delivery == DeliveryMode.WEEKLY
    # Still on the list (the digest brings it), but not in a send of each circular...
    assert statuses(session, ana.id)["partners"] == CONFIRMED
    assert every_circular_recipients(session, lists["partners"]) == set()
    # ...while the list she takes circular by circular is unchanged.
    assert every_circular_recipients(session, lists["members"]) == {"ana@example.org"}
    [event] = events(session, ana.id, ConsentAction.PREFERENCES)
    assert event.detail == "delivery every -> weekly"

    back = post(
        client, page, f"/lists/{lists['partners'].id}", {"action": "delivery", "delivery": "every"}
    )
    follow(client, back, page)
    assert every_circular_recipients(session, lists["partners"]) == {"ana@example.org"}


def test_an_unknown_delivery_mode_changes_nothing(app, client, session, ana, lists):
    page = url_for_subscriber(app, ana)
    response = post(
        client, page, f"/lists/{lists['partners'].id}", {"action": "delivery", "delivery": "daily"}
    )
    assert "That did not work" in follow(client, response, page)
    assert subscription(session, ana.id, lists["partners"]).delivery == DeliveryMode.EVERY


# --- pause --------------------------------------------------------------------------------


def test_pause_for_two_weeks_then_resume(app, client, session, ana, lists):
    page = url_for_subscriber(app, ana)
    response = post(client, page, "/pause", {"period": "2w"})
    shown = follow(client, response, page)
    zone = ZoneInfo(app.extensions["circulars.settings"].timezone)
    ends = datetime.now(zone).date() + timedelta(days=14)
    label = f"{ends.strftime('%B')} {ends.day}, {ends.year}"  # Babel's long English date
    assert f"Paused: we send you nothing until {label}." in shown
    assert "Resume now" in shown
    session.expire_all()
    assert ana.paused_until == datetime.combine(ends, datetime.min.time(), tzinfo=zone)
    assert every_circular_recipients(session, lists["members"]) == set()
    [event] = events(session, ana.id, ConsentAction.PREFERENCES)
    assert event.detail == f"paused until {ends.isoformat()}"

    response = post(client, page, "/resume", {})
    shown = follow(client, response, page)
    assert "Welcome back: mail starts again now." in shown
    assert "Resume now" not in shown
    session.expire_all()
    assert ana.paused_until is None
    assert every_circular_recipients(session, lists["members"]) == {"ana@example.org"}

    again = post(client, page, "/resume", {})
    assert "Nothing was paused." in follow(client, again, page)


def test_pause_until_a_date_excludes_until_that_date(app, client, session, ana, lists):
    page = url_for_subscriber(app, ana)
    today = datetime.now(ZoneInfo(app.extensions["circulars.settings"].timezone)).date()
    chosen = today + timedelta(days=40)
    response = post(client, page, "/pause", {"period": "date", "until": chosen.isoformat()})
    follow(client, response, page)
    session.expire_all()
    assert ana.paused_until is not None
    assert every_circular_recipients(session, lists["members"]) == set()
    # When the day comes, she is back in the next send without doing anything.
    ana.paused_until = datetime.now(UTC) - timedelta(minutes=1)
    session.commit()
    assert every_circular_recipients(session, lists["members"]) == {"ana@example.org"}
    assert "Paused:" not in client.get(page).text


@pytest.mark.parametrize(
    ("days", "error"),
    [
        (400, "A pause can last at most a year."),
        (0, "Choose a date after today."),
        (-3, "Choose a date after today."),
        (None, "Choose the date on which mail should start again."),
    ],
)
def test_a_bad_pause_date_is_refused_inline(app, client, session, ana, days, error):
    page = url_for_subscriber(app, ana)
    today = datetime.now(ZoneInfo(app.extensions["circulars.settings"].timezone)).date()
    until = "" if days is None else (today + timedelta(days=days)).isoformat()
    response = post(client, page, "/pause", {"period": "date", "until": until})
    assert response.status_code == 400
    assert error in response.text
    session.expire_all()
    assert ana.paused_until is None


def test_pause_presets_are_calendar_months():
    assert prefs.pause_end("1m", date(2026, 1, 31)) == date(2026, 2, 28)
    assert prefs.pause_end("3m", date(2026, 11, 30)) == date(2027, 2, 28)
    assert prefs.pause_end("2w", date(2026, 12, 25)) == date(2027, 1, 8)
    assert prefs.pause_end("date", date(2026, 3, 1), date(2027, 3, 1)) == date(2027, 3, 1)
    with pytest.raises(prefs.PreferenceError):
        prefs.pause_end("date", date(2026, 3, 1), date(2027, 3, 2))
    with pytest.raises(prefs.PreferenceError):
        prefs.pause_end("forever", date(2026, 3, 1))


# --- leave everything ---------------------------------------------------------------------


def test_leave_everything_asks_first_then_suppresses(app, client, session, ana, lists):
    page = url_for_subscriber(app, ana)
    confirm = client.get(page + "/leave")
    assert confirm.status_code == 200
    assert "Leave all our lists?" in confirm.text
    assert statuses(session, ana.id) == {"members": CONFIRMED, "partners": CONFIRMED}

    response = post(client, page + "/leave", "", {})
    shown = follow(client, response, page)
    assert "You left all our lists. We will send nothing more to this address." in shown
    assert "You have left all our lists" in shown
    assert statuses(session, ana.id) == {"members": UNSUBSCRIBED, "partners": UNSUBSCRIBED}
    session.expire_all()
    assert ana.status == SubscriberStatus.UNSUBSCRIBED
    suppression = is_suppressed(session, "ana@example.org")
    assert suppression is not None
    assert (suppression.reason, suppression.value) == (
        SuppressionReason.UNSUBSCRIBED,
        "ana@example.org",
    )
    [event] = events(session, ana.id, ConsentAction.UNSUBSCRIBED_ALL)
    assert event.source == "preference centre"

    # Staff and imports cannot put her back.
    with pytest.raises(SubscriptionRefused):
        add_to_list(session, lists["news"], "ana@example.org")
    session.rollback()

    # A second click: nothing more happens, nothing more is recorded.
    again = post(client, page + "/leave", "", {})
    assert "You had already left all our lists." in follow(client, again, page)
    assert len(events(session, ana.id, ConsentAction.UNSUBSCRIBED_ALL)) == 1


def test_joining_again_after_leaving_everything(app, client, session, ana, lists):
    page = url_for_subscriber(app, ana)
    follow(client, post(client, page + "/leave", "", {}), page)
    response = post(client, page, f"/lists/{lists['partners'].id}", {"action": "join"})
    assert "You joined Partners." in follow(client, response, page)
    session.expire_all()
    assert ana.status == SubscriberStatus.ACTIVE
    assert is_suppressed(session, "ana@example.org") is None  # her own wish, lifted by her
    assert statuses(session, ana.id) == {"members": UNSUBSCRIBED, "partners": CONFIRMED}
    assert every_circular_recipients(session, lists["partners"]) == {"ana@example.org"}


def test_a_bounced_address_cannot_join_by_itself(app, client, session, ana, lists):
    from circulars.subscribers.suppression import suppress

    suppress(session, email="ana@example.org", reason=SuppressionReason.HARD_BOUNCE)
    session.commit()
    page = url_for_subscriber(app, ana)
    response = post(client, page, f"/lists/{lists['news'].id}", {"action": "join"})
    assert "We cannot send mail to this address at the moment" in follow(client, response, page)
    assert "news" not in statuses(session, ana.id)


# --- download -----------------------------------------------------------------------------


def make_delivery(session: Any, subscriber: Subscriber, mailing_list: MailingList, number: int):
    circular = Circular(
        title=f"Circular No. {number}: Global Compact",
        number=number,
        status=CircularStatus.SENT,
    )
    session.add(circular)
    session.flush()
    send = Send(circular_id=circular.id, status=SendStatus.DONE)
    session.add(send)
    session.flush()
    delivery = Delivery(
        send_id=send.id,
        subscriber_id=subscriber.id,
        list_id=mailing_list.id,
        email=subscriber.email,
        name=subscriber.name,
        status=DeliveryStatus.SENT,
        sent_at=datetime(2026, 3, number, 9, 30, tzinfo=UTC),
    )
    session.add(delivery)
    session.commit()
    return delivery


def test_download_my_data(app, client, session, ana, lists):
    ana.attributes = {"country": "Chile", "member_since": "2019"}
    session.commit()
    make_delivery(session, ana, lists["members"], 27)
    make_delivery(session, ana, lists["partners"], 28)
    page = url_for_subscriber(app, ana)
    follow(client, post(client, page, f"/lists/{lists['members'].id}", {"action": "leave"}), page)

    response = client.get(page + "/data.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Content-Disposition"] == 'attachment; filename="my-data.json"'
    assert response.headers["Cache-Control"] == "no-store"
    data = json.loads(response.data)
    assert data["profile"]["email"] == "ana@example.org"
    assert data["profile"]["name"] == "Ana"
    assert data["profile"]["language"] == "en"
    assert data["attributes"] == {"country": "Chile", "member_since": "2019"}
    by_list = {item["list"]: item for item in data["subscriptions"]}
    assert by_list["Member organisations"]["status"] == "unsubscribed"
    assert by_list["Member organisations"]["unsubscribed_at"] is not None
    assert by_list["Partners"]["status"] == "confirmed"
    assert by_list["Partners"]["delivery"] == "every"
    assert [event["action"] for event in data["consent_events"]] == [
        "added_by_staff",
        "added_by_staff",
        "left",
    ]
    assert data["consent_events"][-1]["list"] == "Member organisations"
    assert data["consent_events"][-1]["user_agent"] == BROWSER
    assert [
        (d["circular_number"], d["circular_title"], d["status"]) for d in data["deliveries"]
    ] == [
        (27, "Circular No. 27: Global Compact", "sent"),
        (28, "Circular No. 28: Global Compact", "sent"),
    ]
    assert data["deliveries"][0]["date"] == "2026-03-27T09:30:00+00:00"


def test_download_pages_through_long_histories(session, ana, lists, monkeypatch):
    monkeypatch.setattr(prefs, "_EXPORT_PAGE", 2)
    for number in range(1, 6):
        make_delivery(session, ana, lists["members"], number)
    data = json.loads("".join(prefs.export_data(session, ana)))
    assert [d["circular_number"] for d in data["deliveries"]] == [1, 2, 3, 4, 5]
    assert len(data["consent_events"]) == 2


# --- delete -------------------------------------------------------------------------------


def test_delete_my_data_keeps_only_the_hash(app, client, session, ana, lists):
    make_delivery(session, ana, lists["members"], 27)
    page = url_for_subscriber(app, ana)
    follow(client, post(client, page, f"/lists/{lists['news'].id}", {"action": "join"}), page)
    ana_id = ana.id
    unsubscribe_link = f"/u/{token_for(app, ana_id, 'unsubscribe')}"

    confirm = client.get(page + "/delete")
    assert confirm.status_code == 200
    assert "Delete your data?" in confirm.text
    assert "We keep only a one-way hash of the address" in confirm.text
    assert session.get(Subscriber, ana_id) is not None  # asking changed nothing

    response = post(client, page + "/delete", "", {})
    assert response.status_code == 302
    assert response.headers["Location"] == "/preferences/deleted?lang=en"
    shown = client.get(response.headers["Location"])
    assert "Your data is deleted" in shown.text

    session.expire_all()
    address = "ana@example.org"
    assert session.scalar(select(Subscriber).where(Subscriber.email == address)) is None
    assert session.scalar(select(func.count()).select_from(Subscription)) == 0
    # Deliveries keep circular, date and status, but no address or name.
    delivery = session.scalar(select(Delivery))
    assert (delivery.email, delivery.name, delivery.subscriber_id) == ("", "", None)
    assert delivery.status == DeliveryStatus.SENT
    # Consent events are kept, with nothing that leads back to her.
    kept = list(session.scalars(select(ConsentEvent)))
    assert kept
    for event in kept:
        assert event.subscriber_id is None
        assert event.ip is None and event.user_agent is None
        assert address not in " ".join(
            str(value or "") for value in (event.source, event.detail, event.consent_text)
        )
    assert [event.action for event in kept][-1] == ConsentAction.DELETED
    # Only the hash of the address remains, and it still blocks a re-add.
    [suppression] = session.scalars(select(Suppression))
    assert suppression.kind == SuppressionKind.ADDRESS
    assert suppression.value is None
    assert suppression.value_hash == hashlib.sha256(address.encode()).hexdigest()
    assert suppression.reason == SuppressionReason.DELETED
    assert is_suppressed(session, address) is not None
    with pytest.raises(SubscriptionRefused):
        add_to_list(session, lists["members"], address)
    session.rollback()

    # Old links answer calmly and change nothing.
    gone = client.get(page)
    assert gone.status_code == 404
    assert "There is nothing to manage" in gone.text
    assert client.get(page + "/data.json").status_code == 404
    old = client.get(unsubscribe_link)
    assert old.status_code == 200
    assert "You are not subscribed" in old.text


def test_deleting_a_subscriber_who_had_left_everything(app, client, session, ana):
    page = url_for_subscriber(app, ana)
    follow(client, post(client, page + "/leave", "", {}), page)
    response = post(client, page + "/delete", "", {})
    assert response.status_code == 302
    session.expire_all()
    [suppression] = session.scalars(select(Suppression))
    assert (suppression.reason, suppression.value) == (SuppressionReason.DELETED, None)
    assert is_suppressed(session, "ana@example.org") is not None


# --- links that do not work ---------------------------------------------------------------


def tampered(token: str) -> str:
    payload, _dot, signature = token.rpartition(".")
    return f"{payload}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"


def token_made_days_ago(app: Any, monkeypatch: pytest.MonkeyPatch, days: int, sid: int) -> str:
    made_at = int(time.time()) - days * 86400
    with monkeypatch.context() as patch:
        patch.setattr(TimestampSigner, "get_timestamp", lambda _self: made_at)
        return token_for(app, sid)


FORMS = [
    ("/details", {"name": "Mallory", "organization": "", "language": "fr"}),
    ("/lists/{members}", {"action": "leave"}),
    ("/lists/{news}", {"action": "join"}),
    ("/lists/{partners}", {"action": "delivery", "delivery": "monthly"}),
    ("/pause", {"period": "3m"}),
    ("/leave", {}),
    ("/delete", {}),
]


def unchanged(session: Any, ana: Subscriber) -> None:
    session.expire_all()
    subscriber = session.get(Subscriber, ana.id)
    assert subscriber is not None
    assert (subscriber.name, subscriber.language, subscriber.status) == ("Ana", "en", "active")
    assert subscriber.paused_until is None
    assert statuses(session, ana.id) == {"members": CONFIRMED, "partners": CONFIRMED}
    assert {
        row.delivery
        for row in session.scalars(select(Subscription).where(Subscription.subscriber_id == ana.id))
    } == {DeliveryMode.EVERY}
    assert session.scalar(select(func.count()).select_from(Suppression)) == 0


def test_a_tampered_link_shows_the_link_error_and_changes_nothing(app, client, session, ana, lists):
    good = url_for_subscriber(app, ana)
    bad = f"/preferences/{tampered(token_for(app, ana.id))}"
    for path in ("", "/data.json", "/leave", "/delete"):
        response = client.get(bad + path)
        assert response.status_code == 400, path
        assert "This link does not work" in response.text
        assert "Nothing was changed." in response.text
    token = csrf_token(client.get(good).text)  # a valid CSRF token: only the link is wrong
    for path, data in FORMS:
        url = bad + path.format(**{slug: item.id for slug, item in lists.items()})
        response = client.post(url, data={**data, "csrf_token": token})
        assert response.status_code == 400, path
        assert "This link does not work" in response.text
    unchanged(session, ana)


def test_an_expired_link_shows_the_link_error_and_changes_nothing(
    app, client, session, ana, lists, monkeypatch
):
    max_age = app.extensions["circulars.settings"].unsubscribe_token_max_age_days
    expired = f"/preferences/{token_made_days_ago(app, monkeypatch, max_age + 1, ana.id)}"
    response = client.get(expired)
    assert response.status_code == 400
    assert "This link has expired" in response.text
    token = csrf_token(client.get(url_for_subscriber(app, ana)).text)
    for path, data in FORMS:
        url = expired + path.format(**{slug: item.id for slug, item in lists.items()})
        assert client.post(url, data={**data, "csrf_token": token}).status_code == 400, path
    unchanged(session, ana)
    recent = f"/preferences/{token_made_days_ago(app, monkeypatch, max_age - 1, ana.id)}"
    assert client.get(recent).status_code == 200


def test_an_unsubscribe_link_does_not_open_the_preferences(app, client, session, ana, lists):
    wrong = f"/preferences/{token_for(app, ana.id, 'unsubscribe')}"
    assert client.get(wrong).status_code == 400
    token = csrf_token(client.get(url_for_subscriber(app, ana)).text)
    assert client.post(wrong + "/leave", data={"csrf_token": token}).status_code == 400
    unchanged(session, ana)


def test_a_link_for_an_unknown_subscriber(app, client):
    response = client.get("/preferences/" + token_for(app, 987654))
    assert response.status_code == 404
    assert "There is nothing to manage" in response.text


def test_one_subscribers_link_never_touches_another(app, client, session, ana, ben, lists):
    """Ana's link with the ids of Ben's lists: only Ana can change, never Ben."""
    page = url_for_subscriber(app, ana)
    for list_id, data in [
        (lists["board"].id, {"action": "leave"}),
        (lists["board"].id, {"action": "delivery", "delivery": "weekly"}),
        (lists["news"].id, {"action": "leave"}),
        (lists["news"].id, {"action": "delivery", "delivery": "monthly"}),
        (lists["board"].id, {"action": "join"}),
    ]:
        assert post(client, page, f"/lists/{list_id}", data).status_code == 302
    session.expire_all()
    assert statuses(session, ben.id) == {"board": CONFIRMED, "news": CONFIRMED}
    assert {
        row.delivery
        for row in session.scalars(select(Subscription).where(Subscription.subscriber_id == ben.id))
    } == {DeliveryMode.EVERY}
    assert statuses(session, ana.id) == {"members": CONFIRMED, "partners": CONFIRMED}
    assert (
        session.scalar(
            select(func.count())
            .select_from(ConsentEvent)
            .where(ConsentEvent.subscriber_id == ben.id)
        )
        == 2
    )  # the two staff adds of the fixture, nothing since
    # Leaving everything with Ana's link leaves Ben as he was.
    follow(client, post(client, page + "/leave", "", {}), page)
    assert statuses(session, ben.id) == {"board": CONFIRMED, "news": CONFIRMED}
    assert is_suppressed(session, "ben@example.org") is None


def test_forms_without_a_csrf_token_are_refused(app, client, session, ana, lists):
    page = url_for_subscriber(app, ana)
    client.get(page)  # the session cookie exists; the token is simply missing
    for path, data in FORMS + [("/resume", {})]:
        url = page + path.format(**{slug: item.id for slug, item in lists.items()})
        response = client.post(url, data=data)
        assert response.status_code == 400, path
        assert "The form has expired" in response.text
    unchanged(session, ana)
