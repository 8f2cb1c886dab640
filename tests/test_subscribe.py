"""Subscribing with double opt-in: the page, the embedded form, the confirmation mail and link,
consent records, welcome mails, the purge, and the abuse protection (no enumeration,
honeypot, per-IP limit, per-address cool-down, global cap), on both stacks."""

from __future__ import annotations

import html
import re
import threading
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from itsdangerous.timed import TimestampSigner
from sqlalchemy import delete, func, select, update

from circulars.extensions import db
from circulars.mail import transactional
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
    SuppressionReason,
    utcnow,
)
from circulars.sending.service import count_recipients
from circulars.subscribers.optin import purge_unconfirmed, request_subscription
from circulars.subscribers.service import add_to_list
from circulars.subscribers.suppression import suppress
from circulars.tasks import SEND_CONFIRMATION, SEND_WELCOME

from conftest import IsolatedClient, csrf_token

UNCONFIRMED = SubscriptionStatus.UNCONFIRMED
CONFIRMED = SubscriptionStatus.CONFIRMED
CONFIRM_LINK = re.compile(r"http://circulars\.test/confirm/[A-Za-z0-9_.-]+")


@pytest.fixture
def lists(session: Any) -> dict[str, MailingList]:
    made = {
        "members": MailingList(
            slug="members",
            name="Member organisations",
            description="Circulars for member organisations",
            welcome_message="Welcome aboard! Our **next meeting** is in May.",
        ),
        "partners": MailingList(slug="partners", name="Partners"),
        "board": MailingList(slug="board", name="Board", public=False),
    }
    session.add_all(made.values())
    session.commit()
    return made


def subscribe(
    client: Any,
    email: str,
    slugs: list[str] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Any:
    page = client.get("/subscribe")
    assert page.status_code == 200
    data = {
        "csrf_token": csrf_token(page.text),
        "email": email,
        "lists": slugs if slugs is not None else ["members"],
        "language": "en",
        "website": "",
        **extra,
    }
    return client.post("/subscribe", data=data, headers=headers or {})


def count(session: Any, model: Any) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def subscriber(session: Any, email: str) -> Subscriber | None:
    session.expire_all()
    return session.scalar(select(Subscriber).where(Subscriber.email == email))


def statuses(session: Any, email: str) -> dict[str, str]:
    session.expire_all()
    rows = session.execute(
        select(MailingList.slug, Subscription.status)
        .join(Subscription, Subscription.list_id == MailingList.id)
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(Subscriber.email == email)
    ).all()
    return {slug: status for slug, status in rows}


def confirmations(enqueued: list[tuple[str, tuple[Any, ...]]]) -> list[tuple[Any, ...]]:
    return [args for name, args in enqueued if name == SEND_CONFIRMATION]


def run_confirmation_tasks(app: Any, enqueued: list[tuple[str, tuple[Any, ...]]]) -> list[str]:
    """What the worker's task does with each queued confirmation (worker/subscribe_tasks.py)."""
    settings = app.extensions["circulars.settings"]
    return [
        transactional.send_confirmation(
            db.session,
            subscriber_id,
            list_ids,
            app.extensions["circulars.send_context"],
            signer=app.extensions["circulars.confirm_tokens"],
            valid_days=settings.confirm_token_max_age_days,
            purge_days=settings.unconfirmed_purge_days,
        )
        for subscriber_id, list_ids in confirmations(enqueued)
    ]


def confirm_path(message: Any) -> str:
    text = message.get_body(("plain",)).get_content()
    link = CONFIRM_LINK.search(text)
    assert link, text
    return link.group(0).removeprefix("http://circulars.test")


def with_settings(app: Any, monkeypatch: pytest.MonkeyPatch, **changes: Any) -> None:
    current = app.extensions["circulars.settings"]
    monkeypatch.setitem(app.extensions, "circulars.settings", replace(current, **changes))


# --- the page ----------------------------------------------------------------------------


def test_page_lists_public_lists_preselects_and_shows_the_consent_text(client, lists):
    page = client.get("/subscribe?list=partners")

    assert page.status_code == 200
    assert "Member organisations" in page.text
    assert "Circulars for member organisations" in page.text
    assert "Board" not in page.text  # private
    assert re.search(r'value="partners" checked', page.text)
    assert not re.search(r'value="members" checked', page.text)
    assert "I agree that Migrant Rights Network sends me the circulars" in page.text
    assert 'name="website"' in page.text and "Leave this field empty" in page.text
    csrf_token(page.text)


def test_page_without_public_lists_says_so(client, session):
    session.add(MailingList(slug="board", name="Board", public=False))
    session.commit()

    page = client.get("/subscribe")

    assert page.status_code == 200
    assert "There are no lists open for subscription" in page.text
    assert "<form" not in page.text.split("<main", 1)[1]


def test_a_post_without_csrf_token_is_refused(client, session, lists, enqueued):
    response = client.post(
        "/subscribe", data={"email": "ana@example.org", "lists": ["members"], "website": ""}
    )
    assert response.status_code == 400
    assert count(session, Subscriber) == 0
    assert enqueued == []


@pytest.mark.parametrize(
    ("email", "slugs", "message"),
    [
        ("not an address", ["members"], "This is not a valid email address."),
        ("", ["members"], "Enter your email address."),
        ("ana@example.org", [], "Choose at least one list."),
        ("ana@example.org", ["board"], "Choose at least one list."),  # private: not offered
    ],
)
def test_bad_input_shows_the_form_again_and_stores_nothing(
    client, session, lists, enqueued, email, slugs, message
):
    response = subscribe(client, email, slugs, name="Ana")

    assert response.status_code == 400
    assert message in response.text
    assert 'value="Ana"' in response.text  # what was typed is kept
    assert count(session, Subscriber) == 0
    assert count(session, ConsentEvent) == 0
    assert enqueued == []


# --- a request ---------------------------------------------------------------------------


def test_subscribe_stores_unconfirmed_and_records_consent(client, session, lists, enqueued):
    response = subscribe(
        client,
        " Ana@Example.ORG ",
        ["members", "partners"],
        name="Ana Lima",
        language="fr",
        headers={"User-Agent": "Firefox/140", "X-Forwarded-For": "203.0.113.9"},
    )

    assert response.status_code == 200
    assert "Check your inbox" in response.text
    ana = subscriber(session, "ana@example.org")
    assert ana is not None and ana.name == "Ana Lima" and ana.language == "fr"
    assert ana.confirmation_sent_at is not None
    assert statuses(session, "ana@example.org") == {"members": UNCONFIRMED, "partners": UNCONFIRMED}
    events = session.scalars(select(ConsentEvent).order_by(ConsentEvent.list_id)).all()
    assert [(e.action, e.list_id) for e in events] == [
        (ConsentAction.REQUESTED, lists["members"].id),
        (ConsentAction.REQUESTED, lists["partners"].id),
    ]
    settings = client.application.extensions["circulars.settings"]
    for event in events:
        # No TRUSTED_PROXIES here, so a forged X-Forwarded-For is not believed.
        assert event.ip == "127.0.0.1"
        assert event.user_agent == "Firefox/140"
        assert event.source == "subscribe page"
        assert event.consent_text == settings.subscribe_consent_text
        assert event.subscriber_id == ana.id
    assert confirmations(enqueued) == [(ana.id, [lists["members"].id, lists["partners"].id])]


def test_confirmation_mail_reaches_the_smtp_server(
    app, client, session, lists, enqueued, smtp_server
):
    subscribe(client, "ana@example.org", ["members", "partners"], name="<b>Buy now</b>")

    assert run_confirmation_tasks(app, enqueued) == ["sent"]
    [received] = smtp_server.wait_for(1)
    message = received.message
    assert received.rcpt_tos == ["ana@example.org"]
    assert message["To"] == "ana@example.org"
    assert message["From"] == "Migrant Rights Network <secretariat@circulars.test>"
    assert message["Subject"] == "Please confirm your subscription to Migrant Rights Network"
    assert message["Auto-Submitted"] == "auto-generated"
    assert re.fullmatch(r"<confirm\.[0-9a-f]+@circulars\.test>", message["Message-ID"])
    assert message["Date"]
    assert "List-Unsubscribe" not in message  # it subscribes no one
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    for body in (text, html):
        assert "Member organisations" in body and "Partners" in body
        assert "valid for 7 days" in body
        assert "If you did not ask for this, ignore this message" in body
        assert "Buy now" not in body  # the typed name is not echoed to the mailbox
    assert CONFIRM_LINK.search(html)
    assert confirm_path(message).startswith("/confirm/")


def test_end_to_end_through_the_worker_exactly_one_mail(
    app, client, session, lists, worker, smtp_server
):
    response = subscribe(client, "ana@example.org", ["members"])
    assert response.status_code == 200
    session.remove()  # let the worker write (SQLite allows one writer at a time)

    [received] = smtp_server.wait_for(1)
    time.sleep(1)  # a second mail would have come by now
    assert len(smtp_server.messages()) == 1
    assert received.rcpt_tos == ["ana@example.org"]

    path = confirm_path(received.message)
    assert client.post(path).status_code == 200
    assert statuses(session, "ana@example.org") == {"members": CONFIRMED}
    session.remove()
    # The list has a welcome message: it follows through the worker.
    welcome = smtp_server.wait_for(2)[1].message
    assert welcome["Subject"] == "Welcome to Member organisations"


# --- no enumeration ------------------------------------------------------------------------


def test_same_answer_for_unknown_known_confirmed_and_blocked_addresses(
    client, fresh_client, session, lists, enqueued
):
    add_to_list(session, lists["members"], "known@example.org")  # confirmed by staff
    session.add(Subscriber(email="pending@example.org"))
    suppress(session, email="blocked@example.org", reason=SuppressionReason.BLOCKED)
    suppress(session, domain="blocked-domain.example.org", reason=SuppressionReason.BLOCKED)
    session.commit()

    bodies = {}
    for email in (
        "new@example.org",
        "known@example.org",
        "pending@example.org",
        "blocked@example.org",
        "someone@blocked-domain.example.org",
    ):
        response = subscribe(client, email, ["members"])
        assert response.status_code == 200, email
        bodies[email] = response.text
    assert len(set(bodies.values())) == 1, "the answer must not depend on the address"

    mailed = {args[0] for args in confirmations(enqueued)}
    ids = {email: subscriber(session, email).id for email in bodies}
    assert mailed == {ids["new@example.org"], ids["pending@example.org"]}
    # Already confirmed: nothing to confirm, nothing changes.
    assert statuses(session, "known@example.org") == {"members": CONFIRMED}


def test_a_blocked_address_can_never_confirm(app, client, session, lists, enqueued):
    subscribe(client, "ana@example.org", ["members"])
    assert run_confirmation_tasks(app, enqueued) == ["sent"]
    signer = app.extensions["circulars.confirm_tokens"]
    ana = subscriber(session, "ana@example.org")
    token = signer.make_lists("confirm", ana.id, [lists["members"].id])
    suppress(session, email="ana@example.org", reason=SuppressionReason.BLOCKED)
    session.commit()

    response = client.post(f"/confirm/{token}")

    assert response.status_code == 200
    assert "Subscription not possible" in response.text
    assert statuses(session, "ana@example.org") == {"members": UNCONFIRMED}


# --- honeypot and the embedded form -----------------------------------------------------------


def test_honeypot_filled_pretends_success_and_stores_nothing(client, session, lists, enqueued):
    response = subscribe(client, "bot@example.org", ["members"], website="http://spam.example")

    assert response.status_code == 200
    assert response.text == subscribe(client, "real@example.org", ["members"]).text
    assert subscriber(session, "bot@example.org") is None
    assert [e.subscriber_id for e in session.scalars(select(ConsentEvent))] == [
        subscriber(session, "real@example.org").id
    ]
    assert len(confirmations(enqueued)) == 1


def embed_post(app: Any, data: dict[str, Any], **headers: str) -> Any:
    """A browser on another website: no cookie of ours, no CSRF token."""
    return IsolatedClient(app, app.response_class, use_cookies=False).post(
        "/subscribe/embed", data=data, headers=headers
    )


EMBED = {"email": "ana@example.org", "lists": ["members"], "website": ""}


def test_embedded_form_works_without_csrf_and_records_the_site(app, session, lists, enqueued):
    response = embed_post(app, EMBED, Referer="https://partner.example/join-us")

    assert response.status_code == 200
    assert "Check your inbox" in response.text
    event = session.scalar(select(ConsentEvent))
    assert event.source == "embed: https://partner.example/join-us"
    assert event.ip == "127.0.0.1"
    assert statuses(session, "ana@example.org") == {"members": UNCONFIRMED}
    assert len(confirmations(enqueued)) == 1


def test_embedded_form_falls_back_to_origin(app, session, lists, enqueued):
    embed_post(app, EMBED, Origin="https://partner.example")
    assert session.scalar(select(ConsentEvent.source)) == "embed: https://partner.example"


@pytest.mark.parametrize("honeypot", [None, "filled"])
def test_embedded_post_without_empty_honeypot_stores_nothing(
    app, session, lists, enqueued, honeypot
):
    data = {k: v for k, v in EMBED.items() if k != "website"}
    if honeypot:
        data["website"] = honeypot

    response = embed_post(app, data)

    assert response.status_code == 200
    assert "Check your inbox" in response.text
    assert count(session, Subscriber) == 0
    assert enqueued == []


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/phish",
        "//evil.example/phish",
        "https://partner.example.evil.example/",
        "https://partner.example@evil.example/",
        "javascript:alert(1)",
    ],
)
def test_embedded_form_never_redirects_off_the_allow_list(
    app, session, lists, enqueued, monkeypatch, target
):
    with_settings(app, monkeypatch, embed_allowed_origins=("https://partner.example",))

    response = embed_post(app, {**EMBED, "next": target})

    assert response.status_code == 200
    assert "Location" not in response.headers
    assert "Check your inbox" in response.text


def test_embedded_form_redirects_to_an_allowed_origin(app, session, lists, enqueued, monkeypatch):
    with_settings(app, monkeypatch, embed_allowed_origins=("https://partner.example",))

    response = embed_post(app, {**EMBED, "next": "https://partner.example/thanks?x=1"})

    assert response.status_code == 303
    assert response.headers["Location"] == "https://partner.example/thanks?x=1"
    assert statuses(session, "ana@example.org") == {"members": UNCONFIRMED}


def test_embedded_form_with_a_bad_address_shows_our_form(app, session, lists, enqueued):
    response = embed_post(app, {**EMBED, "email": "nope"})

    assert response.status_code == 400
    assert "This is not a valid email address." in response.text
    assert count(session, Subscriber) == 0


# --- confirming ------------------------------------------------------------------------------


def requested_and_mailed(
    app: Any,
    client: Any,
    session: Any,
    enqueued: Any,
    smtp_server: Any,
    email: str = "ana@example.org",
    slugs: tuple[str, ...] = ("members", "partners"),
) -> str:
    subscribe(client, email, list(slugs))
    assert run_confirmation_tasks(app, enqueued) == ["sent"]
    enqueued.clear()
    return confirm_path(smtp_server.wait_for(1)[-1].message)


def test_confirm_link_get_changes_nothing_post_confirms_second_post_harmless(
    app, client, fresh_client, session, lists, enqueued, smtp_server
):
    path = requested_and_mailed(app, client, session, enqueued, smtp_server)

    page = fresh_client.get(path)
    assert page.status_code == 200
    assert "ana@example.org" in page.text
    assert "Member organisations" in page.text and "Partners" in page.text
    assert '<form method="post"' in page.text
    assert statuses(session, "ana@example.org") == {"members": UNCONFIRMED, "partners": UNCONFIRMED}
    assert count(session, ConsentEvent) == 2

    done = fresh_client.post(path, headers={"User-Agent": "Thunderbird"})
    assert done.status_code == 200
    assert "You are subscribed" in done.text
    assert "http://circulars.test/preferences/" in done.text
    assert statuses(session, "ana@example.org") == {"members": CONFIRMED, "partners": CONFIRMED}
    subscriptions = session.scalars(select(Subscription)).all()
    assert all(s.confirmed_at is not None for s in subscriptions)
    confirmed_events = session.scalars(
        select(ConsentEvent).where(ConsentEvent.action == ConsentAction.CONFIRMED)
    ).all()
    assert len(confirmed_events) == 2
    assert {e.user_agent for e in confirmed_events} == {"Thunderbird"}
    assert {e.ip for e in confirmed_events} == {"127.0.0.1"}
    # Only the list with a welcome message gets a welcome mail.
    ana = subscriber(session, "ana@example.org")
    assert enqueued == [(SEND_WELCOME, (ana.id, [lists["members"].id]))]

    again = fresh_client.post(path)
    assert again.status_code == 200
    assert "Already confirmed" in again.text
    assert count(session, ConsentEvent) == 4
    assert len(enqueued) == 1


def test_unconfirmed_subscribers_are_left_out_of_a_send(
    app, client, session, lists, enqueued, smtp_server
):
    add_to_list(session, lists["members"], "confirmed@example.org")
    circular = Circular(title="Update")
    session.add(circular)
    session.commit()
    path = requested_and_mailed(app, client, session, enqueued, smtp_server, slugs=("members",))

    assert count_recipients(session, circular.id, [lists["members"].id]) == 1
    client.post(path)
    assert count_recipients(session, circular.id, [lists["members"].id]) == 2


def test_welcome_mail_only_for_lists_with_a_message(
    app, client, session, lists, enqueued, smtp_server
):
    path = requested_and_mailed(app, client, session, enqueued, smtp_server)
    smtp_server.reset()
    client.post(path)
    ana = subscriber(session, "ana@example.org")
    ctx = app.extensions["circulars.send_context"]

    sent = transactional.send_welcome(
        session, ana.id, [lists["members"].id, lists["partners"].id], ctx
    )

    assert sent == 1
    [received] = smtp_server.wait_for(1)
    message = received.message
    assert message["Subject"] == "Welcome to Member organisations"
    assert "members.circulars.test" in message["List-Id"]
    assert message["List-Unsubscribe"].startswith("<http://circulars.test/u/")
    assert "Auto-Submitted" not in message
    html = message.get_body(("html",)).get_content()
    assert "<strong>next meeting</strong>" in html
    text = message.get_body(("plain",)).get_content()
    assert "Welcome aboard!" in text and "http://circulars.test/preferences/" in text


def test_expired_and_tampered_links_are_refused_and_change_nothing(
    app, client, session, lists, enqueued, smtp_server, monkeypatch
):
    subscribe(client, "ana@example.org", ["members"])
    ana = subscriber(session, "ana@example.org")
    signer = app.extensions["circulars.confirm_tokens"]
    with monkeypatch.context() as patch:
        made_at = int(time.time()) - 8 * 86400  # CONFIRM_TOKEN_MAX_AGE_DAYS is 7
        patch.setattr(TimestampSigner, "get_timestamp", lambda _self: made_at)
        expired = signer.make_lists("confirm", ana.id, [lists["members"].id])
    good = signer.make_lists("confirm", ana.id, [lists["members"].id])
    payload, _dot, signature = good.rpartition(".")
    tampered = f"{payload}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
    other_purpose = app.extensions["circulars.tokens"].make("preferences", ana.id)

    for token, words in [
        (expired, "This link has expired"),
        (tampered, "This link does not work"),
        (other_purpose, "This link does not work"),
    ]:
        for method in ("get", "post"):
            response = getattr(client, method)(f"/confirm/{token}")
            assert response.status_code == 400, (token, method)
            assert words in response.text
    assert statuses(session, "ana@example.org") == {"members": UNCONFIRMED}
    assert count(session, ConsentEvent) == 1


def test_confirming_after_leaving_everything_reactivates_and_lifts_own_suppression(
    app, client, session, lists, enqueued, smtp_server
):
    add_to_list(session, lists["members"], "ana@example.org")
    ana = subscriber(session, "ana@example.org")
    session.execute(update(Subscription).values(status=SubscriptionStatus.UNSUBSCRIBED))
    suppress(session, email="ana@example.org", reason=SuppressionReason.UNSUBSCRIBED)
    session.commit()
    assert subscriber(session, "ana@example.org").status == SubscriberStatus.UNSUBSCRIBED

    path = requested_and_mailed(app, client, session, enqueued, smtp_server, slugs=("members",))
    assert statuses(session, "ana@example.org") == {"members": UNCONFIRMED}
    client.post(path)

    assert statuses(session, "ana@example.org") == {"members": CONFIRMED}
    assert subscriber(session, "ana@example.org").status == SubscriberStatus.ACTIVE
    assert count(session, Suppression) == 0
    event = session.scalar(
        select(ConsentEvent).where(ConsentEvent.action == ConsentAction.CONFIRMED)
    )
    assert event.subscriber_id == ana.id and "suppression lifted (unsubscribed)" in event.detail


def test_confirming_does_not_lift_a_block(app, client, session, lists, enqueued, smtp_server):
    path = requested_and_mailed(app, client, session, enqueued, smtp_server, slugs=("members",))
    suppress(session, domain="example.org", reason=SuppressionReason.BLOCKED)
    session.commit()

    response = client.post(path)

    assert "Subscription not possible" in response.text
    assert count(session, Suppression) == 1
    assert statuses(session, "ana@example.org") == {"members": UNCONFIRMED}


def test_the_mail_task_checks_again_before_sending(app, client, session, lists, enqueued):
    subscribe(client, "ana@example.org", ["members"])
    suppress(session, email="ana@example.org", reason=SuppressionReason.BLOCKED)
    session.commit()
    assert run_confirmation_tasks(app, enqueued) == ["blocked"]


# --- limits ----------------------------------------------------------------------------------


def test_cool_down_sends_no_second_mail_to_the_same_address(app, client, session, lists, enqueued):
    subscribe(client, "ana@example.org", ["members"])
    second = subscribe(client, "ANA@example.org", ["partners"])

    assert second.status_code == 200 and "Check your inbox" in second.text
    assert len(confirmations(enqueued)) == 1
    # The request is stored all the same, with its own consent record.
    assert statuses(session, "ana@example.org") == {"members": UNCONFIRMED, "partners": UNCONFIRMED}
    assert count(session, ConsentEvent) == 2

    # Once the cool-down has passed, the next request sends one naming both lists.
    session.execute(
        update(Subscriber).values(confirmation_sent_at=utcnow() - timedelta(minutes=11))
    )
    session.commit()
    subscribe(client, "ana@example.org", ["partners"])
    assert len(confirmations(enqueued)) == 2
    assert confirmations(enqueued)[1][1] == sorted([lists["members"].id, lists["partners"].id])


def test_rate_limit_per_ip_answers_429_after_the_limit(
    app, client, session, lists, enqueued, monkeypatch
):
    with_settings(app, monkeypatch, subscribe_rate_limit="3 per minute")
    page = client.get("/subscribe")
    token = csrf_token(page.text)

    answers = []
    for number in range(5):
        response = client.post(
            "/subscribe",
            data={
                "csrf_token": token,
                "email": f"person{number}@example.org",
                "lists": ["members"],
                "website": "",
            },
        )
        answers.append(response.status_code)
    last = response

    assert answers == [200, 200, 200, 429, 429]
    assert "Please try again later" in last.text
    assert "Retry-After" in last.headers
    assert count(session, Subscriber) == 3
    # The embedded form shares the same per-IP budget.
    assert embed_post(app, EMBED).status_code == 429
    # Reading the page is not limited.
    assert client.get("/subscribe").status_code == 200


def test_default_rate_limit_stops_a_bot_with_many_addresses(client, session, lists, enqueued):
    """SUBSCRIBE_RATE_LIMIT's default (10 per minute) holds a bot to ten requests."""
    page = client.get("/subscribe")
    token = csrf_token(page.text)
    codes = [
        client.post(
            "/subscribe",
            data={
                "csrf_token": token,
                "email": f"victim{n}@example.org",
                "lists": ["members"],
                "website": "",
            },
        ).status_code
        for n in range(12)
    ]
    assert codes.count(200) == 10 and codes[10:] == [429, 429]
    assert len(confirmations(enqueued)) == 10


def test_global_cap_stores_requests_but_sends_no_more_mail(
    app, client, session, lists, enqueued, monkeypatch, caplog
):
    with_settings(app, monkeypatch, confirmation_mails_per_hour=2)

    bodies = {subscribe(client, f"p{n}@example.org", ["members"]).text for n in range(4)}

    assert len(bodies) == 1
    assert count(session, Subscriber) == 4
    assert len(confirmations(enqueued)) == 2
    assert "confirmation mail cap reached" in caplog.text
    # A capped request did not use up the address's cool-down: it can be mailed later.
    capped = subscriber(session, "p3@example.org")
    assert capped.confirmation_sent_at is None


# --- concurrency -----------------------------------------------------------------------------


def test_concurrent_requests_for_one_address_make_one_subscriber(app, session, lists):
    """Two requests at once, each in its own thread and session (as two web processes)."""
    list_id = lists["members"].id
    for round_number in range(3):
        email = f"race{round_number}@example.org"
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(
            email: str = email,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                barrier.wait()
                request_subscription(
                    db.session,
                    email,
                    [list_id],
                    source="test",
                    consent_text="yes",
                    ip="127.0.0.1",
                    user_agent=None,
                )
                db.session.commit()
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                db.session.remove()

        session.commit()
        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        session.expire_all()
        assert (
            session.scalar(
                select(func.count()).select_from(Subscriber).where(Subscriber.email == email)
            )
            == 1
        )
        assert statuses(session, email) == {"members": UNCONFIRMED}


def test_concurrent_posts_from_two_clients(app, session, lists, enqueued):
    clients = [IsolatedClient(app, app.response_class) for _ in range(2)]
    tokens = [csrf_token(c.get("/subscribe").text) for c in clients]
    results: list[int] = []

    def post(index: int) -> None:
        results.append(
            clients[index]
            .post(
                "/subscribe",
                data={
                    "csrf_token": tokens[index],
                    "email": "same@example.org",
                    "lists": ["members", "partners"],
                    "website": "",
                },
            )
            .status_code
        )

    threads = [threading.Thread(target=post, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == [200, 200]
    assert count(session, Subscriber) == 1
    assert count(session, Subscription) == 2
    assert len(confirmations(enqueued)) == 1  # the cool-down claim is atomic


# --- purge -----------------------------------------------------------------------------------


def test_purge_removes_stale_unconfirmed_requests_only(app, client, session, lists, enqueued):
    old = utcnow() - timedelta(days=31)
    for email in ("stale@example.org", "fresh@example.org", "mixed@example.org"):
        subscribe(client, email, ["members"])
    add_to_list(session, lists["partners"], "mixed@example.org")  # confirmed elsewhere
    add_to_list(session, lists["partners"], "staff@example.org")
    staff = subscriber(session, "staff@example.org")
    stale_ids = [subscriber(session, e).id for e in ("stale@example.org", "mixed@example.org")]
    session.execute(
        update(Subscription)
        .where(Subscription.subscriber_id.in_(stale_ids), Subscription.status == UNCONFIRMED)
        .values(updated_at=old, created_at=old)
    )
    session.execute(update(Subscriber).where(Subscriber.id.in_(stale_ids)).values(created_at=old))
    # Staff added this person long ago, then removed them from every list: not a stale
    # request, kept.
    session.execute(update(Subscriber).where(Subscriber.id == staff.id).values(created_at=old))
    session.execute(delete(Subscription).where(Subscription.subscriber_id == staff.id))
    session.commit()

    outcome = purge_unconfirmed(session, older_than=timedelta(days=30))
    session.commit()

    assert (outcome.subscriptions, outcome.subscribers) == (2, 1)
    assert subscriber(session, "stale@example.org") is None
    assert statuses(session, "fresh@example.org") == {"members": UNCONFIRMED}
    assert statuses(session, "mixed@example.org") == {"partners": CONFIRMED}
    assert subscriber(session, "staff@example.org") is not None
    # The record that the form was used stays, without the person.
    requests = (
        session.execute(
            select(ConsentEvent.subscriber_id).where(ConsentEvent.action == ConsentAction.REQUESTED)
        )
        .scalars()
        .all()
    )
    assert len(requests) == 3 and requests.count(None) == 1


# --- admin -----------------------------------------------------------------------------------


def test_admin_edits_description_public_flag_and_welcome_message(auth, client, session, lists):
    auth.create_user()
    auth.login()
    url = "/admin/lists/partners/settings"

    page = client.get("/admin/lists/partners")
    assert url in page.text and "no welcome message" in page.text
    response = auth.post_form(
        url,
        url,
        {"description": "For partners", "public": "", "welcome_message": "  Hello *partners*  "},
    )

    assert response.status_code == 302
    session.expire_all()
    partners = session.get(MailingList, lists["partners"].id)
    assert partners.description == "For partners"
    assert partners.public is False
    assert partners.welcome_message == "Hello *partners*"
    assert "Settings of Partners saved." in client.get("/admin/lists/partners").text
    assert "Partners" not in client.get("/subscribe").text.split("<main", 1)[1]


def test_list_settings_refuse_bad_input_and_need_csrf(auth, client, session, lists):
    auth.create_user()
    auth.login()
    url = "/admin/lists/members/settings"

    too_long = auth.post_form(url, url, {"description": "x" * 2001, "public": "y"})
    no_token = client.post(url, data={"description": "changed", "public": "y"})

    assert too_long.status_code == 400
    assert "Field cannot be longer than 2000 characters." in too_long.text
    assert no_token.status_code == 400
    session.expire_all()
    assert session.get(MailingList, lists["members"].id).description == (
        "Circulars for member organisations"
    )


def test_list_settings_are_for_senders_only(auth, client, session, lists):
    auth.create_user(role="editor")
    auth.login()
    assert client.get("/admin/lists/members/settings").status_code == 403


def test_subscribe_form_page_shows_the_snippet_escaped(auth, client, session, lists):
    session.add(MailingList(slug="news", name="News <& views>"))
    session.commit()
    auth.create_user(role="editor")
    auth.login()

    page = client.get("/admin/subscribe-form")

    assert page.status_code == 200
    assert 'href="/admin/subscribe-form"' in page.text  # in the navigation
    assert "http://circulars.test/subscribe" in page.text
    snippet = re.search(r"<pre[^>]*><code>(.*?)</code></pre>", page.text, re.S).group(1)
    assert "<" not in snippet  # shown as text, to copy
    pasted = html.unescape(snippet)
    assert '<form method="post" action="http://circulars.test/subscribe/embed"' in pasted
    assert 'name="website"' in pasted and "Leave this field empty" in pasted
    assert 'value="members"' in pasted and 'value="partners"' in pasted
    assert 'value="board"' not in pasted  # private
    assert "News &lt;&amp; views&gt;" in pasted  # the list name is escaped inside the snippet
    assert "csrf" not in pasted


def test_the_pasted_snippet_subscribes(app, auth, client, session, lists, enqueued):
    auth.create_user()
    auth.login()
    page = client.get("/admin/subscribe-form")
    pasted = html.unescape(
        re.search(r"<pre[^>]*><code>(.*?)</code></pre>", page.text, re.S).group(1)
    )
    names = set(re.findall(r'name="([a-z]+)"', pasted))
    assert names == {"email", "name", "lists", "website"}

    response = embed_post(
        app,
        {"email": "ana@example.org", "name": "", "lists": ["partners"], "website": ""},
        Referer="https://partner.example/",
    )

    assert response.status_code == 200
    assert statuses(session, "ana@example.org") == {"partners": UNCONFIRMED}


# --- the client address behind proxies ----------------------------------------------------------

PROXY_PROBE = """
import json, sys
from circulars import create_app
app = create_app(json.loads(sys.argv[1]))
client = app.test_client()
codes = [
    client.post("/subscribe/embed", data={}, headers={"X-Forwarded-For": ip}).status_code
    for ip in ("203.0.113.1", "203.0.113.1", "203.0.113.2")
]
print(json.dumps(codes))
"""


@pytest.mark.parametrize(("proxies", "expected"), [("0", [200, 429, 429]), ("1", [200, 429, 200])])
def test_client_address_comes_from_x_forwarded_for_only_behind_trusted_proxies(
    tmp_path, proxies, expected
):
    """In a process of its own: building a second app here would rebind the test app's database."""
    import json
    import subprocess
    import sys

    env = {
        "INSTANCE_PATH": str(tmp_path),
        "SECRET_KEY": "s" * 32,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "CELERY_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        "SUBSCRIBE_RATE_LIMIT": "1 per minute",
        "RATELIMIT_STORAGE_URL": "memory://",
        "TRUSTED_PROXIES": proxies,
        "LOG_LEVEL": "ERROR",
    }
    result = subprocess.run(
        [sys.executable, "-c", PROXY_PROBE, json.dumps(env)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected
