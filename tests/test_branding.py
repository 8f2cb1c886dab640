"""Branding settings: the admin page, its preview, what it refuses, and that every email and
page uses what was saved (through the real worker and SMTP server), on each stack."""

from __future__ import annotations

import io
import json
import os
import re
from email.utils import parseaddr
from html import unescape

import pytest
from PIL import Image
from sqlalchemy import func, select

from circulars.images import ImageRefused, check_image
from circulars.mail.branding import contrast_ratio, logo_display_size
from circulars.models import BrandingLogo, BrandingSettings, MailingList
from circulars.subscribers.service import add_to_list

from conftest import ARTIFACTS, csrf_token

PAGE = "/admin/settings/branding"


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (480, 160), noise: bool = False) -> bytes:
    if noise:  # incompressible: a large file
        image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    else:
        image = Image.new("RGB", size, "#7a1f3d")
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def form_data(**changes):
    """A complete, valid form as the page would post it."""
    data = {
        "name": "Migrant Rights Network",
        "signoff": "The Secretariat",
        "postal_address": "Rue de Varembé 1\n1202 Geneva",
        "phone": "+41 22 000 00 00",
        "fax": "",
        "mobile": "",
        "email": "info@circulars.test",
        "website": "https://mrn.example.org",
        "about": "",
        "campaign_title": "",
        "campaign_text": "",
        "campaign_url": "",
        "primary_color": "#1f4e79",
        "accent_color": "#1f4e79",
        "action": "save",
    }
    for index in range(8):
        data[f"social-{index}-name"] = ""
        data[f"social-{index}-url"] = ""
    data.update(changes)
    return data


def post_branding(client, data, logo=None):
    page = client.get(PAGE)
    assert page.status_code == 200, page.status_code
    payload = {**data, "csrf_token": csrf_token(page.text)}
    if logo is not None:
        payload["logo"] = (io.BytesIO(logo[1]), logo[0])
    return client.post(PAGE, data=payload, content_type="multipart/form-data")


def saved_count(session):
    return (
        session.scalar(select(func.count()).select_from(BrandingSettings)),
        session.scalar(select(func.count()).select_from(BrandingLogo)),
    )


def stored_files(app):
    root = app.extensions["circulars.files"].root
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def admin(auth):
    auth.create_user("admin@example.org", role="admin")
    auth.login("admin@example.org")
    return auth


# --- saving reaches mail and pages --------------------------------------------------------------


def create_and_send(runner, tmp_path, title):
    body = tmp_path / f"{title}.md"
    body.write_text("Dear colleagues,\n\nPlease read on.\n", encoding="utf-8")
    result = runner.invoke(
        ["circulars", "create", "--title", title, "--body", str(body), "--list", "members"]
    )
    assert result.exit_code == 0, result.output
    circular_id = result.output.strip()
    result = runner.invoke(["send", circular_id, "--list", "members", "--wait", "--timeout", "240"])
    assert result.exit_code == 0, result.output
    assert "2 sent, 0 failed" in result.output, result.output


def parts(received):
    message = received.message
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    return message, html, text


@pytest.mark.integration
def test_saving_changes_the_next_circular_and_the_public_pages(
    app, admin, client, session, runner, worker, smtp_server, tmp_path
):
    members = MailingList(slug="members", name="Member organisations")
    session.add(members)
    session.flush()
    add_to_list(session, members, "amina@example.org", name="Amina")
    add_to_list(session, members, "li@example.org", name="Li Wei")
    session.commit()

    # Before anyone saves: the environment's ORG_NAME, in a worker that is already running.
    create_and_send(runner, tmp_path, "Before the change")
    before = smtp_server.wait_for(2)
    message, html, text = parts(before[0])
    assert parseaddr(message["From"])[0] == "Migrant Rights Network"
    assert "<img" not in html

    logo = image_bytes("PNG", (480, 160))
    response = post_branding(
        client,
        form_data(
            name="Réseau des droits des migrants",
            signoff="Le Secrétariat",
            fax="+41 22 000 00 01",
            mobile="+41 79 000 00 02",
            about="We defend <b>migrants</b> & their families.",
            campaign_title="Ratify the Convention",
            campaign_text="Twelve states to go.",
            campaign_url="https://ratify.example.org/now",
            primary_color="#7A1F3D",
            accent_color="#0b5d3b",
            **{"social-0-name": "Mastodon", "social-0-url": "https://social.example/@mrn"},
        ),
        logo=("Our logo.png", logo),
    )
    assert response.status_code == 302, response.text
    page = client.get(PAGE)
    assert "Branding saved" in page.text
    assert "Last saved by admin@example.org" in page.text
    row = session.scalar(select(BrandingSettings))
    assert row.name == "Réseau des droits des migrants" and row.primary_color == "#7a1f3d"
    assert row.updated_by_email == "admin@example.org" and row.version == 1

    smtp_server.reset()
    create_and_send(runner, tmp_path, "After the change")
    after = smtp_server.wait_for(2)
    assert len(after) == 2
    sha = row.logo_sha256
    logo_url = f"http://circulars.test/branding/logo/{sha}.png"
    for received in after:
        message, html, text = parts(received)
        assert parseaddr(message["From"])[0] == "Réseau des droits des migrants"
        # The logo by absolute URL, with alt text and a size fitted into the masthead.
        img = re.search(r"<img [^>]*>", html).group(0)
        assert f'src="{logo_url}"' in img
        assert 'alt="Réseau des droits des migrants"' in img
        assert 'width="240"' in img and 'height="80"' in img
        # Colours inlined by premailer: the masthead in the primary colour, links in the accent.
        assert re.search(r"class=\"masthead\" style='[^']*background-color:#7a1f3d", html)
        assert re.search(r'<a href="https://ratify.example.org/now" style="[^"]*#0b5d3b', html)
        assert "Le Secrétariat" in html and "Le Secrétariat" in text
        assert "We defend &lt;b&gt;migrants&lt;/b&gt; &amp; their families." in html
        assert "<b>migrants</b>" not in html
        assert 'href="https://social.example/@mrn"' in html
        for line in (
            "Fax: +41 22 000 00 01",
            "Mobile: +41 79 000 00 02",
            "* Ratify the Convention",
            "Twelve states to go.",
            "https://ratify.example.org/now",
            "Mastodon: https://social.example/@mrn",
            "About us: We defend <b>migrants</b> & their families.",
        ):
            assert line in text, line
        assert "Migrant Rights Network" not in html + text

    # The logo is served from where the mail points.
    served = client.get(f"/branding/logo/{sha}.png")
    assert served.status_code == 200
    assert served.data == logo and served.mimetype == "image/png"
    assert "immutable" in served.headers["Cache-Control"]
    assert client.get(f"/branding/logo/{sha}.gif").status_code == 404

    # Public pages: header name and logo, colours, footer.
    archive = client.get("/circulars")
    assert archive.status_code == 200
    assert "Réseau des droits des migrants" in archive.text
    assert f'src="/branding/logo/{sha}.png"' in archive.text
    assert "--brand: #7a1f3d; --accent: #0b5d3b;" in archive.text
    assert "We defend &lt;b&gt;migrants&lt;/b&gt; &amp; their families." in archive.text
    assert "Ratify the Convention" in archive.text and "Fax: +41 22 000 00 01" in archive.text


def test_transactional_mail_uses_the_saved_branding_without_a_restart(
    app, admin, client, session, smtp_server
):
    from circulars.mail.transactional import send_welcome

    members = MailingList(slug="members", name="Members", welcome_message="Welcome aboard.")
    session.add(members)
    session.flush()
    subscriber, _ = add_to_list(session, members, "new@example.org", name="New Member")
    session.commit()
    # The context the app built at start-up, before anything was saved.
    ctx = app.extensions["circulars.send_context"]
    assert ctx.branding.name == "Migrant Rights Network"

    response = post_branding(client, form_data(name="Red de Migrantes", fax="+1 555 0100"))
    assert response.status_code == 302
    assert send_welcome(session, subscriber.id, [members.id], ctx) == 1
    message, html, text = parts(smtp_server.wait_for(1)[0])
    assert parseaddr(message["From"])[0] == "Red de Migrantes"
    assert "Red de Migrantes" in html and "Fax: +1 555 0100" in text
    assert "Migrant Rights Network" not in html + text


def test_a_save_in_the_middle_of_a_send_leaves_the_rest_of_that_send_as_it_began(
    app, admin, client, session, smtp_server
):
    """The body is rendered once when a send starts; its From name is read then too, so
    batches after a save on the branding page still match the body they carry."""
    from circulars.models import Circular
    from circulars.sending import engine
    from circulars.sending.service import create_send

    ctx = app.extensions["circulars.send_context"]
    members = MailingList(slug="members", name="Members")
    session.add(members)
    session.flush()
    for index in range(ctx.batch_size + 5):
        add_to_list(session, members, f"person{index:03d}@example.org")
    draft = Circular(title="Annual meeting", body_markdown="See you **there**.")
    draft.lists = [members]
    session.add(draft)
    session.commit()
    send = create_send(session, draft.id, [members.id])
    session.commit()
    first, second = engine.start_send(session, send.id, ctx)
    engine.deliver_batch(session, send.id, *first, ctx)

    response = post_branding(client, form_data(name="Red de Migrantes"))
    assert response.status_code == 302
    engine._prepared.clear()  # the next batch in another worker process, which has no copy
    engine.deliver_batch(session, send.id, *second, ctx)

    received = smtp_server.wait_for(ctx.batch_size + 5)
    names = {parseaddr(parts(item)[0]["From"])[0] for item in received}
    assert names == {"Migrant Rights Network"}
    # The next send takes the saved name.
    assert engine.render_send(draft, ctx).html.count("Red de Migrantes") >= 1


# --- preview ----------------------------------------------------------------------------------


def test_preview_shows_unsaved_values_and_stores_nothing(app, admin, client, session):
    files_before = stored_files(app)
    logo = image_bytes("GIF", (120, 60))
    response = post_branding(
        client,
        form_data(
            action="preview",
            name="Preview Only <Network>",
            about="<script>alert('x')</script>",
            primary_color="#5a2a82",
        ),
        logo=("logo.gif", logo),
    )
    assert response.status_code == 200, response.text
    frames = dict(re.findall(r'<iframe title="([^"]+)" srcdoc="([^"]*)"', response.text))
    email, page = unescape(frames["Email preview"]), unescape(frames["Page preview"])
    for shown in (email, page):
        assert "Preview Only &lt;Network&gt;" in shown
        assert "data:image/gif;base64," in shown  # the logo from the form itself, not stored
        assert "&lt;script&gt;alert" in shown and "<script>" not in shown
    assert "background-color:#5a2a82" in email
    assert "--brand: #5a2a82" in page
    assert "Preview Only <Network>" in unescape(
        re.search(r'<pre class="plain" id="preview-text">(.*?)</pre>', response.text, re.S).group(1)
    )
    # The logo rides along for "Save" in the form; nothing is in the database or on disk.
    assert 'name="pending_logo" type="hidden" value="data:image/gif;base64,' in response.text
    assert saved_count(session) == (0, 0)
    assert stored_files(app) == files_before
    assert "Preview Only" not in client.get("/circulars").text
    assert "Preview Only" not in client.get(PAGE).text.split("<form")[0]


def test_save_after_preview_keeps_the_previewed_logo(app, admin, client, session):
    logo = image_bytes("WEBP", (300, 100))
    preview = post_branding(client, form_data(action="preview"), logo=("logo.webp", logo))
    pending = re.search(r'name="pending_logo" type="hidden" value="([^"]+)"', preview.text)
    response = post_branding(client, form_data(pending_logo=unescape(pending.group(1))))
    assert response.status_code == 302
    stored = session.scalar(select(BrandingLogo))
    assert (stored.content_type, stored.width, stored.height) == ("image/webp", 300, 100)
    assert client.get(f"/branding/logo/{stored.sha256}.webp").data == logo


def test_a_new_logo_replaces_the_old_one_which_stays_served(app, admin, client, session):
    first, second = image_bytes("PNG", (200, 50)), image_bytes("JPEG", (90, 90))
    assert post_branding(client, form_data(), logo=("a.png", first)).status_code == 302
    old_sha = session.scalar(select(BrandingSettings.logo_sha256))
    assert post_branding(client, form_data(), logo=("b.jpg", second)).status_code == 302
    row = session.scalar(select(BrandingSettings))
    assert row.version == 2 and row.logo_sha256 != old_sha
    # Mail sent with the first logo still shows it.
    assert client.get(f"/branding/logo/{old_sha}.png").data == first
    assert client.get(f"/branding/logo/{row.logo_sha256}.jpg").data == second
    assert f'src="/branding/logo/{row.logo_sha256}.jpg"' in client.get("/circulars").text
    # Saving again without a file keeps the logo; "No logo" removes it.
    assert post_branding(client, form_data(name="Same Logo")).status_code == 302
    assert session.scalar(select(BrandingSettings.logo_sha256)) == row.logo_sha256
    assert post_branding(client, form_data(remove_logo="y")).status_code == 302
    assert session.scalar(select(BrandingSettings.logo_sha256)) is None
    assert "brand-logo" not in client.get("/circulars").text
    # Any other file of the store (an attachment) is not served as a logo.
    attachment = app.extensions["circulars.files"].save(io.BytesIO(b"%PDF-1.4 secret"), "a.pdf")
    assert client.get(f"/branding/logo/{attachment.sha256}.png").status_code == 404


# --- refused ----------------------------------------------------------------------------------

NOT_AN_IMAGE = b"%PDF-1.4\n% not an image at all\n" + b"x" * 500


@pytest.mark.parametrize(
    ("changes", "logo", "message"),
    [
        ({}, ("logo.png", NOT_AN_IMAGE), "The file is not a PNG, JPEG, GIF or WebP image."),
        ({}, ("logo.png", image_bytes()[:60]), "cannot be read as one"),
        (
            {},
            ("logo.png", image_bytes("PNG", (400, 400), noise=True)),
            "larger than the limit of 256.0 KB",
        ),
        ({"primary_color": "red;}"}, None, "Write a colour as # and six hex digits"),
        ({"accent_color": "javascript:alert(1)"}, None, "Write a colour as # and six hex digits"),
        ({"primary_color": "#ffee00"}, None, "would be hard to read (contrast 1.2:1"),
        ({"social-0-name": "X", "social-0-url": "javascript:alert(1)"}, None, "https://"),
        ({"social-1-name": "Feed", "social-1-url": "ftp://files.example"}, None, "https://"),
        ({"social-2-name": "Blog"}, None, "Give each link both a name and an address."),
        ({"website": "javascript:alert(1)"}, None, "Use a full web address"),
        ({"campaign_text": "Sign!"}, None, "Give the campaign a title"),
        ({"name": "  "}, None, "The organisation needs a name."),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    app, admin, client, session, changes, logo, message
):
    good = image_bytes("PNG", (200, 50))
    assert (
        post_branding(client, form_data(name="Saved Name"), logo=("a.png", good)).status_code == 302
    )
    files_before = stored_files(app)
    for action in ("preview", "save"):
        response = post_branding(
            client, form_data(**{"name": "Changed Name", "action": action, **changes}), logo=logo
        )
        assert response.status_code == 400, response.text
        assert message in unescape(response.text)
        assert "Nothing was saved" in response.text
        assert 'class="error"' in response.text
        assert "srcdoc" not in response.text  # no preview of refused values
    row = session.scalar(select(BrandingSettings))
    assert row.name == "Saved Name" and row.version == 1 and row.primary_color == "#1f4e79"
    assert saved_count(session) == (1, 1)
    assert stored_files(app) == files_before
    assert "Changed Name" not in client.get("/circulars").text


# --- the command line ---------------------------------------------------------------------------


def test_cli_changes_only_the_fields_given_and_shows_them(
    app, auth, client, session, runner, tmp_path
):
    result = runner.invoke(["branding", "show"])
    assert result.exit_code == 0, result.output
    assert "Not saved yet: the ORG_* settings are in use." in result.output
    before = json.loads(runner.invoke(["branding", "show", "--json"]).output)
    assert before["version"] is None and before["logo"] is None

    logo = tmp_path / "logo.png"
    logo.write_bytes(image_bytes("PNG", (300, 100)))
    result = runner.invoke(
        [
            "branding",
            "set",
            "--name",
            "Réseau des droits des migrants",
            "--primary-color",
            "#7A1F3D",
            "--postal-address",
            "Rue de Varembé 1\n1202 Geneva",
            "--social",
            "Mastodon=https://social.example/@mrn",
            "--social",
            "Blog=https://mrn.example.org/blog",
            "--logo",
            str(logo),
        ]
    )
    assert result.exit_code == 0, result.output
    assert "Branding saved (version 1)." in result.output
    shown = json.loads(runner.invoke(["branding", "show", "--json"]).output)
    assert shown["name"] == "Réseau des droits des migrants"
    assert shown["primary_color"] == "#7a1f3d"
    assert shown["postal_address"] == "Rue de Varembé 1\n1202 Geneva"
    assert shown["social"] == [
        {"name": "Mastodon", "url": "https://social.example/@mrn"},
        {"name": "Blog", "url": "https://mrn.example.org/blog"},
    ]
    assert (shown["logo"]["width"], shown["logo"]["height"]) == (300, 100)
    assert shown["version"] == 1
    # What was not given stays as it was.
    assert shown["signoff"] == before["signoff"] and shown["email"] == before["email"]
    # The public pages use it at once, logo included.
    page = client.get("/circulars").text
    assert "Réseau des droits des migrants" in unescape(page)
    assert client.get(shown["logo"]["path"]).data == logo.read_bytes()

    text = runner.invoke(["branding", "show"]).output
    assert "Version 1, saved" in text and "Mastodon https://social.example/@mrn" in text
    assert "(300 × 100 px" in text

    result = runner.invoke(["branding", "set", "--no-social", "--remove-logo", "--fax", "+41 1"])
    assert result.exit_code == 0, result.output
    shown = json.loads(runner.invoke(["branding", "show", "--json"]).output)
    assert shown["social"] == [] and shown["logo"] is None and shown["fax"] == "+41 1"
    assert shown["name"] == "Réseau des droits des migrants" and shown["version"] == 2
    auth.create_user("admin@example.org", role="admin")
    auth.login("admin@example.org")
    assert "Last saved by the command line on" in client.get(PAGE).text


@pytest.mark.parametrize(
    ("args", "messages"),
    [
        (
            ["--primary-color", "#ffff00", "--website", "javascript:alert(1)"],
            ["--primary-color: White text on #ffff00", "--website: Use a full web address"],
        ),
        (["--name", ""], ["--name: The organisation needs a name."]),
        (["--social", "Blog=javascript:x"], ["--social (link 1): Use a full web address"]),
        (["--social", "no equals sign"], ["--social 'no equals sign': write NAME=URL"]),
        (["--social", "A=https://a.example", "--no-social"], ["--social or --no-social"]),
        (["--logo", "LOGO", "--remove-logo"], ["--logo or --remove-logo"]),
        (["--logo", "TEXT"], ["--logo: The file is not a PNG, JPEG, GIF or WebP image."]),
        (["--logo", "LARGE"], ["--logo: The image is larger than the limit of 256.0 KB."]),
        ([], ["nothing to change"]),
    ],
)
def test_cli_refuses_bad_values_and_saves_nothing(app, session, runner, tmp_path, args, messages):
    assert runner.invoke(["branding", "set", "--name", "Saved Name"]).exit_code == 0
    files_before = stored_files(app)
    (tmp_path / "logo.png").write_bytes(image_bytes("PNG", (200, 50)))
    (tmp_path / "notes.png").write_text("not an image", encoding="utf-8")
    (tmp_path / "large.png").write_bytes(image_bytes("PNG", (600, 600), noise=True))
    paths = {
        "LOGO": str(tmp_path / "logo.png"),
        "TEXT": str(tmp_path / "notes.png"),
        "LARGE": str(tmp_path / "large.png"),
    }
    args = [paths.get(arg, arg) for arg in args]
    result = runner.invoke(["branding", "set", *args])
    assert result.exit_code == 2, result.output
    for message in messages:
        assert message in result.output
    row = session.scalar(select(BrandingSettings).execution_options(populate_existing=True))
    assert (row.name, row.version, row.primary_color) == ("Saved Name", 1, "#1f4e79")
    assert saved_count(session) == (1, 0)
    assert stored_files(app) == files_before


def test_a_post_without_csrf_token_is_refused(app, admin, client, session):
    response = client.post(PAGE, data=form_data(name="Forged"))
    assert response.status_code == 400
    assert "The form has expired" in response.text
    assert saved_count(session) == (0, 0)


@pytest.mark.parametrize("role", ["sender", "editor"])
def test_only_admins_reach_the_page(app, auth, client, session, role):
    assert client.get(PAGE).status_code == 302  # signed out: to the sign-in page
    auth.create_user(f"{role}@example.org", role=role)
    auth.login(f"{role}@example.org")
    assert client.get(PAGE).status_code == 403
    token = csrf_token(client.get("/admin/circulars/new").text)
    response = client.post(PAGE, data={**form_data(name="Not allowed"), "csrf_token": token})
    assert response.status_code == 403
    assert saved_count(session) == (0, 0)
    assert 'href="/admin/settings/branding"' not in client.get("/admin/circulars").text


# --- without the app --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("GIF", "image/gif"), ("WEBP", "image/webp")],
)
def test_images_are_recognised_by_content(fmt, content_type):
    checked = check_image(image_bytes(fmt, (64, 32)), max_bytes=100_000)
    assert (checked.content_type, checked.width, checked.height) == (content_type, 64, 32)


def test_an_svg_or_a_disguised_file_is_not_an_image():
    with pytest.raises(ImageRefused, match="not a PNG"):
        check_image(b"<svg xmlns='http://www.w3.org/2000/svg'><script/></svg>", max_bytes=10_000)
    with pytest.raises(ImageRefused, match="cannot be read"):
        check_image(b"GIF89a" + b"\x00" * 100, max_bytes=10_000)


def test_contrast_and_logo_size():
    assert round(contrast_ratio("#000000", "#ffffff"), 1) == 21.0
    assert round(contrast_ratio("#1f4e79", "#ffffff"), 1) == 8.7
    assert logo_display_size(480, 160) == (240, 80)
    assert logo_display_size(100, 400) == (20, 80)
    assert logo_display_size(120, 40) == (120, 40)  # never enlarged


# --- in a real browser ------------------------------------------------------------------------


@pytest.mark.browser
def test_branding_page_in_chromium(app, admin, session, live_server, browser, stack, tmp_path):
    from playwright.sync_api import expect

    shots = ARTIFACTS / f"browser-{stack['STACK']}"
    shots.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{live_server}/admin/")
    page.fill("#email", "admin@example.org")
    page.fill("#password", "correct horse battery")
    page.click("button:has-text('Sign in')")
    page.wait_for_selector("h1:has-text('Circulars')")
    page.click("nav >> text=Branding")
    page.wait_for_selector("h1:has-text('Branding')")

    page.fill("#name", "Asia Pacific Migrant Network")
    page.fill("#primary_color", "#0b5d3b")
    page.fill("#about", "A network of 300 organisations <since 1999>.")
    logo = tmp_path / "logo.png"
    logo.write_bytes(image_bytes("PNG", (360, 120)))
    page.set_input_files("#logo", str(logo))
    page.click("button:has-text('Preview')")
    page.wait_for_selector("#preview")
    email = page.frame_locator("iframe[title='Email preview']")
    expect(email.locator("td.masthead")).to_have_text("Asia Pacific Migrant Network")
    expect(email.locator("td.masthead")).to_have_css("background-color", "rgb(11, 93, 59)")
    public = page.frame_locator("iframe[title='Page preview']")
    expect(public.locator("header .brand")).to_have_text("Asia Pacific Migrant Network")
    expect(email.locator("img[alt='Asia Pacific Migrant Network']")).to_have_attribute(
        "width", "240"
    )
    expect(public.locator(".about-text")).to_have_text(
        "A network of 300 organisations <since 1999>."
    )
    # Not saved: the admin's own header still shows the old name.
    expect(page.locator("header.topbar .brand")).to_have_text("Migrant Rights Network")
    page.screenshot(path=str(shots / "branding-preview.png"), full_page=True)

    page.click("button:has-text('Save')")
    page.wait_for_selector("text=Branding saved")
    expect(page.locator("header.topbar .brand")).to_have_text("Asia Pacific Migrant Network")
    expect(page.locator("header.topbar")).to_have_css("background-color", "rgb(11, 93, 59)")
    assert page.locator("header.topbar img.brand-logo").evaluate("img => img.naturalWidth") == 360
    page.screenshot(path=str(shots / "branding-saved.png"), full_page=True)
    assert session.scalar(select(BrandingSettings.name)) == "Asia Pacific Migrant Network"
