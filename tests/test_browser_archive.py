"""A reader in Chromium browses the public archive: filter, search, open, move along.

The screenshots it saves (tests/artifacts/browser-<stack>/archive-*.png) are the
ones the README shows, copied to docs/screenshots/.
"""

from __future__ import annotations

import pytest
from test_archive import attach, publish

from conftest import ARTIFACTS

pytestmark = pytest.mark.browser

CIRCULARS = [
    (1, "Annual accounts and the budget for next year", "Finance", 2025),
    (2, "Call for comments on the regional declaration", "Campaigns", 2025),
    (3, "Report of the Kathmandu regional consultation", "Events", 2025),
    (4, "New members welcomed by the board", "Network", 2026),
    (5, "Dues for the coming year and how to pay them", "Finance", 2026),
    (6, "Global Compact: last round of negotiations", "Campaigns", 2026),
    (7, "Training week on documenting recruitment abuses", "Events", 2026),
]


def test_reader_filters_searches_and_moves_between_circulars(
    app, session, live_server, browser, stack
):
    from playwright.sync_api import expect

    for number, title, topic, year in CIRCULARS:
        body = f"Colleagues,\n\nThis circular is about **{title.lower()}**.\n"
        if number == 6:
            body += "\nThe negotiators meet in Geneva; the draft text is attached.\n"
        circular = publish(session, number, title, body=body, topic=topic, year=year)
        if number == 6:
            attach(app, session, circular, "Draft text – Geneva.pdf", b"%PDF-1.4\n" + b"x" * 2000)
    shots = ARTIFACTS / f"browser-{stack['STACK']}"
    shots.mkdir(parents=True, exist_ok=True)

    page = browser.new_page(viewport={"width": 1100, "height": 900}, locale="en-GB")
    page.goto(f"{live_server}/circulars")
    titles = page.locator("ol.archive li h2")
    expect(titles).to_have_count(7)
    # Newest first.
    assert titles.first.inner_text().startswith("Circular No. 7:")
    assert titles.last.inner_text().startswith("Circular No. 1:")
    page.screenshot(path=str(shots / "archive-list.png"), full_page=True)

    # Topic and year, chosen from the form, narrow the list and stay in the URL.
    page.select_option("#archive-topic", "Finance")
    page.select_option("#archive-year", "2026")
    page.click("form.search button[type=submit]")
    page.wait_for_url("**/circulars?*topic=Finance*")
    expect(titles).to_have_count(1)
    assert titles.first.inner_text().startswith("Circular No. 5:")

    # Full-text search reaches the body, not only the title.
    page.click("text=Show all")
    page.fill("#archive-q", "Geneva")
    page.click("form.search button[type=submit]")
    expect(titles).to_have_count(1)
    page.click("ol.archive li h2 a")

    page.wait_for_url("**/circulars/6-global-compact-last-round-of-negotiations")
    expect(page.locator("h1")).to_contain_text("Circular No. 6: Global Compact")
    expect(page.locator("#attachments a")).to_have_text("Draft text – Geneva.pdf")
    # Related by topic: the other campaign circular.
    expect(page.locator("#related a")).to_contain_text(["Circular No. 2:"])
    expect(page.locator("#subscribe a.button")).to_be_visible()
    page.screenshot(path=str(shots / "archive-circular.png"), full_page=True)

    # The attachment downloads with its own name.
    with page.expect_download() as download:
        page.click("#attachments a")
    assert download.value.suggested_filename == "Draft text – Geneva.pdf"

    # Previous and Next walk the numbers.
    page.click("a[rel=next]")
    page.wait_for_url("**/circulars/7-*")
    page.click("a[rel=prev]")
    page.wait_for_url("**/circulars/6-*")
    page.click("a[rel=prev]")
    page.wait_for_url("**/circulars/5-*")
    expect(page.locator("h1")).to_contain_text("Circular No. 5:")
    page.close()
