"""The subscriber's whole journey in a real Chromium, against a real worker and SMTP server:
subscribe, confirm from the mail, manage preferences, leave one list with the RFC 8058
one-click POST of a mail client; and the public pages in Arabic, laid out right to left."""

from __future__ import annotations

import re
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from circulars.models import MailingList, Subscriber, Subscription
from circulars.subscribers.service import add_to_list

from conftest import ARTIFACTS

pytestmark = pytest.mark.browser

WELCOME = "Welcome to the member organisations' circulars. We write about twice a month."


def local(url: str, live_server: str) -> str:
    """A link from a mail (made with BASE_URL) on the server the browser talks to."""
    parts = urlsplit(url)
    return live_server + parts.path + (f"?{parts.query}" if parts.query else "")


def text_part(received: Any) -> str:
    part = received.message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def shots_dir(stack: dict[str, str], name: str) -> Any:
    path = ARTIFACTS / f"{name}-{stack['STACK']}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def flash_text(page: Any) -> str:
    page.wait_for_selector(".flashes")
    return str(page.inner_text(".flashes"))


def test_subscribe_confirm_manage_and_leave_in_one_click(
    app, session, worker, smtp_server, live_server, browser, stack
):
    from playwright.sync_api import expect

    members = MailingList(
        slug="members",
        name="Member organisations",
        description="Circulars for the network's members.",
        welcome_message=WELCOME,
    )
    partners = MailingList(slug="partners", name="Partners")
    staff = MailingList(slug="staff", name="Staff only", public=False)
    session.add_all([members, partners, staff])
    session.commit()
    members_id, partners_id, staff_id = members.id, partners.id, staff.id
    # End every read transaction before the browser acts: on SQLite it holds the write lock.
    session.rollback()
    shots = shots_dir(stack, "journey")

    # 1. The public subscribe page lists the public lists only.
    page = browser.new_page(viewport={"width": 1100, "height": 900}, locale="en-GB")
    page.goto(f"{live_server}/subscribe")
    assert page.title().startswith("Subscribe")
    labels = page.locator("ul.subscribe-lists label").all_inner_texts()
    assert [label.strip() for label in labels] == ["Member organisations", "Partners"]
    page.check("input[name=lists][value=members]")
    page.fill("#email", "Journey.Tester@Example.org")
    page.fill("#name", "J. Tester")
    page.screenshot(path=str(shots / "01-subscribe.png"), full_page=True)
    page.click("button:has-text('Subscribe')")
    expect(page.locator("h1")).to_have_text("Check your inbox")

    # 2. The confirmation mail reaches the SMTP server through the worker.
    [confirmation] = smtp_server.wait_for(1)
    assert confirmation.rcpt_tos == ["journey.tester@example.org"]
    body = text_part(confirmation)
    confirm_url = re.search(r"https?://\S+/confirm/\S+", body)
    assert confirm_url, body
    subscriber_id = session.scalar(
        select(Subscriber.id).where(Subscriber.email == "journey.tester@example.org")
    )
    assert subscriber_id is not None
    session.rollback()

    # 3. Opening the link changes nothing until the button is pressed.
    page.goto(local(confirm_url.group(0), live_server))
    expect(page.locator("h1")).to_have_text("Confirm your subscription")
    assert "Member organisations" in page.inner_text("main")
    page.screenshot(path=str(shots / "02-confirm.png"), full_page=True)
    page.click("button:has-text('Yes, subscribe me')")
    expect(page.locator("h1")).to_have_text("You are subscribed")
    page.screenshot(path=str(shots / "03-confirmed.png"), full_page=True)

    # The welcome mail of the list follows; it carries the list's one-click unsubscribe.
    received = smtp_server.wait_for(2)
    welcome = received[1].message
    assert welcome["Subject"] == "Welcome to Member organisations"
    assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe_url = re.search(r"<(https?://[^>]+)>", str(welcome["List-Unsubscribe"]))
    assert unsubscribe_url, welcome["List-Unsubscribe"]

    # 4. The preference centre, from the link on the confirmation page.
    preferences_href = page.get_attribute("a:has-text('Manage your subscriptions')", "href")
    assert preferences_href
    preferences_url = local(preferences_href, live_server)
    page.goto(preferences_url)
    expect(page.locator("h1")).to_have_text("Your preferences")
    members_row = page.locator(f"#list-{members_id}")
    partners_row = page.locator(f"#list-{partners_id}")
    expect(members_row.locator(".badge")).to_have_text("Joined")
    expect(partners_row.locator(".badge")).to_have_text("Not joined")
    assert page.locator(f"#list-{staff_id}").count() == 0

    page.fill("#name", "Journey Tester")
    page.fill("#organization", "Coastal Workers Union")
    page.click("button:has-text('Save details')")
    assert "Your details are saved." in flash_text(page)
    assert page.input_value("#name") == "Journey Tester"

    partners_row.locator("button:has-text('Join')").click()
    assert "You joined Partners." in flash_text(page)
    expect(partners_row.locator(".badge")).to_have_text("Joined")

    members_row.locator("select").select_option("weekly")
    members_row.locator("button:has-text('Save')").click()
    assert "Member organisations: Weekly digest from now on." in flash_text(page)
    expect(members_row.locator("select")).to_have_value("weekly")
    page.screenshot(path=str(shots / "04-preferences.png"), full_page=True)

    subscriber = session.get(Subscriber, subscriber_id)
    assert (subscriber.name, subscriber.organization) == ("Journey Tester", "Coastal Workers Union")
    rows = {
        list_id: (status, delivery)
        for list_id, status, delivery in session.execute(
            select(Subscription.list_id, Subscription.status, Subscription.delivery).where(
                Subscription.subscriber_id == subscriber_id
            )
        )
    }
    assert rows == {
        members_id: ("confirmed", "weekly"),
        partners_id: ("confirmed", "every"),
    }
    session.rollback()

    # 5. One-click unsubscribe as a mail client does it: a bare POST, no cookie, no CSRF token.
    request = urllib.request.Request(  # noqa: S310 (http on loopback)
        local(unsubscribe_url.group(1), live_server),
        data=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        assert response.status == 200
        assert "Cookie" not in request.headers
        response.read()

    # 6. The preference centre shows that list left and the other still joined.
    page.goto(preferences_url)
    expect(members_row.locator(".badge")).to_have_text("Not joined")
    expect(partners_row.locator(".badge")).to_have_text("Joined")
    page.screenshot(path=str(shots / "05-after-one-click.png"), full_page=True)
    statuses = dict(
        session.execute(
            select(Subscription.list_id, Subscription.status).where(
                Subscription.subscriber_id == subscriber_id
            )
        ).all()
    )
    session.rollback()
    assert statuses == {members_id: "unsubscribed", partners_id: "confirmed"}
    page.close()


def inline_start_is_right(page: Any, inner: str, outer: str) -> None:
    """The content starts at the right edge of its container, as it does in RTL.

    Measured on the content itself (a Range around the element's contents), so
    a heading, which is a full-width block, counts by where its text sits.
    """
    box = page.evaluate(
        """([inner]) => {
            const range = document.createRange();
            range.selectNodeContents(document.querySelector(inner));
            const r = range.getBoundingClientRect();
            return {x: r.x, width: r.width};
        }""",
        [inner],
    )
    frame = page.locator(outer).first.bounding_box()
    assert frame
    frame_right = frame["x"] + frame["width"]
    box_right = box["x"] + box["width"]
    # Hugging the right edge (within the padding), far from the left one.
    assert frame_right - box_right < 40, (inner, box, frame)
    assert box["x"] - frame["x"] > 40, (inner, box, frame)


def assert_right_to_left(page: Any) -> None:
    html = page.locator("html")
    assert html.get_attribute("dir") == "rtl"
    assert html.get_attribute("lang") == "ar"
    assert page.evaluate("getComputedStyle(document.documentElement).direction") == "rtl"
    assert page.evaluate("getComputedStyle(document.querySelector('main')).direction") == "rtl"
    # Nothing pushed off a physical side: a left offset that is harmless in LTR makes
    # an RTL page scroll sideways.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"the page scrolls sideways ({width}px)"


def test_public_pages_in_arabic_are_right_to_left(app, session, live_server, browser, stack):
    members = MailingList(
        slug="members", name="المنظمات الأعضاء", description="تعاميم لأعضاء الشبكة."
    )
    partners = MailingList(slug="partners", name="Partners")
    session.add_all([members, partners])
    session.flush()
    layla, _ = add_to_list(session, members, "layla@example.org", name="ليلى حداد", language="ar")
    session.commit()
    token = app.extensions["circulars.tokens"].make("preferences", layla.id)
    members_id = members.id
    session.rollback()  # no open transaction while the browser works (SQLite write lock)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    # The subscribe page, Arabic chosen in the address; the browser itself asks for English.
    context = browser.new_context(viewport={"width": 1000, "height": 900}, locale="en-US")
    page = context.new_page()
    page.goto(f"{live_server}/subscribe?lang=ar")
    assert_right_to_left(page)
    assert page.inner_text("h1") == "اشتركوا في تعاميمنا"
    assert page.inner_text("button[type=submit]") == "الاشتراك"
    # Inline start is on the right: the heading, the list checkboxes before their names,
    # the submit button at the right edge of the form.
    inline_start_is_right(page, "main h1", "main .card")
    check = page.locator("ul.subscribe-lists label.check").first
    box_input = check.locator("input").bounding_box()
    box_name = check.locator("strong").bounding_box()
    assert box_input and box_name and box_input["x"] > box_name["x"]
    inline_start_is_right(page, "form button[type=submit]", "main form")
    # The language switcher sits at the inline end of the top bar: on the left.
    langs = page.locator(".langs").bounding_box()
    brand = page.locator(".topbar .brand").bounding_box()
    assert langs and brand and langs["x"] < brand["x"]
    page.screenshot(path=str(ARTIFACTS / "subscribe-ar.png"), full_page=True)

    # The choice is remembered on the next page without ?lang.
    page.goto(f"{live_server}/subscribe")
    assert_right_to_left(page)
    context.close()

    # The preference centre of a subscriber whose language is Arabic, in a browser that asks
    # for French: the subscriber's own choice wins.
    context = browser.new_context(viewport={"width": 1000, "height": 900}, locale="fr-FR")
    page = context.new_page()
    page.goto(f"{live_server}/preferences/{token}")
    assert_right_to_left(page)
    assert page.inner_text("h1") == "تفضيلاتكم"
    assert page.input_value("#name") == "ليلى حداد"
    inline_start_is_right(page, "main h1", "main .card")
    inline_start_is_right(page, "#details button[type=submit]", "#details form")
    row = page.locator(f"#list-{members_id}")
    name_box = row.locator(".list-name").bounding_box()
    form_box = row.locator("form").bounding_box()
    assert name_box and form_box and name_box["x"] > form_box["x"]  # the name first, on the right
    page.screenshot(path=str(ARTIFACTS / "preferences-ar.png"), full_page=True)

    # A phone-sized screen holds too.
    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, locale="ar"
    ).new_page()
    phone.goto(f"{live_server}/preferences/{token}")
    assert_right_to_left(phone)
    phone.screenshot(path=str(ARTIFACTS / "preferences-ar-phone.png"), full_page=True)
    phone.goto(f"{live_server}/subscribe")
    assert_right_to_left(phone)
    phone.screenshot(path=str(ARTIFACTS / "subscribe-ar-phone.png"), full_page=True)
    context.close()
