"""Send control on both stacks: schedule, pause, resume, cancel (CLI and admin), pauses that
every real worker honours within 2 seconds, and the pause a send gives itself after
consecutive relay errors."""

from __future__ import annotations

import functools
import importlib.util
import re
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from celery.exceptions import Retry
from sqlalchemy import func, select, update

from circulars.models import Circular, Delivery, MailingList, Send, utcnow
from circulars.sending import control, engine
from circulars.sending.service import create_send
from circulars.subscribers.service import add_to_list
from circulars.tasks import START_DUE_SENDS, START_SEND, SWEEP_SENDS

from conftest import csrf_token

ZURICH = "Europe/Zurich"
REFUSAL_421 = "421 4.7.0 Too many messages from you, try again later"


# --- helpers ------------------------------------------------------------------------------


def make_audience(session: Any, count: int, slug: str = "members") -> MailingList:
    members = MailingList(slug=slug, name="Member organisations")
    session.add(members)
    session.flush()
    for index in range(count):
        add_to_list(session, members, f"person{index:04d}@example.org", name=f"Person {index}")
    session.commit()
    return members


def make_draft(session: Any, members: MailingList, title: str = "Annual meeting") -> Circular:
    draft = Circular(title=title, body_markdown="The meeting is on **Monday**.")
    draft.lists = [members]
    session.add(draft)
    session.commit()
    return draft


def started(session: Any, ctx: Any, members: MailingList) -> tuple[Send, list[tuple[int, int]]]:
    """A send created and snapshotted in this process, its batches not yet run."""
    draft = make_draft(session, members)
    send = create_send(session, draft.id, [members.id])
    session.commit()
    return send, engine.start_send(session, send.id, ctx)


def fresh(session: Any, send_id: int) -> Send:
    session.expire_all()
    row = session.get(Send, send_id)
    session.commit()
    return row


def statuses(session: Any, send_id: int) -> dict[str, int]:
    rows = session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.send_id == send_id)
        .group_by(Delivery.status)
    ).all()
    session.commit()
    return dict(rows)


def received_by(smtp_server: Any) -> Counter[str]:
    return Counter(rcpt for item in smtp_server.messages() for rcpt in item.rcpt_tos)


def in_zone(app: Any, monkeypatch: pytest.MonkeyPatch, zone: str) -> None:
    """Run the CLI and the admin as an organisation in `zone` (TIMEZONE)."""
    settings = replace(app.extensions["circulars.settings"], timezone=zone)
    monkeypatch.setitem(app.extensions, "circulars.settings", settings)


def local(moment: datetime, zone: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return moment.astimezone(ZoneInfo(zone)).strftime(fmt)


@pytest.fixture
def ctx(app: Any) -> Any:
    return app.extensions["circulars.send_context"]


def sign_in(auth: Any, role: str) -> Any:
    email = f"{role}@example.org"
    auth.create_user(email, role)
    assert auth.login(email).status_code == 302
    return auth


# --- parsing a start time -----------------------------------------------------------------


def test_a_start_time_is_read_in_the_organisations_time_zone():
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    # Zurich (Geneva's zone) is UTC+1 in winter: 09:00 there is 08:00 UTC.
    assert control.parse_send_time("2026-12-01 09:00", ZURICH, now) == datetime(
        2026, 12, 1, 8, 0, tzinfo=UTC
    )
    # The browser's datetime-local form, and ISO 8601 with an offset taken as written.
    assert control.parse_send_time("2026-12-01T09:00", ZURICH, now).hour == 8
    assert control.parse_send_time("2026-12-01T09:00-05:00", ZURICH, now) == datetime(
        2026, 12, 1, 14, 0, tzinfo=UTC
    )
    with pytest.raises(control.ControlRefused, match=r"2026-11-01 09:00 \(Europe/Zurich\) is in"):
        control.parse_send_time("2026-11-01 09:00", ZURICH, now)
    with pytest.raises(control.ControlRefused, match="not a date and time"):
        control.parse_send_time("next tuesday", ZURICH, now)
    # 02:30 on the last Sunday of March 2027 never happens in Zurich: clocks jump 02:00 -> 03:00.
    with pytest.raises(control.ControlRefused, match="does not exist in Europe/Zurich"):
        control.parse_send_time("2027-03-28 02:30", ZURICH, now)


def test_the_relay_error_limit_is_a_checked_setting(tmp_path):
    from circulars.config import ConfigError, load_settings
    from circulars.wiring import send_context

    def load(**env: str) -> Any:
        return load_settings({"INSTANCE_PATH": str(tmp_path), **env})

    assert load().send_pause_after_relay_errors == 10
    settings = load(SEND_PAUSE_AFTER_RELAY_ERRORS="0")  # never pause by itself
    assert settings.send_pause_after_relay_errors == 0
    assert send_context(load(SEND_PAUSE_AFTER_RELAY_ERRORS="25")).pause_after_relay_errors == 25
    for bad in ("-1", "ten", "2.5"):
        with pytest.raises(
            ConfigError, match=f"SEND_PAUSE_AFTER_RELAY_ERRORS='{bad}' is not valid"
        ):
            load(SEND_PAUSE_AFTER_RELAY_ERRORS=bad)


# --- schedule -----------------------------------------------------------------------------


def test_cli_schedules_a_send_without_numbering_it_and_due_sends_start_once(
    app, runner, session, enqueued, monkeypatch
):
    in_zone(app, monkeypatch, ZURICH)
    members = make_audience(session, 3)
    draft = make_draft(session, members)
    when = (datetime.now(UTC) + timedelta(days=3)).replace(second=0, microsecond=0)

    result = runner.invoke(
        ["send", str(draft.id), "--list", "members", "--at", local(when, ZURICH)]
    )
    assert result.exit_code == 0, result.output
    send = session.scalars(select(Send)).one()
    assert f"Send {send.id} scheduled for {local(when, ZURICH)} (Europe/Zurich)" in result.output
    assert (send.status, send.scheduled_at) == ("scheduled", when)
    assert enqueued == []  # nothing starts before its time
    session.refresh(draft)
    assert draft.number is None and draft.is_draft  # numbered when it is first sent

    listed = runner.invoke(["sends", "list"])
    assert f"scheduled  at {local(when, ZURICH)} (Europe/Zurich)" in listed.output
    # Not due yet: the beat job leaves it alone.
    assert control.start_due_sends(session) == []

    # Its time comes; beat fires twice (or two beats run): it is queued, numbered, once.
    session.execute(update(Send).where(Send.id == send.id).values(scheduled_at=datetime.now(UTC)))
    session.commit()
    assert control.start_due_sends(session) == [send.id]
    assert control.start_due_sends(session) == []
    session.expire_all()
    assert session.get(Send, send.id).status == "queued"
    assert session.get(Circular, draft.id).number == 1
    assert session.get(Circular, draft.id).first_sent_at is not None


def test_a_time_in_the_past_is_refused_and_changes_nothing(app, runner, session, enqueued):
    make_audience(session, 2)
    draft = make_draft(session, session.scalars(select(MailingList)).one())
    result = runner.invoke(["send", str(draft.id), "--list", "members", "--at", "2020-01-01 09:00"])
    assert result.exit_code == 2
    assert "--at: 2020-01-01 09:00 (UTC) is in the past" in result.output
    result = runner.invoke(["send", str(draft.id), "--at", "soon"])
    assert result.exit_code == 2 and "is not a date and time" in result.output
    assert session.scalar(select(func.count()).select_from(Send)) == 0
    assert session.get(Circular, draft.id).number is None
    assert enqueued == []


def test_cancel_a_schedule_from_the_cli(app, runner, session, enqueued):
    members = make_audience(session, 2)
    draft = make_draft(session, members)
    when = datetime.now(UTC) + timedelta(hours=5)
    result = runner.invoke(["send", str(draft.id), "--at", when.isoformat()])
    assert result.exit_code == 0, result.output
    send_id = session.scalars(select(Send.id)).one()

    result = runner.invoke(["sends", "cancel", str(send_id)])
    assert result.exit_code == 0, result.output
    assert f"Send {send_id} cancelled: 0 sent, 0 failed, 0 not sent." in result.output
    row = fresh(session, send_id)
    assert row.status == "cancelled" and row.cancelled_at is not None
    # When its time would have come, nothing starts, and the draft keeps no number.
    session.execute(update(Send).where(Send.id == send_id).values(scheduled_at=datetime.now(UTC)))
    session.commit()
    assert control.start_due_sends(session) == []
    assert session.get(Circular, draft.id).number is None
    # Cancelling twice says why not.
    again = runner.invoke(["sends", "cancel", str(send_id)])
    assert again.exit_code == 1
    assert f"Send {send_id} is cancelled: only a scheduled or queued or running" in again.output
    assert runner.invoke(["sends", "pause", "424242"]).output.strip() == (
        "Error: There is no send 424242."
    )
    assert enqueued == []


def test_admin_schedules_in_the_org_time_zone_and_cancels_the_schedule(
    app, auth, client, session, enqueued, monkeypatch
):
    in_zone(app, monkeypatch, ZURICH)
    sign_in(auth, "sender")
    members = make_audience(session, 2)
    draft = make_draft(session, members)
    url = f"/admin/circulars/{draft.id}/send"
    page = client.get(url)
    assert 'type="datetime-local"' in page.text and "Europe/Zurich" in page.text

    refused = auth.post_form(
        url, url, {"lists": [str(members.id)], "scheduled_at": "2020-05-01T10:00", "schedule": ""}
    )
    assert refused.status_code == 400
    assert "2020-05-01 10:00 (Europe/Zurich) is in the past" in refused.text
    assert session.scalar(select(func.count()).select_from(Send)) == 0

    when = (datetime.now(UTC) + timedelta(days=2)).replace(second=0, microsecond=0)
    response = auth.post_form(
        url,
        url,
        {
            "lists": [str(members.id)],
            "scheduled_at": local(when, ZURICH, "%Y-%m-%dT%H:%M"),
            "schedule": "",
        },
    )
    assert response.status_code == 302
    send = session.scalars(select(Send)).one()
    assert (send.status, send.scheduled_at) == ("scheduled", when)
    assert enqueued == []
    shown = client.get(f"/admin/sends/{send.id}")
    assert "Scheduled for" in shown.text and "Cancel the schedule" in shown.text
    draft_page = client.get(f"/admin/circulars/{draft.id}").text
    assert f"Scheduled to go out {local(when, ZURICH, '%-d %b %Y, %H:%M')}" in draft_page
    listed = client.get("/admin/sends").text
    assert f"scheduled for {local(when, ZURICH, '%-d %b %Y, %H:%M')}" in listed
    shown_at = client.get(f"/admin/sends/{send.id}/progress.json").get_json()["scheduled_at"]
    assert datetime.fromisoformat(shown_at) == when

    confirm = client.get(f"/admin/sends/{send.id}/cancel")
    assert confirm.status_code == 200 and "will not go out" in confirm.text
    # Without the form's token nothing happens.
    assert client.post(f"/admin/sends/{send.id}/cancel").status_code == 400
    assert fresh(session, send.id).status == "scheduled"
    done = client.post(
        f"/admin/sends/{send.id}/cancel", data={"csrf_token": csrf_token(confirm.text)}
    )
    assert done.status_code == 302
    assert fresh(session, send.id).status == "cancelled"
    assert session.get(Circular, draft.id).number is None


# --- pause, resume, cancel ----------------------------------------------------------------


def test_cli_pause_resume_and_wrong_states(app, runner, session, ctx, smtp_server, enqueued):
    members = make_audience(session, 60)
    send, ranges = started(session, ctx, members)
    assert len(ranges) == 2  # SEND_BATCH_SIZE is 50 in the test stacks

    result = runner.invoke(["sends", "pause", str(send.id)])
    assert result.exit_code == 0, result.output
    assert f"Send {send.id} paused" in result.output
    row = fresh(session, send.id)
    assert (row.status, row.pause_reason) == ("paused", "Paused from the command line.")
    # A batch of a paused send takes nothing.
    outcome = engine.deliver_batch(session, send.id, *ranges[0], ctx)
    assert (outcome.sent, outcome.skipped) == (0, {"send-not-running": 1})
    assert smtp_server.messages() == []
    assert "paused" in runner.invoke(["sends", "list", "--status", "paused"]).output

    again = runner.invoke(["sends", "pause", str(send.id)])
    assert again.exit_code == 1 and "is paused: only a queued or running send" in again.output

    result = runner.invoke(["sends", "resume", str(send.id)])
    assert result.exit_code == 0, result.output
    assert enqueued == [(START_SEND, (send.id,))]
    row = fresh(session, send.id)
    assert (row.status, row.pause_reason, row.paused_at) == ("running", None, None)
    # What the queued start task does on resume: batch what is pending, send it.
    for first, last in engine.start_send(session, send.id, ctx):
        engine.deliver_batch(session, send.id, first, last, ctx)
    assert fresh(session, send.id).status == "done"
    assert sum(received_by(smtp_server).values()) == 60

    done = runner.invoke(["sends", "resume", str(send.id)])
    assert done.exit_code == 1
    assert f"Send {send.id} is done: only a paused send can be resumed." in done.output
    assert runner.invoke(["sends", "cancel", str(send.id)]).exit_code == 1


def test_cancel_ends_with_sent_failed_and_not_sent_counts(app, runner, session, ctx, smtp_server):
    members = make_audience(session, 60)
    smtp_server.reject["person0001@example.org"] = "550 5.1.1 User unknown"
    send, ranges = started(session, ctx, members)
    engine.deliver_batch(session, send.id, *ranges[0], ctx)  # the first 50: 49 sent, 1 refused

    result = runner.invoke(["sends", "cancel", str(send.id)])
    assert result.exit_code == 0, result.output
    assert f"Send {send.id} cancelled: 49 sent, 1 failed, 10 not sent." in result.output
    row = fresh(session, send.id)
    assert (row.status, row.sent_count, row.failed_count, row.cancelled_count) == (
        "cancelled",
        49,
        1,
        10,
    )
    assert statuses(session, send.id) == {"sent": 49, "failed": 1, "cancelled": 10}
    # The rest never goes out, even if its batch task still runs.
    engine.deliver_batch(session, send.id, *ranges[1], ctx)
    assert sum(received_by(smtp_server).values()) == 49
    listed = runner.invoke(["sends", "list"]).output
    assert "cancelled" in listed and "49 sent, 1 failed, 0 waiting, 10 cancelled" in listed


def test_a_message_the_relay_takes_while_the_send_is_cancelled_is_counted(
    app, session, ctx, smtp_server, monkeypatch
):
    """The cancel counts what was sent; the message in flight at that moment is accepted
    afterwards and marked sent. The batch's end counts again, so the send's figures
    match its deliveries instead of staying one behind."""
    from sqlalchemy.orm import Session as PlainSession

    members = make_audience(session, 3)
    send, ranges = started(session, ctx, members)
    assert len(ranges) == 1
    send_id = send.id
    engine_ = session.get_bind()  # here: the sink's thread has a scoped session of its own
    taken: list[str] = []

    def cancelling_at_the_last(envelope: Any) -> None:
        taken.append(envelope.rcpt_tos[0])
        if len(taken) == 3:
            # Someone cancels while the relay holds the last message, before it answers.
            with PlainSession(bind=engine_) as other:
                control.cancel_send(other, send_id)

    smtp_server.on_data = cancelling_at_the_last
    engine.deliver_batch(session, send_id, *ranges[0], ctx)

    assert len(taken) == 3
    assert statuses(session, send_id) == {"sent": 3}
    row = fresh(session, send_id)
    assert (row.status, row.sent_count, row.failed_count, row.cancelled_count) == (
        "cancelled",
        3,
        0,
        0,
    )


def test_editors_see_no_send_controls_and_cannot_use_them(app, auth, client, session, ctx):
    members = make_audience(session, 5)
    send, _ranges = started(session, ctx, members)
    sign_in(auth, "editor")
    page = client.get(f"/admin/sends/{send.id}")
    assert page.status_code == 200 and ">Pause</button>" not in page.text
    token = csrf_token(client.get("/admin/circulars/new").text)
    for action in ("pause", "resume", "cancel"):
        refused = client.post(f"/admin/sends/{send.id}/{action}", data={"csrf_token": token})
        assert refused.status_code == 403
    assert client.get(f"/admin/sends/{send.id}/cancel").status_code == 403
    assert fresh(session, send.id).status == "running"


def test_admin_pause_resume_cancel_with_csrf(app, auth, client, session, ctx, enqueued):
    members = make_audience(session, 60)
    send, _ranges = started(session, ctx, members)
    page_url = f"/admin/sends/{send.id}"
    other = auth.create_user("sender@example.org", "sender")
    assert auth.login("sender@example.org").status_code == 302
    page = client.get(page_url)
    assert ">Pause</button>" in page.text
    assert client.post(f"/admin/sends/{send.id}/pause").status_code == 400  # no CSRF token
    assert fresh(session, send.id).status == "running"

    paused = client.post(
        f"/admin/sends/{send.id}/pause", data={"csrf_token": csrf_token(page.text)}
    )
    assert paused.status_code == 302
    row = fresh(session, send.id)
    assert (row.status, row.paused_by_id) == ("paused", other.id)
    shown = client.get(page_url)
    assert "Paused by sender@example.org." in shown.text and ">Resume</button>" in shown.text
    data = client.get(f"/admin/sends/{send.id}/progress.json").get_json()
    assert (data["status"], data["pause_reason"]) == ("paused", "Paused by sender@example.org.")

    resumed = client.post(
        f"/admin/sends/{send.id}/resume", data={"csrf_token": csrf_token(shown.text)}
    )
    assert resumed.status_code == 302
    assert fresh(session, send.id).status == "running"
    assert enqueued == [(START_SEND, (send.id,))]
    # A second resume is refused, and the page says why.
    again = client.post(
        f"/admin/sends/{send.id}/resume",
        data={"csrf_token": csrf_token(shown.text)},
        follow_redirects=True,
    )
    assert f"Send {send.id} is running: only a paused send can be resumed." in again.text

    confirm = client.get(f"/admin/sends/{send.id}/cancel")
    assert "60 people waiting will not receive" in confirm.text
    client.post(f"/admin/sends/{send.id}/cancel", data={"csrf_token": csrf_token(confirm.text)})
    row = fresh(session, send.id)
    assert (row.status, row.cancelled_count, row.cancelled_by_id) == ("cancelled", 60, other.id)
    shown = client.get(page_url)
    assert "60 not sent because the send was cancelled" in shown.text
    assert ">Resume</button>" not in shown.text and "Cancel the send" not in shown.text


# --- relay errors -------------------------------------------------------------------------


def test_a_send_pauses_itself_after_consecutive_relay_errors_and_says_why(
    app, session, ctx, smtp_server, auth, client
):
    ctx = replace(ctx, pause_after_relay_errors=3)
    members = make_audience(session, 20)
    send, ranges = started(session, ctx, members)
    smtp_server.refuse_all = REFUSAL_421

    outcome = engine.deliver_batch(session, send.id, *ranges[0], ctx)
    assert outcome.stopped == "paused" and not outcome.retry
    row = fresh(session, send.id)
    assert row.status == "paused"
    assert row.pause_reason == f"Paused after 3 consecutive relay errors: {REFUSAL_421}"
    assert row.relay_errors == 3
    tried = session.scalar(
        select(func.count()).where(Delivery.send_id == send.id, Delivery.attempts > 0)
    )
    assert tried == 3  # it stopped at the third refusal
    # Nothing is left claimed: a resume hands every row to new batches at once.
    assert (
        session.scalar(
            select(func.count()).where(
                Delivery.send_id == send.id, Delivery.claimed_until.is_not(None)
            )
        )
        == 0
    )
    sign_in(auth, "sender")
    assert (
        "Paused after 3 consecutive relay errors: 421 4.7.0"
        in client.get(f"/admin/sends/{send.id}").text
    )

    smtp_server.refuse_all = None
    control.resume_send(session, send.id)
    assert fresh(session, send.id).relay_errors == 0
    for first, last in engine.start_send(session, send.id, ctx):
        engine.deliver_batch(session, send.id, first, last, ctx)
    assert fresh(session, send.id).status == "done"
    assert received_by(smtp_server) == Counter(
        {f"person{index:04d}@example.org": 1 for index in range(20)}
    )


def test_errors_between_successes_are_not_consecutive(app, session, ctx, smtp_server):
    ctx = replace(ctx, pause_after_relay_errors=2)
    members = make_audience(session, 20)
    for index in (1, 3, 5, 7, 9, 11):  # one 451 each, with a success in between
        smtp_server.defer[f"person{index:04d}@example.org"] = 1
    send, ranges = started(session, ctx, members)
    outcome = engine.deliver_batch(session, send.id, *ranges[0], ctx)
    assert outcome.stopped is None and outcome.deferred == 6 and outcome.sent == 14
    assert fresh(session, send.id).status == "running"
    # Two in a row do pause it.
    smtp_server.defer.update({"person0001@example.org": 1, "person0003@example.org": 1})
    smtp_server.defer["person0005@example.org"] = 1
    engine.deliver_batch(session, send.id, *ranges[0], ctx)
    row = fresh(session, send.id)
    assert row.status == "paused" and row.pause_reason.startswith(
        "Paused after 2 consecutive relay errors: 451"
    )


def test_our_own_relay_limits_hold_a_batch_back_without_counting_as_relay_errors(
    app, session, ctx, smtp_server, tmp_path
):
    from circulars.config import load_settings
    from circulars.wiring import relay_messenger

    limited = load_settings(
        {
            "INSTANCE_PATH": str(tmp_path),
            "SMTP_URL": f"{smtp_server.url}?per_day=5",
            "RELAY_STATE_URL": f"sqlite:///{tmp_path / 'relay_state.db'}",
        }
    )
    ctx = replace(ctx, messenger=relay_messenger(limited), pause_after_relay_errors=2)
    members = make_audience(session, 20)
    send, ranges = started(session, ctx, members)
    for _attempt in range(3):  # the first sends 5; then the daily budget is spent
        outcome = engine.deliver_batch(session, send.id, *ranges[0], ctx)
        assert outcome.retry and "daily limit of 5 reached" in outcome.error
        # Held, not released: the rows stay claimed until the batch's next try, so the
        # sweeper does not hand them to a new batch that would meet the same limit.
        assert outcome.held_for == 600
        held = session.scalars(
            select(Delivery.claimed_until).where(
                Delivery.send_id == send.id, Delivery.status == "pending"
            )
        ).all()
        assert len(held) == 15 and all(until > utcnow() for until in held)
        assert engine.stalled_sends(session, timedelta(0)) == []
        # The next try comes when the hold ends.
        session.execute(
            update(Delivery).where(Delivery.send_id == send.id).values(claimed_until=None)
        )
        session.commit()
    row = fresh(session, send.id)
    assert (row.status, row.relay_errors) == ("running", 0)
    assert len(smtp_server.messages()) == 5


@functools.cache
def worker_tasks() -> Any:
    """worker/tasks.py alone: the `worker` package builds an app from the environment."""
    spec = importlib.util.spec_from_file_location(
        "worker_tasks_under_test", Path(__file__).parents[1] / "worker" / "tasks.py"
    )
    assert spec is not None and spec.loader is not None
    tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks)
    return tasks


def test_a_held_batch_is_retried_after_its_hold_without_using_up_its_tries(
    app, session, ctx, smtp_server, tmp_path, monkeypatch
):
    """A spent daily budget must delay the send, never fail its recipients."""
    from circulars.config import load_settings
    from circulars.wiring import relay_messenger

    tasks = worker_tasks()
    BATCH_RETRIES, deliver_batch = tasks.BATCH_RETRIES, tasks.deliver_batch  # noqa: N806
    retries_asked: list[dict[str, Any]] = []

    def retry(**options: Any) -> Exception:
        # Eager Celery would run the retry at once; record what it would be asked instead.
        retries_asked.append(options)
        return Retry()

    monkeypatch.setattr(deliver_batch, "retry", retry)

    limited = load_settings(
        {
            "INSTANCE_PATH": str(tmp_path),
            "SMTP_URL": f"{smtp_server.url}?per_day=2",
            "RELAY_STATE_URL": f"sqlite:///{tmp_path / 'relay_state.db'}",
        }
    )
    monkeypatch.setitem(
        app.extensions, "circulars.send_context", replace(ctx, messenger=relay_messenger(limited))
    )
    send, ranges = started(session, ctx, make_audience(session, 6))
    first, last = ranges[0]

    def unhold() -> None:
        session.execute(
            update(Delivery).where(Delivery.send_id == send.id).values(claimed_until=None)
        )
        session.commit()

    # On what would be its last try, a held batch is still retried, after the hold.
    result = deliver_batch.apply(args=(send.id, first, last), retries=BATCH_RETRIES)
    assert result.state == "RETRY"
    assert retries_asked == [{"countdown": 601.0, "kwargs": {"held": 1}}]
    assert len(smtp_server.messages()) == 2
    held = session.scalars(
        select(Delivery.claimed_until).where(
            Delivery.send_id == send.id, Delivery.status == "pending"
        )
    ).all()
    assert len(held) == 4 and all(until > utcnow() + timedelta(minutes=9) for until in held)
    unhold()
    result = deliver_batch.apply(
        args=(send.id, first, last), kwargs={"held": 3}, retries=BATCH_RETRIES + 2
    )
    assert result.state == "RETRY"
    assert retries_asked[-1] == {"countdown": 601.0, "kwargs": {"held": 4}}
    pending = session.scalar(
        select(func.count()).where(Delivery.send_id == send.id, Delivery.status == "pending")
    )
    assert pending == 4

    # A real relay failure on the last try still gives up, and says so.
    monkeypatch.setitem(app.extensions, "circulars.send_context", ctx)
    unhold()
    smtp_server.refuse_all = "421 4.3.2 Service shutting down"
    result = deliver_batch.apply(args=(send.id, first, last), retries=BATCH_RETRIES)
    assert result.state == "SUCCESS"
    failed = session.scalars(
        select(Delivery.last_error).where(Delivery.send_id == send.id, Delivery.status == "failed")
    ).all()
    assert len(failed) == 4 and all(error.startswith("gave up after") for error in failed)


# --- with a real worker -------------------------------------------------------------------


def write_audience_csv(path: Path, count: int) -> Path:
    lines = ["email,name"] + [
        f"person{index:04d}@example.org,Person {index}" for index in range(count)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def cli_audience(runner: Any, tmp_path: Path, count: int) -> int:
    assert runner.invoke(["lists", "create", "members", "--name", "Members"]).exit_code == 0
    result = runner.invoke(
        [
            "subscribers",
            "import",
            str(write_audience_csv(tmp_path / "m.csv", count)),
            "--list",
            "members",
        ]
    )
    assert result.exit_code == 0, result.output
    body = tmp_path / "body.md"
    body.write_text("Dear colleagues,\n\nThe second round starts now.\n", encoding="utf-8")
    created = runner.invoke(
        ["circulars", "create", "--title", "Round two", "--body", str(body), "--list", "members"]
    )
    return int(created.output)


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.integration
def test_pause_is_honoured_by_every_worker_within_2_seconds_and_resume_sends_nothing_twice(
    app, runner, session, worker, smtp_server, tmp_path
):
    total = 400
    circular_id = cli_audience(runner, tmp_path, total)
    smtp_server.delay = 0.03  # a slow relay: both worker processes are mid-batch at the pause
    assert runner.invoke(["send", str(circular_id)]).exit_code == 0
    send_id = session.scalars(select(Send.id)).one()
    session.commit()
    wait_until(lambda: len(smtp_server.messages()) >= 60, 60, "the send to be under way")

    result = runner.invoke(["sends", "pause", str(send_id)])
    assert result.exit_code == 0, result.output
    paused_at = time.monotonic()
    at_pause = len(smtp_server.messages())
    # Watch the relay for 5 s: when did the last message arrive?
    last, last_arrival = at_pause, paused_at
    while time.monotonic() - paused_at < 5.0:
        now_count = len(smtp_server.messages())
        if now_count != last:
            last, last_arrival = now_count, time.monotonic()
        time.sleep(0.02)
    stopped_after = last_arrival - paused_at
    print(f"pause: {at_pause} received at the pause, {last} in all, stopped {stopped_after:.2f} s")
    assert stopped_after < 2.0, stopped_after
    later = len(smtp_server.messages())
    assert later == last < total
    # Every worker let go of its rows; only sent rows are marked sent.
    counts = statuses(session, send_id)
    assert counts.get("sent", 0) == later and counts["pending"] == total - later
    assert (
        session.scalar(
            select(func.count()).where(
                Delivery.send_id == send_id, Delivery.claimed_until.is_not(None)
            )
        )
        == 0
    )
    session.commit()

    smtp_server.delay = 0.0
    result = runner.invoke(["sends", "resume", str(send_id)])
    assert result.exit_code == 0, result.output
    wait_until(lambda: fresh(session, send_id).status == "done", 90, "the send to finish")
    delivered = received_by(smtp_server)
    assert len(delivered) == total and set(delivered.values()) == {1}
    assert fresh(session, send_id).sent_count == total


@pytest.mark.integration
def test_send_wait_ends_when_relay_errors_pause_the_send(
    app, runner, session, worker, smtp_server, tmp_path
):
    circular_id = cli_audience(runner, tmp_path, 30)
    smtp_server.refuse_all = REFUSAL_421
    result = runner.invoke(["send", str(circular_id), "--wait", "--timeout", "60"])
    assert result.exit_code == 4, result.output
    send_id = session.scalars(select(Send.id)).one()
    assert f"send {send_id} is paused (Paused after 10 consecutive relay errors: 421 4.7.0" in (
        result.output
    )
    assert f"resume with: circulars sends resume {send_id}" in result.output
    assert smtp_server.messages() == []

    smtp_server.refuse_all = None
    assert runner.invoke(["sends", "resume", str(send_id)]).exit_code == 0
    wait_until(lambda: fresh(session, send_id).status == "done", 60, "the send to finish")
    assert set(received_by(smtp_server).values()) == {1} and len(received_by(smtp_server)) == 30


@pytest.mark.integration
def test_send_wait_ends_when_the_send_is_cancelled_and_the_counts_add_up(
    app, runner, session, worker, smtp_server, tmp_path
):
    import threading

    from circulars.extensions import db

    total = 200
    circular_id = cli_audience(runner, tmp_path, total)
    smtp_server.delay = 0.02

    def cancel_when_under_way() -> None:
        wait_until(lambda: len(smtp_server.messages()) >= 20, 60, "the send to be under way")
        with app.app_context():
            send_id = db.session.scalars(select(Send.id)).one()
            control.cancel_send(db.session, send_id)
            db.session.remove()

    canceller = threading.Thread(target=cancel_when_under_way)
    canceller.start()
    result = runner.invoke(["send", str(circular_id), "--wait", "--timeout", "60"])
    canceller.join()
    assert result.exit_code == 5, result.output
    send_id = session.scalars(select(Send.id)).one()
    # On SQLite every transaction holds the write lock (BEGIN IMMEDIATE): end this read
    # one, or the workers cannot record their in-flight messages while the test waits.
    session.commit()
    assert re.search(
        rf"send {send_id} was cancelled: \d+ sent, 0 failed, \d+ not sent\.", result.output
    )

    time.sleep(2.0)  # every worker has stopped; in-flight messages are recorded
    received = len(smtp_server.messages())
    assert 20 <= received < total
    assert set(received_by(smtp_server).values()) == {1}
    counts = statuses(session, send_id)
    assert counts == {"sent": received, "cancelled": total - received}
    row = fresh(session, send_id)
    assert (row.sent_count, row.failed_count, row.cancelled_count) == (
        received,
        0,
        total - received,
    )


def task_result(worker: Any, name: str, task_id: str, timeout: float = 30) -> str:
    pattern = re.compile(rf"{re.escape(name)}\[{task_id}\] succeeded in [\d.]+s: (\S+)")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pattern.search(worker.log_path.read_text(errors="replace"))
        if found:
            return found.group(1)
        time.sleep(0.1)
    raise AssertionError(f"{name}[{task_id}] did not finish")


@pytest.mark.integration
def test_due_sends_start_once_and_the_sweeper_leaves_paused_cancelled_and_scheduled_alone(
    app, session, worker, smtp_server
):
    celery = app.extensions["celery"]
    members = make_audience(session, 5)
    old = datetime.now(UTC) - timedelta(hours=1)

    def a_send(status: str, **values: Any) -> int:
        draft = make_draft(session, members, title=f"A {status} one")
        send = create_send(session, draft.id, [members.id])
        session.commit()
        engine.start_send(session, send.id, app.extensions["circulars.send_context"])
        session.execute(
            update(Send).where(Send.id == send.id).values(status=status, started_at=old, **values)
        )
        session.commit()
        return send.id

    # Sends with pending rows nobody holds, started an hour ago: a sweeper would restart
    # the running one, and must leave the others alone.
    paused = a_send("paused", pause_reason="Paused by hand.")
    cancelled = a_send("cancelled")
    stalled = a_send("running")
    future = create_send(
        session,
        make_draft(session, members, title="Later").id,
        [members.id],
        scheduled_at=datetime.now(UTC) + timedelta(days=1),
    )
    session.commit()
    restarted = celery.send_task(SWEEP_SENDS)
    assert task_result(worker, SWEEP_SENDS, restarted.id) == "1"
    wait_until(lambda: fresh(session, stalled).status == "done", 30, "the stalled send")
    assert [fresh(session, item).status for item in (paused, cancelled, future.id)] == [
        "paused",
        "cancelled",
        "scheduled",
    ]
    assert len(smtp_server.messages()) == 5

    # A scheduled send falls due; beat fires twice at once: it goes out once.
    smtp_server.reset()
    session.execute(update(Send).where(Send.id == future.id).values(scheduled_at=datetime.now(UTC)))
    session.commit()
    first, second = celery.send_task(START_DUE_SENDS), celery.send_task(START_DUE_SENDS)
    results = sorted(
        [
            task_result(worker, START_DUE_SENDS, first.id),
            task_result(worker, START_DUE_SENDS, second.id),
        ]
    )
    assert results == ["0", "1"]
    wait_until(lambda: fresh(session, future.id).status == "done", 30, "the scheduled send")
    assert received_by(smtp_server) == Counter(
        {f"person{index:04d}@example.org": 1 for index in range(5)}
    )
    assert session.get(Circular, future.circular_id).number is not None
