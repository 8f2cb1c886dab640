"""A sign-on statement end to end in a real Chromium, against a real worker and SMTP server:
an organisation endorses from the archive page, confirms from the mail, the secretariat
approves in the admin, and the organisation appears in the "Endorsed by" list."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from circulars.models import Circular, Endorsement, utcnow

from conftest import ARTIFACTS

pytestmark = pytest.mark.browser


def local(url: str, live_server: str) -> str:
    """A link from a mail (made with BASE_URL) on the server the browser talks to."""
    parts = urlsplit(url)
    return live_server + parts.path


def text_part(received: Any) -> str:
    part = received.message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def shots_dir(stack: dict[str, str]) -> Path:
    path = ARTIFACTS / f"endorsement-{stack['STACK']}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def flash_text(page: Any) -> str:
    page.wait_for_selector(".flashes")
    return str(page.inner_text(".flashes"))


def test_endorse_confirm_approve_and_see_it_listed(
    app, auth, session, worker, smtp_server, live_server, browser, stack
):
    from playwright.sync_api import expect

    auth.create_user("sender@example.org", role="sender")
    circular = Circular(
        number=27,
        title="Global Compact: last round of negotiations",
        body_markdown="We, the undersigned organisations, call on every government to act.",
        status="sent",
        first_sent_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        endorsement_open=True,
        endorsement_opened_at=utcnow(),
        endorsement_closes_at=utcnow() + timedelta(days=30),
    )
    session.add(circular)
    session.commit()
    circular_id = circular.id
    # End every read transaction before the browser acts: on SQLite it holds the write lock.
    session.rollback()
    shots = shots_dir(stack)

    # 1. The archive page invites organisations to sign on; the form takes the endorsement.
    page = browser.new_page(viewport={"width": 1100, "height": 900}, locale="en-GB")
    page.goto(f"{live_server}/circulars/27")
    expect(page.locator("#endorsements h2")).to_have_text("Endorsed by")
    page.click("#endorsements a:has-text('Endorse this statement')")
    expect(page.locator("h1")).to_have_text("Endorse this statement")
    page.fill("#organisation", "Réseau des femmes migrantes <RFM>")
    page.select_option("#country", "SN")
    page.fill("#contact_name", "Awa Ndiaye")
    page.fill("#email", "Awa.Ndiaye@RFM.example")
    page.fill("#comment", "We sign on behalf of our 40 member groups.")
    page.screenshot(path=str(shots / "01-endorse-form.png"), full_page=True)
    page.click("button:has-text('Endorse')")
    expect(page.locator("h1")).to_have_text("Check your inbox")

    # 2. The confirmation mail reaches the SMTP server through the worker.
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["awa.ndiaye@rfm.example"]
    link = re.search(r"https?://\S+/endorsements/confirm/\S+", text_part(mail))
    assert link, text_part(mail)

    # 3. The link shows the details; the button confirms.
    page.goto(local(link.group(0), live_server))
    expect(page.locator("h1")).to_have_text("Confirm your endorsement")
    assert "Réseau des femmes migrantes <RFM>" in page.inner_text("main")
    assert "Senegal" in page.inner_text("main")
    page.screenshot(path=str(shots / "02-confirm.png"), full_page=True)
    page.click("button:has-text('Yes, confirm the endorsement')")
    expect(page.locator("h1")).to_have_text("Endorsement confirmed")
    status = session.scalar(select(Endorsement.status))
    assert status == "confirmed"
    session.rollback()

    # 4. The secretariat approves it from the circular's admin page.
    admin = browser.new_page(viewport={"width": 1280, "height": 900})
    admin.goto(f"{live_server}/admin/")
    admin.fill("#email", "sender@example.org")
    admin.fill("#password", "correct horse battery")
    admin.click("button:has-text('Sign in')")
    admin.goto(f"{live_server}/admin/circulars/{circular_id}")
    admin.click("#endorsement a:has-text('Endorsements')")
    expect(admin.locator("h1")).to_have_text("Endorsements")
    row = admin.locator("tr", has_text="Réseau des femmes migrantes")
    expect(row).to_contain_text("Awa Ndiaye")
    expect(row).to_contain_text("awa.ndiaye@rfm.example")
    row.locator("input[type=checkbox]").check()
    admin.screenshot(path=str(shots / "03-admin-awaiting.png"), full_page=True)
    admin.click("button:has-text('Approve selected')")
    assert "Approved 1 endorsement." in flash_text(admin)
    admin.click("a:has-text('Approved (1)')")
    expect(admin.locator("tr", has_text="Réseau des femmes migrantes")).to_contain_text(
        "by sender@example.org"
    )
    admin.screenshot(path=str(shots / "04-admin-approved.png"), full_page=True)

    # 5. The archive page lists the organisation, as text.
    page.goto(f"{live_server}/circulars/27")
    endorsers = page.locator("#endorsements ul.endorsers li")
    expect(endorsers).to_have_count(1)
    expect(endorsers.first).to_have_text("Réseau des femmes migrantes <RFM> (Senegal)")
    expect(page.locator("#endorsements .endorsement-count")).to_have_text(
        "1 organisation has endorsed this statement."
    )
    page.locator("#endorsements").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "05-archive-endorsed-by.png"), full_page=True)
