"""The secretariat's main path in a real Chromium: sign in, draft, attach, preview, send."""

from __future__ import annotations

import pytest

from conftest import ARTIFACTS

pytestmark = pytest.mark.browser


def test_draft_preview_send_and_watch_progress(
    app, auth, session, worker, smtp_server, live_server, browser, tmp_path, stack
):
    from playwright.sync_api import expect

    from circulars.models import MailingList
    from circulars.subscribers.service import add_to_list

    auth.create_user("sender@example.org", role="sender")
    members = MailingList(slug="members", name="Member organisations")
    session.add(members)
    session.flush()
    for index in range(12):
        add_to_list(session, members, f"member{index}@example.org", name=f"Member {index}")
    session.commit()
    shots = ARTIFACTS / f"browser-{stack['STACK']}"
    shots.mkdir(parents=True, exist_ok=True)
    attachment = tmp_path / "Programme – Chiang Mai.pdf"
    attachment.write_bytes(b"%PDF-1.4\n% programme\n" + b"x" * 4000)

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{live_server}/admin/")
    assert page.title().startswith("Sign in")
    page.fill("#email", "sender@example.org")
    page.fill("#password", "correct horse battery")
    page.click("button:has-text('Sign in')")
    page.wait_for_selector("h1:has-text('Circulars')")
    page.screenshot(path=str(shots / "01-circulars-empty.png"))

    page.click("text=New circular")
    page.fill("#title", "Asia Pacific consultation: statement and next steps")
    page.fill(
        "#body",
        "Colleagues,\n\nPlease find the **final statement** attached.\n\n- Read it\n- Endorse it\n",
    )
    page.check("text=Member organisations")
    page.click("button:has-text('Save draft')")
    page.wait_for_selector("text=Draft saved")

    page.set_input_files("#file", str(attachment))
    page.click("button:has-text('Attach')")
    page.wait_for_selector(f"text=Attached {attachment.name}")
    assert page.locator("#attachments a", has_text=attachment.name).count() == 1
    page.screenshot(path=str(shots / "02-draft.png"), full_page=True)

    page.click("a:has-text('Preview')")
    page.wait_for_selector("#preview-subject")
    assert (
        page.inner_text("#preview-subject")
        == "Circular No. 1: Asia Pacific consultation: statement and next steps"
    )
    desktop = page.frame_locator("iframe[title='Desktop preview']")
    assert "final statement" in desktop.locator("body").inner_text()
    assert attachment.name in desktop.locator("body").inner_text()
    page.screenshot(path=str(shots / "03-preview-desktop.png"), full_page=True)
    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.context.add_cookies(page.context.cookies())
    phone.goto(page.url)
    phone.wait_for_selector("iframe[title='Phone preview']")
    phone.screenshot(path=str(shots / "04-preview-phone.png"), full_page=True)
    phone.close()

    page.click("a:has-text('Send…')")
    page.wait_for_selector("#recipient-count")
    assert page.inner_text("#recipient-count") == "12 people will receive it."
    page.screenshot(path=str(shots / "05-confirm.png"))
    page.click("button:has-text('Send now to 12 people')")
    page.wait_for_selector("#progress")
    # Live progress: the page updates itself (no reload) until the send is done.
    expect(page.locator("#percent")).to_have_text("100", timeout=120_000)
    expect(page.locator("#status .badge")).to_have_text("done", timeout=30_000)
    assert page.inner_text("#sent") == "12"
    assert page.inner_text("#failed") == "0"
    page.screenshot(path=str(shots / "06-progress-done.png"), full_page=True)

    received = smtp_server.wait_for(12)
    assert sorted(r for item in received for r in item.rcpt_tos) == sorted(
        f"member{i}@example.org" for i in range(12)
    )
    names = {part.get_filename() for item in received for part in item.message.iter_attachments()}
    assert names == {attachment.name}
