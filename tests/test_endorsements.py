"""Sign-on statements: the public form, the confirmation link, the secretariat's decision,
the "Endorsed by" list on the archive page, duplicates, closing, CSV, and inserting the
list into a later circular; on each stack."""

from __future__ import annotations

import csv
import io
import re
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from itsdangerous.timed import TimestampSigner
from sqlalchemy import func, select

from circulars.archive import slugify
from circulars.endorsements.service import escape_markdown, normalise_organisation
from circulars.endorsements.tokens import EndorsementTokens, Submission
from circulars.extensions import db
from circulars.mail.endorsement import send_endorsement_confirmation
from circulars.models import Circular, Endorsement, utcnow
from circulars.tasks import SEND_ENDORSEMENT_CONFIRMATION

from conftest import csrf_token

CONFIRM_LINK = re.compile(r"http://circulars\.test/endorsements/confirm/[A-Za-z0-9_.-]+")


def publish(session: Any, number: int = 27, title: str = "Global Compact: our statement", **kw):
    """A sent circular in the archive, opened for endorsement (unless open=False)."""
    opened = kw.pop("open", True)
    circular = Circular(
        number=number,
        title=title,
        body_markdown="We, the undersigned organisations, call on every government…",
        status="sent",
        first_sent_at=datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
        endorsement_open=opened,
        endorsement_opened_at=utcnow() if opened else None,
        **kw,
    )
    session.add(circular)
    session.commit()
    return circular


def form_url(circular: Circular) -> str:
    return f"/circulars/{circular.number}-{slugify(circular.title)}/endorse"


def page_url(circular: Circular) -> str:
    return f"/circulars/{circular.number}-{slugify(circular.title)}"


def endorse(client: Any, circular: Circular, **fields: str) -> Any:
    data = {
        "organisation": "Coastal Workers Union",
        "country": "KE",
        "contact_name": "Achieng Otieno",
        "email": "achieng@coastal.example",
        "comment": "",
        "website": "",
        **fields,
    }
    page = client.get(form_url(circular))
    assert page.status_code == 200, page.status_code
    return client.post(form_url(circular), data={**data, "csrf_token": csrf_token(page.text)})


def mail_tasks(enqueued: list[tuple[str, tuple[Any, ...]]]) -> list[tuple[Any, ...]]:
    return [args for name, args in enqueued if name == SEND_ENDORSEMENT_CONFIRMATION]


def run_mail_tasks(app: Any, enqueued: list[tuple[str, tuple[Any, ...]]]) -> list[str]:
    """What the worker's task does with each queued mail (worker/endorsement_tasks.py)."""
    settings = app.extensions["circulars.settings"]
    days = settings.confirm_token_max_age_days
    done = [
        send_endorsement_confirmation(
            db.session,
            endorsement_id,
            Submission(**submission),
            app.extensions["circulars.send_context"],
            tokens=EndorsementTokens(settings.secret_key, timedelta(days=days)),
            valid_days=days,
        )
        for endorsement_id, submission in mail_tasks(enqueued)
    ]
    enqueued.clear()
    return done


def confirm_path(message: Any) -> str:
    text = message.get_body(("plain",)).get_content()
    link = CONFIRM_LINK.search(text)
    assert link, text
    return link.group(0).removeprefix("http://circulars.test")


def rows(session: Any) -> list[Endorsement]:
    session.expire_all()
    return list(session.scalars(select(Endorsement).order_by(Endorsement.id)))


def endorsed_by_section(html: str) -> str:
    match = re.search(r'<section class="card" id="endorsements">(.*?)</section>', html, re.S)
    assert match, "no Endorsed by section on the page"
    return match.group(1)


def listed(html: str) -> list[str]:
    """The "Endorsed by" entries as shown: 'Organisation (Country)'."""
    items = re.findall(r"<li>(.*?)</li>", endorsed_by_section(html), re.S)
    return [" ".join(re.sub(r"<[^>]+>", "", item).split()) for item in items]


def admin_decide(auth: Any, circular: Circular, ids: list[int], action: str) -> Any:
    return auth.post_form(
        f"/admin/circulars/{circular.id}/endorsements",
        f"/admin/circulars/{circular.id}/endorsements/decide",
        {"ids": [str(i) for i in ids], "action": action, "status": "confirmed"},
        follow_redirects=True,
    )


def submitted_and_confirmed(app, client, session, enqueued, smtp_server, circular, **fields):
    """Submit, mail, use the link: the endorsement is confirmed; returns its row."""
    assert endorse(client, circular, **fields).status_code == 200
    assert run_mail_tasks(app, enqueued) == ["sent"]
    path = confirm_path(smtp_server.messages()[-1].message)
    assert client.post(path).status_code == 200
    email = fields.get("email", "achieng@coastal.example")
    return session.scalar(select(Endorsement).where(Endorsement.email == email))


# --- the whole way, in process and through the worker ---------------------------------------


def test_submit_mail_confirm_approve_and_listed_on_the_archive_page(
    app, auth, client, session, enqueued, smtp_server
):
    circular = publish(session)
    other = publish(session, 28, "Another circular", open=False)
    before = client.get(page_url(circular))
    assert "No endorsements have been published yet." in before.text
    assert form_url(circular) in before.text  # the call to endorse while open
    assert 'id="endorsements"' not in client.get(page_url(other)).text  # never opened: nothing

    form = client.get(form_url(circular))
    assert form.status_code == 200
    assert '<option value="KE">Kenya</option>' in form.text
    assert '<option value="BO">Bolivia</option>' in form.text  # pycountry's common name

    answer = endorse(client, circular, comment="We sign with pride.")
    assert answer.status_code == 200
    assert "Check your inbox" in answer.text
    [row] = rows(session)
    assert (row.organisation, row.country, row.status) == (
        "Coastal Workers Union",
        "KE",
        "pending_confirmation",
    )
    assert row.org_key == "coastal workers union"
    assert row.comment == "We sign with pride."
    assert row.ip == "127.0.0.1"

    # The mail: to the contact address, with the link, without echoing what was typed.
    assert run_mail_tasks(app, enqueued) == ["sent"]
    [received] = smtp_server.wait_for(1)
    message = received.message
    assert received.rcpt_tos == ["achieng@coastal.example"]
    assert message["Subject"] == (
        "Please confirm your endorsement: Circular No. 27: Global Compact: our statement"
    )
    assert message["Auto-Submitted"] == "auto-generated"
    assert "List-Unsubscribe" not in message
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    for body in (text, html):
        assert "valid for 7 days" in body
        assert "Coastal Workers Union" not in body and "We sign with pride" not in body
    assert CONFIRM_LINK.search(html)
    path = confirm_path(message)

    # Opening the link shows the details and changes nothing; the button confirms.
    page = client.get(path)
    assert page.status_code == 200
    assert "Coastal Workers Union" in page.text and "Kenya" in page.text
    assert rows(session)[0].status == "pending_confirmation"
    confirmed = client.post(path)
    assert confirmed.status_code == 200
    assert "the endorsement of Coastal Workers Union is confirmed" in confirmed.text
    [row] = rows(session)
    assert row.status == "confirmed" and row.confirmed_at is not None
    assert listed(client.get(page_url(circular)).text) == []  # not before approval

    # The secretariat approves it.
    admin = auth.create_user("sender@example.org", role="sender")
    auth.login("sender@example.org")
    listing = client.get(f"/admin/circulars/{circular.id}/endorsements")
    assert "Coastal Workers Union" in listing.text and "Awaiting approval (1)" in listing.text
    done = admin_decide(auth, circular, [row.id], "approve")
    assert "Approved 1 endorsement." in done.text
    [row] = rows(session)
    assert row.status == "approved"
    assert row.decided_by_id == admin.id and row.decided_at is not None

    archive = client.get(page_url(circular)).text
    assert listed(archive) == ["Coastal Workers Union (Kenya)"]
    assert "1 organisation has endorsed this statement." in archive


def test_end_to_end_through_the_worker(app, client, session, worker, smtp_server):
    circular = publish(session)
    session.remove()  # let the worker write (SQLite allows one writer at a time)
    assert endorse(client, circular).status_code == 200
    session.remove()
    [received] = smtp_server.wait_for(1)
    time.sleep(1)  # a second mail would have come by now
    assert len(smtp_server.messages()) == 1
    assert received.rcpt_tos == ["achieng@coastal.example"]
    assert client.post(confirm_path(received.message)).status_code == 200
    [row] = rows(session)
    assert row.status == "confirmed"


# --- links --------------------------------------------------------------------------------


def test_expired_tampered_and_foreign_links_are_refused_and_change_nothing(
    app, client, session, enqueued, monkeypatch
):
    circular = publish(session)
    endorse(client, circular)
    [row] = rows(session)
    settings = app.extensions["circulars.settings"]
    tokens = EndorsementTokens(settings.secret_key, timedelta(days=7))
    submission = Submission(
        "Coastal Workers Union", "KE", "Achieng Otieno", "achieng@coastal.example", ""
    )
    with monkeypatch.context() as patch:
        made_at = int(time.time()) - 8 * 86400  # CONFIRM_TOKEN_MAX_AGE_DAYS is 7
        patch.setattr(TimestampSigner, "get_timestamp", lambda _self: made_at)
        expired = tokens.make(row.id, submission)
    good = tokens.make(row.id, submission)
    payload, _dot, signature = good.rpartition(".")
    tampered = f"{payload}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
    other_key = EndorsementTokens("another secret", timedelta(days=7)).make(row.id, submission)
    subscribe_link = app.extensions["circulars.confirm_tokens"].make_lists("confirm", row.id, [1])

    for token, words in [
        (expired, "This link has expired"),
        (tampered, "This link does not work"),
        (other_key, "This link does not work"),
        (subscribe_link, "This link does not work"),
    ]:
        for method in ("get", "post"):
            response = getattr(client, method)(f"/endorsements/confirm/{token}")
            assert response.status_code == 400, (words, method)
            assert words in response.text
    assert rows(session)[0].status == "pending_confirmation"
    # The good one still works; a link for a row that is gone says so.
    assert client.post(f"/endorsements/confirm/{good}").status_code == 200
    gone = tokens.make(row.id + 1000, submission)
    assert client.post(f"/endorsements/confirm/{gone}").status_code == 404


# --- closing --------------------------------------------------------------------------------


def test_closed_statement_says_so_and_refuses_submissions(client, session, enqueued):
    by_hand = publish(session, 28, "Closed by hand")
    form = client.get(form_url(by_hand))
    past = publish(session, 27, "Closed by date", endorsement_closes_at=utcnow() - timedelta(1))
    page = client.get(form_url(past))
    assert page.status_code == 200
    assert "Endorsements are closed" in page.text
    assert 'name="organisation"' not in page.text
    posted = client.post(
        form_url(past),
        data={
            "csrf_token": csrf_token(form.text),
            "organisation": "Late Org",
            "country": "FR",
            "contact_name": "Late",
            "email": "late@example.org",
        },
    )
    assert posted.status_code == 409
    assert "Endorsements are closed" in posted.text
    assert "This statement is closed for endorsement." in client.get(page_url(past)).text

    # A form opened while open, sent after the secretariat closed it by hand.
    by_hand.endorsement_open = False
    session.commit()
    late = client.post(
        form_url(by_hand),
        data={
            "csrf_token": csrf_token(form.text),
            "organisation": "Late Org",
            "country": "FR",
            "contact_name": "Late",
            "email": "late@example.org",
            "website": "",
        },
    )
    assert late.status_code == 409
    assert rows(session) == [] and mail_tasks(enqueued) == []

    # Never opened, or kept out of the archive: no form at all.
    never = publish(session, 29, "Never opened", open=False)
    hidden = publish(session, 30, "Hidden", in_archive=False)
    assert client.get(form_url(never)).status_code == 404
    assert client.get(form_url(hidden)).status_code == 404


def test_closing_time_is_honoured_to_the_minute(client, session, enqueued):
    circular = publish(session, endorsement_closes_at=utcnow() + timedelta(seconds=2))
    assert endorse(client, circular).status_code == 200
    time.sleep(2.5)
    assert "Endorsements are closed" in client.get(form_url(circular)).text


def test_admin_opens_closes_and_reopens(auth, client, session, app, monkeypatch):
    current = app.extensions["circulars.settings"]
    monkeypatch.setitem(
        app.extensions, "circulars.settings", replace(current, timezone="Europe/Zurich")
    )
    circular = publish(session, open=False)
    auth.create_user("sender@example.org", role="sender")
    auth.login("sender@example.org")
    admin_page = f"/admin/circulars/{circular.id}/endorsements"
    assert "Sign-on statement" in client.get(f"/admin/circulars/{circular.id}").text
    assert "Open for endorsement" in client.get(admin_page).text

    refused = auth.post_form(
        admin_page,
        f"{admin_page}/open",
        {"closes_at": "2020-01-01 10:00"},
        follow_redirects=True,
    )
    assert "Not opened:" in refused.text and "is in the past" in refused.text
    session.expire_all()
    assert session.get(Circular, circular.id).endorsement_open is False

    next_year = utcnow().year + 1
    opened = auth.post_form(
        admin_page, f"{admin_page}/open", {"closes_at": f"{next_year}-12-31 18:00"}
    )
    assert opened.status_code == 302
    session.expire_all()
    row = session.get(Circular, circular.id)
    assert row.endorsement_open is True and row.endorsement_opened_at is not None
    # 18:00 in Zurich in winter is 17:00 UTC.
    assert row.endorsement_closes_at == datetime(next_year, 12, 31, 17, 0, tzinfo=UTC)
    public = client.get(page_url(row)).text
    assert f"31 December {next_year}, 18:00 (Europe/Zurich)" in public

    auth.post_form(admin_page, f"{admin_page}/close", {})
    session.expire_all()
    assert session.get(Circular, circular.id).endorsement_open is False
    assert "Endorsements are closed" in client.get(form_url(row)).text

    auth.post_form(admin_page, f"{admin_page}/open", {"closes_at": ""})
    session.expire_all()
    row = session.get(Circular, circular.id)
    assert row.endorsement_open is True and row.endorsement_closes_at is None
    assert 'name="organisation"' in client.get(form_url(row)).text


def test_only_senders_open_decide_and_export(auth, client, session):
    circular = publish(session)
    auth.create_user("editor@example.org", role="editor")
    auth.login("editor@example.org")
    base = f"/admin/circulars/{circular.id}/endorsements"
    page = client.get(base)
    assert page.status_code == 200  # looking is fine
    assert "Approve selected" not in page.text and "Close now" not in page.text
    token = csrf_token(client.get("/admin/circulars/new").text)
    assert client.post(f"{base}/close", data={"csrf_token": token}).status_code == 403
    assert client.post(f"{base}/open", data={"csrf_token": token}).status_code == 403
    decided = client.post(f"{base}/decide", data={"csrf_token": token, "action": "approve"})
    assert decided.status_code == 403
    assert client.get(f"{base}.csv").status_code == 403


# --- duplicates --------------------------------------------------------------------------


def test_duplicates_are_merged_newest_details_kept_status_never_moves_back(
    app, auth, client, session, enqueued, smtp_server
):
    circular = publish(session)
    # Two submissions before any confirmation: one row, the newest details.
    endorse(client, circular, organisation="Coastal Workers' Union", email="old@coastal.example")
    endorse(
        client,
        circular,
        organisation="  COASTAL workers union. ",
        contact_name="Juma Mwangi",
        email="juma@coastal.example",
    )
    [row] = rows(session)
    assert row.submissions == 2
    assert (row.organisation, row.contact_name, row.email) == (
        "COASTAL workers union.",
        "Juma Mwangi",
        "juma@coastal.example",
    )
    # The same name in another country is another organisation.
    endorse(client, circular, country="TZ", email="tz@coastal.example")
    assert len(rows(session)) == 2

    # Confirm and approve the Kenyan one.
    assert run_mail_tasks(app, enqueued) == ["sent", "sent", "sent"]
    juma_link = confirm_path(smtp_server.messages()[1].message)
    assert client.post(juma_link).status_code == 200
    kenya = session.scalar(select(Endorsement).where(Endorsement.country == "KE"))
    auth.create_user("sender@example.org", role="sender")
    auth.login("sender@example.org")
    admin_decide(auth, circular, [kenya.id], "approve")

    # The same email confirming twice changes nothing.
    again = client.post(juma_link)
    assert "already confirmed; nothing has changed" in again.text
    kenya = rows(session)[0]
    assert (kenya.status, kenya.submissions) == ("approved", 2)
    updated = kenya.updated_at

    # A third submission with a new contact: counted, but the approved entry keeps its
    # confirmed contact until the new address confirms; it stays approved.
    smtp_server.reset()
    endorse(client, circular, contact_name="Amina Bakari", email="amina@coastal.example")
    kenya = rows(session)[0]
    assert kenya.submissions == 3
    assert (kenya.contact_name, kenya.email, kenya.status) == (
        "Juma Mwangi",
        "juma@coastal.example",
        "approved",
    )
    assert run_mail_tasks(app, enqueued) == ["sent"]
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["amina@coastal.example"]
    assert client.post(confirm_path(mail.message)).status_code == 200
    kenya = rows(session)[0]
    assert (kenya.contact_name, kenya.email, kenya.status) == (
        "Amina Bakari",
        "amina@coastal.example",
        "approved",
    )
    assert kenya.updated_at > updated
    assert listed(client.get(page_url(circular)).text) == ["Coastal Workers Union (Kenya)"]
    assert normalise_organisation("Coastal Workers Union (Mombasa)") != kenya.org_key


def site_tokens(app: Any) -> EndorsementTokens:
    """The links the site makes and reads (its secret key, its expiry)."""
    with app.test_request_context():
        from circulars.web.public.endorse import tokens

        return tokens()


def _links_at(monkeypatch: Any, tokens: EndorsementTokens):
    """A link made at a chosen moment, as the form makes one right after storing a submission."""

    def make(moment: datetime, endorsement_id: int, submission: Submission) -> str:
        with monkeypatch.context() as patched:
            patched.setattr(TimestampSigner, "get_timestamp", lambda self: int(moment.timestamp()))
            return tokens.make(endorsement_id, submission)

    return make


def test_links_used_out_of_order_never_bring_older_details_back(app, client, session, monkeypatch):
    """Each submission mails its own link. Used late, an older link changes nothing once a
    later submission's details are on file, and before any confirmation it confirms
    nothing if a later submission gave another address (the later link does)."""
    from circulars.endorsements.service import confirm, submit

    circular = publish(session)
    tokens = site_tokens(app)
    link_at = _links_at(monkeypatch, tokens)
    start = utcnow() - timedelta(hours=2)

    def submitted(minutes: int, name: str, email: str) -> str:
        submission = Submission("Coastal Workers Union", "KE", name, email, "")
        moment = start + timedelta(minutes=minutes)
        outcome = submit(session, circular, submission, ip=None, now=moment)
        session.commit()
        return link_at(moment, outcome.endorsement_id, submission)

    def used(link: str, minutes: int):
        outcome = confirm(session, tokens.read(link), now=start + timedelta(minutes=minutes))
        session.commit()
        return outcome

    # Before any confirmation: Juma, then Amina with another address.
    juma = submitted(0, "Juma Mwangi", "juma@coastal.example")
    amina = submitted(10, "Amina Bakari", "amina@coastal.example")
    late = used(juma, 15)
    assert late.superseded and not late.changed
    [row] = rows(session)
    assert (row.status, row.contact_name, row.email) == (
        "pending_confirmation",
        "Amina Bakari",
        "amina@coastal.example",
    )
    assert used(amina, 16).newly_confirmed
    # Confirmed: two more submissions wait in their links; the later one is used first.
    zawadi = submitted(20, "Zawadi Otieno", "zawadi@coastal.example")
    baraka = submitted(30, "Baraka Kamau", "baraka@coastal.example")
    assert used(baraka, 35).details_changed
    stale = used(zawadi, 40)
    assert not stale.changed and not stale.superseded
    [row] = rows(session)
    assert (row.status, row.contact_name, row.email) == (
        "confirmed",
        "Baraka Kamau",
        "baraka@coastal.example",
    )
    # Through the page: the superseded link says so, with the same answer in any case.
    kiprop = submitted(50, "Kiprop", "kiprop@coastal.example")
    assert used(kiprop, 51).details_changed
    page = client.post(f"/endorsements/confirm/{zawadi}")
    assert page.status_code == 200 and "already confirmed; nothing has changed" in page.text


def test_a_superseded_link_says_to_use_the_newer_one(app, client, session, monkeypatch):
    from circulars.endorsements.service import submit

    circular = publish(session)
    link_at = _links_at(monkeypatch, site_tokens(app))
    start = utcnow() - timedelta(hours=1)
    first = Submission("Coastal Workers Union", "KE", "Juma", "juma@coastal.example", "")
    outcome = submit(session, circular, first, ip=None, now=start)
    session.commit()
    old_link = link_at(start, outcome.endorsement_id, first)
    later = Submission("Coastal Workers Union", "KE", "Amina", "amina@coastal.example", "")
    submit(session, circular, later, ip=None, now=start + timedelta(minutes=5))
    session.commit()

    page = client.post(f"/endorsements/confirm/{old_link}")
    assert page.status_code == 409
    assert "replaced by a newer one" in page.text
    [row] = rows(session)
    assert (row.status, row.email) == ("pending_confirmation", "amina@coastal.example")


# --- the secretariat's decision ---------------------------------------------------------------


def test_rejected_never_shown_unconfirmed_cannot_be_approved_and_are_listed_apart(
    app, auth, client, session, enqueued, smtp_server
):
    circular = publish(session)
    good = submitted_and_confirmed(
        app, client, session, enqueued, smtp_server, circular, organisation="Aa Alliance"
    )
    spam = submitted_and_confirmed(
        app,
        client,
        session,
        enqueued,
        smtp_server,
        circular,
        organisation="Cheap Pills Ltd",
        email="spam@pills.example",
    )
    endorse(client, circular, organisation="Unconfirmed Org", email="later@unconfirmed.example")
    unconfirmed = rows(session)[-1]
    enqueued.clear()  # its mail is never opened
    assert unconfirmed.status == "pending_confirmation"

    auth.create_user("sender@example.org", role="sender")
    auth.login("sender@example.org")
    base = f"/admin/circulars/{circular.id}/endorsements"
    waiting = client.get(base).text
    assert "Aa Alliance" in waiting and "Cheap Pills Ltd" in waiting
    assert "Unconfirmed Org" not in waiting  # not shown as awaiting approval
    apart = client.get(f"{base}?status=pending_confirmation").text
    assert "Unconfirmed Org" in apart and "Email not confirmed yet (1)" in apart

    done = admin_decide(auth, circular, [good.id, spam.id, unconfirmed.id], "approve")
    assert "Approved 2 endorsements." in done.text
    assert "1 left as they are: their address is not confirmed yet." in done.text
    done = admin_decide(auth, circular, [spam.id], "reject")
    assert "Rejected 1 endorsement." in done.text
    statuses = {row.organisation: row.status for row in rows(session)}
    assert statuses == {
        "Aa Alliance": "approved",
        "Cheap Pills Ltd": "rejected",
        "Unconfirmed Org": "pending_confirmation",
    }
    archive = client.get(page_url(circular)).text
    assert listed(archive) == ["Aa Alliance (Kenya)"]
    assert "Cheap Pills" not in archive and "Unconfirmed Org" not in archive

    # A rejected organisation that submits and confirms again stays rejected.
    smtp_server.reset()
    endorse(client, circular, organisation="cheap pills ltd", email="spam2@pills.example")
    assert run_mail_tasks(app, enqueued) == ["sent"]
    client.post(confirm_path(smtp_server.wait_for(1)[0].message))
    assert {row.organisation: row.status for row in rows(session)}["cheap pills ltd"] == (
        "rejected"
    )
    assert "cheap pills" not in client.get(page_url(circular)).text.lower()
    # Ids of another circular are ignored.
    other = publish(session, 28, "Other")
    done = admin_decide(auth, other, [good.id], "reject")
    assert rows(session)[0].status == "approved"


def test_the_list_is_sorted_and_counted_in_the_reader_language(
    app, auth, client, session, enqueued, smtp_server
):
    circular = publish(session)
    for organisation, country, email in [
        ("zeta Network", "DE", "z@example.org"),
        ("Alpha Group", "FR", "a@example.org"),
        ("beta Union", "MA", "b@example.org"),
    ]:
        submitted_and_confirmed(
            app,
            client,
            session,
            enqueued,
            smtp_server,
            circular,
            organisation=organisation,
            country=country,
            email=email,
        )
    auth.create_user("sender@example.org", role="sender")
    auth.login("sender@example.org")
    admin_decide(auth, circular, [row.id for row in rows(session)], "approve")
    english = client.get(page_url(circular)).text
    assert listed(english) == [
        "Alpha Group (France)",
        "beta Union (Morocco)",
        "zeta Network (Germany)",
    ]
    assert "3 organisations have endorsed this statement." in english
    french = client.get(page_url(circular) + "?lang=fr").text
    assert listed(french) == [
        "Alpha Group (France)",
        "beta Union (Maroc)",
        "zeta Network (Allemagne)",
    ]


# --- safety ------------------------------------------------------------------------------------


def test_csrf_is_required_on_the_public_and_admin_forms(auth, client, session, enqueued):
    circular = publish(session)
    refused = client.post(
        form_url(circular),
        data={
            "organisation": "No Token Org",
            "country": "KE",
            "contact_name": "X",
            "email": "x@example.org",
            "website": "",
        },
    )
    assert refused.status_code == 400
    assert rows(session) == [] and mail_tasks(enqueued) == []

    session.add(
        Endorsement(
            circular_id=circular.id,
            organisation="Confirmed Org",
            org_key="confirmed org",
            country="KE",
            contact_name="C",
            email="c@example.org",
            comment="",
            status="confirmed",
        )
    )
    session.commit()
    auth.create_user("sender@example.org", role="sender")
    auth.login("sender@example.org")
    base = f"/admin/circulars/{circular.id}/endorsements"
    [row] = rows(session)
    client.post(f"{base}/decide", data={"ids": [str(row.id)], "action": "approve"})
    client.post(f"{base}/close", data={})
    assert rows(session)[0].status == "confirmed"
    session.expire_all()
    assert session.get(Circular, circular.id).endorsement_open is True


def test_html_in_names_is_shown_as_text_everywhere(
    app, auth, client, session, enqueued, smtp_server
):
    circular = publish(session)
    evil = '<script>alert("x")</script><b>Bold</b> & Co'
    row = submitted_and_confirmed(
        app, client, session, enqueued, smtp_server, circular, organisation=evil
    )
    assert row.organisation == evil
    auth.create_user("sender@example.org", role="sender")
    auth.login("sender@example.org")
    admin_page = client.get(f"/admin/circulars/{circular.id}/endorsements").text
    assert "<script>alert" not in admin_page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;b&gt;Bold&lt;/b&gt; &amp; Co" in (
        admin_page
    )
    admin_decide(auth, circular, [row.id], "approve")
    archive = client.get(page_url(circular)).text
    assert "<script>alert" not in archive and "<b>Bold</b>" not in archive
    assert "&lt;script&gt;" in endorsed_by_section(archive)


def test_honeypot_and_bad_input_store_nothing(client, session, enqueued):
    circular = publish(session)
    bot = endorse(client, circular, website="http://spam.example")
    assert bot.status_code == 200 and "Check your inbox" in bot.text
    for fields, message in [
        ({"country": "XX"}, "Choose a country from the list."),
        ({"country": ""}, "Choose a country from the list."),
        ({"email": "not an address"}, "This is not a valid email address."),
        ({"organisation": "   "}, "Enter the name of your organisation."),
        ({"organisation": "!!!"}, "Enter the name of your organisation."),
        ({"contact_name": ""}, "Enter the name of a contact person."),
        ({"comment": "x" * 1001}, "Field cannot be longer than 1000 characters."),
        ({"organisation": "Line\nbreak"}, "Must be a single line."),
    ]:
        answer = endorse(client, circular, **fields)
        assert answer.status_code == 400, fields
        assert message in answer.text, fields
    assert rows(session) == [] and mail_tasks(enqueued) == []


def test_limits_per_ip_and_per_address(app, client, session, enqueued, monkeypatch):
    current = app.extensions["circulars.settings"]
    monkeypatch.setitem(
        app.extensions,
        "circulars.settings",
        replace(current, subscribe_rate_limit="5 per minute"),
    )
    circular = publish(session)
    token = csrf_token(client.get(form_url(circular)).text)
    codes = [
        client.post(
            form_url(circular),
            data={
                "csrf_token": token,
                "organisation": f"Organisation {n}",
                "country": "KE",
                "contact_name": "Same Person",
                "email": "victim@example.org",
                "website": "",
            },
        ).status_code
        for n in range(7)
    ]
    assert codes == [200] * 5 + [429, 429]
    assert len(rows(session)) == 5
    # One address gets at most three confirmation mails an hour, whatever the organisation.
    assert len(mail_tasks(enqueued)) == 3
    # The subscribe form has its own budget.
    assert client.get("/subscribe").status_code == 200


def test_csv_export_neutralises_formulas(auth, client, session):
    circular = publish(session)
    for organisation, contact, status in [
        ('=HYPERLINK("http://evil.example","Click")', "+Plus Name", "approved"),
        ("Plain Org", "Ana", "confirmed"),
    ]:
        session.add(
            Endorsement(
                circular_id=circular.id,
                organisation=organisation,
                org_key=normalise_organisation(organisation),
                country="KE",
                contact_name=contact,
                email="-x@example.org",
                comment="@comment",
                status=status,
                submissions=2,
            )
        )
    session.commit()
    auth.create_user("sender@example.org", role="sender")
    auth.login("sender@example.org")
    response = client.get(f"/admin/circulars/{circular.id}/endorsements.csv?status=all")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert 'filename="circular-27-endorsements-all.csv"' in response.headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert [row["organisation"] for row in table] == [
        '\'=HYPERLINK("http://evil.example","Click")',
        "Plain Org",
    ]
    first = table[0]
    assert first["contact_name"] == "'+Plus Name"
    assert first["email"] == "'-x@example.org"
    assert first["comment"] == "'@comment"
    assert (first["country_code"], first["country"], first["status"], first["submissions"]) == (
        "KE",
        "Kenya",
        "approved",
        "2",
    )
    only_approved = client.get(f"/admin/circulars/{circular.id}/endorsements.csv?status=approved")
    assert len(list(csv.DictReader(io.StringIO(only_approved.text)))) == 1


# --- in a later circular -------------------------------------------------------------------------


def test_the_list_is_inserted_into_a_draft_as_escaped_markdown(auth, client, session):
    statement = publish(session)
    for organisation, country in [
        ("[Click](http://evil.example) *Union*", "KE"),
        ("Alpha Group", "FR"),
    ]:
        session.add(
            Endorsement(
                circular_id=statement.id,
                organisation=organisation,
                org_key=normalise_organisation(organisation),
                country=country,
                contact_name="C",
                email="c@example.org",
                comment="",
                status="approved",
            )
        )
    session.add(
        Endorsement(
            circular_id=statement.id,
            organisation="Rejected Org",
            org_key="rejected org",
            country="KE",
            contact_name="C",
            email="r@example.org",
            comment="",
            status="rejected",
        )
    )
    draft = Circular(title="Follow-up", body_markdown="Thank you to all who signed.")
    session.add(draft)
    session.commit()
    auth.create_user("editor@example.org", role="editor")
    auth.login("editor@example.org")
    edit_page = client.get(f"/admin/circulars/{draft.id}").text
    assert "Insert the endorsement list of" in edit_page
    assert "Circular No. 27: Global Compact: our statement (2)" in edit_page

    done = auth.post_form(
        f"/admin/circulars/{draft.id}",
        f"/admin/circulars/{draft.id}/insert-endorsements",
        {"number": "27"},
        follow_redirects=True,
    )
    assert "Inserted the endorsement list of Circular No. 27" in done.text
    session.expire_all()
    draft = session.get(Circular, draft.id)
    assert draft.revision == 2
    assert draft.body_markdown == (
        "Thank you to all who signed.\n\n"
        "**Endorsed by 2 organisations** (Circular No. 27):\n\n"
        "- Alpha Group (France)\n"
        "- \\[Click\\]\\(http\\:\\/\\/evil\\.example\\) \\*Union\\* (Kenya)\n"
    )
    # Rendered, the name is text: no link, no emphasis.
    from circulars.mail.render import markdown_to_html

    rendered = markdown_to_html(draft.body_markdown)
    assert "<a " not in rendered and "<em>" not in rendered
    assert "[Click](http://evil.example) *Union* (Kenya)" in rendered

    missing = auth.post_form(
        f"/admin/circulars/{draft.id}",
        f"/admin/circulars/{draft.id}/insert-endorsements",
        {"number": "99"},
        follow_redirects=True,
    )
    assert "there is no Circular No. 99" in missing.text
    session.expire_all()
    assert session.get(Circular, draft.id).revision == 2


def test_escape_markdown_leaves_letters_alone():
    assert escape_markdown("Réseau des femmes – Sénégal") == "Réseau des femmes – Sénégal"
    assert escape_markdown("A_B`C#") == "A\\_B\\`C\\#"


def test_submissions_count_both_of_two_at_once(app, session):
    """Two merges at the same moment are both counted (one UPDATE each, no lost update)."""
    from circulars.endorsements.service import submit

    circular = publish(session)
    base = Submission("Same Org", "KE", "A", "a@example.org", "")
    first = submit(session, circular, base, ip=None)
    session.commit()
    submit(session, circular, replace(base, email="b@example.org"), ip=None)
    submit(session, circular, replace(base, email="c@example.org"), ip=None)
    session.commit()
    assert session.scalar(select(func.count()).select_from(Endorsement)) == 1
    assert session.get(Endorsement, first.endorsement_id).submissions == 3


@pytest.mark.parametrize("slug", ["wrong-slug"])
def test_a_wrong_slug_redirects_to_the_form(client, session, slug):
    circular = publish(session)
    response = client.get(f"/circulars/{circular.number}-{slug}/endorse")
    assert response.status_code == 301
    assert response.headers["Location"].endswith(form_url(circular))


def test_purge_forgets_only_endorsements_nobody_confirmed(session):
    from circulars.endorsements.service import purge_unconfirmed

    circular = publish(session)
    old = utcnow() - timedelta(days=31)
    for name, status, updated in [
        ("Stale Unconfirmed", "pending_confirmation", old),
        ("Fresh Unconfirmed", "pending_confirmation", utcnow()),
        ("Old Confirmed", "confirmed", old),
        ("Old Approved", "approved", old),
    ]:
        session.add(
            Endorsement(
                circular_id=circular.id,
                organisation=name,
                org_key=normalise_organisation(name),
                country="KE",
                contact_name="C",
                email="c@example.org",
                comment="",
                status=status,
                created_at=old,
                updated_at=updated,
            )
        )
    session.commit()
    assert purge_unconfirmed(session, older_than=timedelta(days=30)) == 1
    session.commit()
    assert sorted(row.organisation for row in rows(session)) == [
        "Fresh Unconfirmed",
        "Old Approved",
        "Old Confirmed",
    ]


def test_the_form_and_the_list_in_arabic_right_to_left(client, session):
    circular = publish(session)
    session.add(
        Endorsement(
            circular_id=circular.id,
            organisation="شبكة العمال المهاجرين",
            org_key=normalise_organisation("شبكة العمال المهاجرين"),
            country="KE",
            contact_name="C",
            email="c@example.org",
            comment="",
            status="approved",
        )
    )
    session.commit()
    form = client.get(form_url(circular) + "?lang=ar").text
    assert '<html lang="ar" dir="rtl">' in form
    assert "أيّد هذا البيان" in form
    assert '<option value="KE">كينيا</option>' in form
    archive = client.get(page_url(circular) + "?lang=ar").text
    assert listed(archive) == ["شبكة العمال المهاجرين (كينيا)"]
    assert "أيّدت منظمة واحدة هذا البيان (1)." in archive


# --- the command line ------------------------------------------------------------------------


def test_cli_opens_lists_decides_exports_and_closes(
    app, runner, client, session, enqueued, smtp_server, tmp_path
):
    circular = publish(session, open=False)
    result = runner.invoke(["endorsements", "open", "27", "--until", "2099-06-30 18:00"])
    assert result.exit_code == 0, result.output
    assert "Circular No. 27 is open until 2099-06-30 18:00 (UTC) for endorsement." in result.output
    assert endorse(client, circular).status_code == 200
    run_mail_tasks(app, enqueued)
    assert client.post(confirm_path(smtp_server.messages()[-1].message)).status_code == 200
    endorse(client, circular, organisation="=HYPERLINK(1)", email="bad@x.example")  # unconfirmed
    confirmed, pending = sorted(rows(session), key=lambda row: row.status)

    listed_out = runner.invoke(["endorsements", "list", "27"]).output
    assert "open until 2099-06-30 18:00 (UTC); 1 pending confirmation, 1 confirmed" in listed_out
    assert f"{confirmed.id}\tconfirmed\t{confirmed.organisation}\tKE\t" in listed_out
    only = runner.invoke(["endorsements", "list", "27", "--status", "confirmed"]).output
    assert str(pending.id) + "\t" not in only

    decided = runner.invoke(["endorsements", "approve", "27", str(confirmed.id), str(pending.id)])
    assert decided.exit_code == 0, decided.output
    assert "1 approved, 0 already approved, 1 not decided" in decided.output
    assert listed(client.get(page_url(circular)).text) == [f"{confirmed.organisation} (Kenya)"]
    # An id of no endorsement of this circular: refused, nothing changes.
    refused = runner.invoke(["endorsements", "reject", "27", str(confirmed.id), "999999"])
    assert refused.exit_code == 2 and "has no endorsement 999999" in refused.output
    session.expire_all()
    assert session.get(Endorsement, confirmed.id).status == "approved"

    target = tmp_path / "endorsements.csv"
    exported = runner.invoke(["endorsements", "export", "27", "-o", str(target)])
    assert exported.exit_code == 0, exported.output
    lines = list(csv.reader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert lines[0][0] == "organisation" and len(lines) == 3
    assert [line[0] for line in lines[1:] if "HYPERLINK" in line[0]] == ["'=HYPERLINK(1)"]

    closed = runner.invoke(["endorsements", "close", "27"])
    assert closed.exit_code == 0 and "closed for endorsement" in closed.output
    session.expire_all()
    assert not session.get(Circular, circular.id).endorsement_open


def test_cli_refuses_bad_input_and_changes_nothing(runner, session):
    publish(session, open=False)
    draft = Circular(title="Draft", body_markdown="x")
    session.add(draft)
    session.commit()
    for args, message in (
        (["endorsements", "open", "99"], "there is no circular No. 99"),
        (["endorsements", "open", "27", "--until", "2001-01-01 10:00"], "--until:"),
        (["endorsements", "open", "27", "--until", "next week"], "is not a date and time"),
        (["endorsements", "list", "27", "--status", "maybe"], "Invalid value"),
    ):
        result = runner.invoke(args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
    session.expire_all()
    assert session.scalar(select(Circular).where(Circular.number == 27)).endorsement_open is False
