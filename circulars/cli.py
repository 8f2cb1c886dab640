"""The `circulars` command: the operations people script, and `serve` for the whole system."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup
from sqlalchemy import select

from .cli_support import db_session, fail
from .config import ConfigError


def _create_app() -> Flask:
    from . import create_app

    try:
        return create_app()
    except ConfigError as exc:
        click.echo(f"circulars: configuration error: {exc}", err=True)
        sys.exit(2)


@click.group(cls=FlaskGroup, create_app=_create_app, add_version_option=False, load_dotenv=False)
def main() -> None:
    """Circulars: draft numbered circulars and send them to mailing lists.

    Settings come from the environment (see README.md); with none set, everything
    runs on the embedded default under ./instance.
    """


# --- users ------------------------------------------------------------------------------


@main.group()
def users() -> None:
    """Staff accounts."""


@users.command("create")
@click.argument("email")
@click.option(
    "--role", type=click.Choice(["admin", "sender", "editor"]), default="editor", show_default=True
)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def users_create(email: str, role: str, password_stdin: bool) -> None:
    """Create a staff account; the password is asked for (or read from stdin)."""
    from .accounts import AccountError, create_user

    if password_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    session = db_session()
    try:
        user = create_user(session, email, password, role)
    except AccountError as exc:
        session.rollback()
        fail(str(exc))
    session.commit()
    click.echo(f"Created {user.role} {user.email}.")


# --- lists ------------------------------------------------------------------------------


@main.group("lists")
def lists_group() -> None:
    """Mailing lists."""


@lists_group.command("create")
@click.argument("slug")
@click.option("--name", required=True)
@click.option("--description", default="")
@click.option("--private", is_flag=True, help="Not offered on the public subscribe page.")
def lists_create(slug: str, name: str, description: str, private: bool) -> None:
    """Create a list; SLUG is its short name (lower-case letters, digits, hyphens)."""
    import re

    from .models import MailingList

    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", slug):
        fail("the short name may hold lower-case letters, digits and hyphens (at most 64).")
    if not name.strip() or "\n" in name or "\r" in name:
        fail("the name must be a single non-empty line.")
    session = db_session()
    if session.scalar(select(MailingList.id).where(MailingList.slug == slug)) is not None:
        fail(f"a list named {slug} exists already.")
    session.add(
        MailingList(slug=slug, name=name.strip(), description=description, public=not private)
    )
    session.commit()
    click.echo(f"Created list {slug}.")


def _list_by_slug(slug: str) -> Any:
    from .models import MailingList

    found = db_session().scalar(select(MailingList).where(MailingList.slug == slug))
    if found is None:
        fail(f"unknown list {slug!r}.")
    return found


# --- subscribers ------------------------------------------------------------------------


@main.group()
def subscribers() -> None:
    """Subscribers."""


@subscribers.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--list", "slug", required=True, help="The list to put everyone on.")
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write rejected rows to this CSV.",
)
@click.option(
    "--override-suppression",
    "override_reason",
    metavar="REASON",
    help="Add suppressed addresses anyway; REASON is recorded with each one.",
)
def subscribers_import(
    file: Path, slug: str, report: Path | None, override_reason: str | None
) -> None:
    """Import FILE.csv (columns email,name,language,organization; others kept as attributes).

    Runs as an import job (listed in the admin under Imports), in this process.
    """
    import contextlib
    import csv

    from .subscribers.import_jobs import create_job, run_job
    from .subscribers.importer import RejectedRow

    if override_reason is not None and not override_reason.strip():
        fail("--override-suppression needs a reason.")
    mailing_list = _list_by_slug(slug)
    session = db_session()
    settings = current_app.extensions["circulars.settings"]
    job = create_job(
        session,
        list_id=mailing_list.id,
        filename=file.name,
        stored_path=file.resolve(),
        size=file.stat().st_size,
        override_reason=override_reason,
    )
    session.commit()
    with contextlib.ExitStack() as stack:
        writer = None
        if report is not None:
            writer = csv.writer(stack.enter_context(report.open("w", newline="", encoding="utf-8")))
            writer.writerow(["line", "email", "reason"])

        def rejected(row: RejectedRow) -> None:
            click.echo(
                f"{file.name}:{row.line}: {row.email or '(no address)'}: {row.reason}", err=True
            )
            if writer is not None:
                writer.writerow([row.line, row.email, row.reason])

        outcome = run_job(
            session,
            job.id,
            settings.instance_path,
            on_reject=rejected,
            writers=settings.import_writers,
        )
    if outcome is None or outcome.report is None:
        if report is not None:
            report.unlink(missing_ok=True)
        fail(f"{file.name}: nothing imported. {outcome.error if outcome else 'job not run'}")
    result = outcome.report
    click.echo(
        f"Imported into {mailing_list.slug} (import #{job.id}): {result.subscribed} subscribed "
        f"({result.added} new), {result.already} already on the list, "
        f"{result.kept_unsubscribed} had unsubscribed and were left out, "
        f"{result.suppressed} suppressed and left out"
        + (f" ({result.overridden} added anyway by override)" if result.overridden else "")
        + f", {result.duplicates} duplicate rows, {result.invalid} rejected."
    )


@subscribers.command("export")
@click.option("--list", "slug", required=True, help="The list to export.")
@click.option(
    "--status",
    type=click.Choice(["confirmed", "unconfirmed", "unsubscribed", "all"]),
    default="confirmed",
    show_default=True,
    help="Their subscription's status on the list.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file (default: standard output).",
)
def subscribers_export(slug: str, status: str, output: Path | None) -> None:
    """Export a list's subscribers as CSV (UTF-8; formula-like cells neutralised)."""
    from .subscribers.export import iter_csv, list_members, write_csv

    mailing_list = _list_by_slug(slug)
    query = list_members(mailing_list.id, None if status == "all" else status)
    if output is None:
        for piece in iter_csv(db_session(), query):
            click.echo(piece, nl=False)
        return
    with output.open("w", newline="", encoding="utf-8") as handle:
        write_csv(db_session(), query, handle)
    click.echo(f"Exported {mailing_list.slug} ({status}) to {output}.", err=True)


# --- circulars --------------------------------------------------------------------------


@main.group("circulars")
def circulars_group() -> None:
    """Circulars (drafts)."""


@circulars_group.command("create")
@click.option("--title", required=True)
@click.option(
    "--body",
    "body_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--attach",
    "attachments",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option("--list", "slugs", multiple=True, help="A list to send to (repeat for several).")
@click.option("--topic", default="", help="Its topic in the public archive (filter, related).")
@click.option(
    "--not-in-archive",
    "kept_out",
    is_flag=True,
    help="Keep it out of the public archive and its feed once sent.",
)
@click.option(
    "--language",
    default="en",
    show_default=True,
    help="The language of --title and --body: the default version (see `circulars translate`).",
)
def circulars_create(
    title: str,
    body_file: Path,
    attachments: tuple[Path, ...],
    slugs: tuple[str, ...],
    topic: str,
    kept_out: bool,
    language: str,
) -> None:
    """Create a draft from a Markdown file and print its id."""
    from .language_versions import TranslationRefused, checked_language
    from .mail.render import RenderError, check_single_line
    from .models import Attachment, Circular
    from .storage import EmptyUpload, UploadTooLarge

    try:
        default_language = checked_language(language)
    except TranslationRefused as exc:
        fail(str(exc))

    try:
        check_single_line(title, "title")
    except RenderError as exc:
        fail(str(exc))
    if not title.strip() or len(title) > 300:
        fail("the title must have 1 to 300 characters.")
    try:
        check_single_line(topic, "topic")
    except RenderError as exc:
        fail(str(exc))
    if len(topic.strip()) > 100:
        fail("the topic must have at most 100 characters.")
    try:
        body = body_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        fail(f"{body_file} is not UTF-8 text.")
    lists = [_list_by_slug(slug) for slug in dict.fromkeys(slugs)]
    store = current_app.extensions["circulars.files"]
    stored = []
    for path in attachments:
        with path.open("rb") as handle:
            try:
                stored.append(store.save(handle, path.name))
            except (UploadTooLarge, EmptyUpload) as exc:
                fail(f"{path}: {exc}")
    session = db_session()
    circular = Circular(
        title=title.strip(),
        body_markdown=body,
        topic=topic.strip() or None,
        in_archive=not kept_out,
        default_language=default_language,
    )
    circular.lists = lists
    circular.attachments = [
        Attachment(
            filename=item.filename,
            content_type=item.content_type,
            size=item.size,
            sha256=item.sha256,
        )
        for item in stored
    ]
    session.add(circular)
    session.commit()
    click.echo(circular.id)


@circulars_group.command("translate")
@click.argument("circular_id", type=int)
@click.option("--language", required=True, help="The version's language code, such as ar or zh.")
@click.option("--title", required=True)
@click.option(
    "--body",
    "body_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--attach",
    "attachments",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file that goes with this version only (repeat for several).",
)
@click.option("--replace", is_flag=True, help="Replace the version if the draft has it already.")
def circulars_translate(
    circular_id: int,
    language: str,
    title: str,
    body_file: Path,
    attachments: tuple[Path, ...],
    replace: bool,
) -> None:
    """Add a language version (its own title and body) to draft ID."""
    from .language_versions import TranslationRefused, add_version, checked_title, update_version
    from .models import Attachment, Circular
    from .storage import EmptyUpload, UploadTooLarge

    session = db_session()
    circular = session.get(Circular, circular_id)
    if circular is None:
        fail(f"no circular with id {circular_id}.")
    try:
        body = body_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        fail(f"{body_file} is not UTF-8 text.")
    try:
        checked_title(title)
        if replace and circular.version(language.strip().lower()) is not None:
            update_version(session, circular, language, title, body)
        else:
            add_version(session, circular, language, title, body)
    except TranslationRefused as exc:
        session.rollback()
        fail(str(exc))
    code = language.strip().lower()
    store = current_app.extensions["circulars.files"]
    for path in attachments:
        with path.open("rb") as handle:
            try:
                item = store.save(handle, path.name)
            except (UploadTooLarge, EmptyUpload) as exc:
                session.rollback()
                fail(f"{path}: {exc}")
        circular.attachments.append(
            Attachment(
                filename=item.filename,
                content_type=item.content_type,
                size=item.size,
                sha256=item.sha256,
                language=code,
            )
        )
    session.commit()
    click.echo(f"{circular_id} {code}")


# --- send -------------------------------------------------------------------------------


@main.command("send")
@click.argument("circular_id", type=int)
@click.option(
    "--list", "slugs", multiple=True, help="A list to send to (repeat); default: the draft's lists."
)
@click.option(
    "--at",
    "at",
    metavar="WHEN",
    default=None,
    help="Start later: '2026-12-01 09:00' in the organisation's time zone (TIMEZONE), "
    "or ISO 8601 with an offset.",
)
@click.option(
    "--wait", is_flag=True, help="Show progress until the send ends; exit 1 if any delivery failed."
)
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="With --wait: give up waiting after this many seconds.",
)
def send_command(
    circular_id: int, slugs: tuple[str, ...], at: str | None, wait: bool, timeout: float | None
) -> None:
    """Send circular CIRCULAR_ID to lists now or --at a time (numbered when the send starts)."""
    from .models import Circular, Send, SendStatus
    from .sending.control import ControlRefused, parse_send_time
    from .sending.service import SendRefused, create_send, send_progress
    from .tasks import START_SEND, enqueue

    session = db_session()
    settings = current_app.extensions["circulars.settings"]
    scheduled_at = None
    if at is not None:
        try:
            scheduled_at = parse_send_time(at, settings.timezone)
        except ControlRefused as exc:
            fail(f"--at: {exc}")
    circular = session.get(Circular, circular_id)
    if circular is None:
        fail(f"there is no circular {circular_id}.")
    lists = (
        [_list_by_slug(slug) for slug in dict.fromkeys(slugs)] if slugs else list(circular.lists)
    )
    try:
        new_send = create_send(
            session, circular_id, [item.id for item in lists], scheduled_at=scheduled_at
        )
    except SendRefused as exc:
        session.rollback()
        fail(str(exc))
    session.commit()
    send_id, title = new_send.id, new_send.circular.display_title
    if scheduled_at is None:
        enqueue(START_SEND, send_id)
        click.echo(f"Send {send_id} started: {title}")
    else:
        click.echo(
            f"Send {send_id} scheduled for {_local_time(scheduled_at)}: {title} "
            f"(cancel with: circulars sends cancel {send_id})"
        )
    if not wait:
        return
    started = time.monotonic()
    warned = False
    ended = (SendStatus.DONE, SendStatus.FAILED, SendStatus.PAUSED, SendStatus.CANCELLED)
    with click.progressbar(length=1, label="Sending", show_percent=True, show_pos=True) as bar:
        while True:
            session.expire_all()
            row = session.get(Send, send_id)
            counts = send_progress(session, send_id)
            session.commit()
            if row.total is not None:
                bar.length = max(row.total, 1)
                bar.update(counts["sent"] + counts["failed"] - bar.pos)
            if row.status in ended:
                break
            if not warned and row.status == SendStatus.QUEUED and time.monotonic() - started > 30:
                click.echo(
                    "\nStill queued after 30 s: is a worker running "
                    "(circulars serve, or celery -A worker worker)?",
                    err=True,
                )
                warned = True
            if timeout is not None and time.monotonic() - started > timeout:
                fail(
                    f"gave up waiting after {timeout:.0f} s; the send goes on (send {send_id}).",
                    code=3,
                )
            time.sleep(0.5)
    elapsed = time.monotonic() - started
    if row.status == SendStatus.FAILED:
        fail(f"send {send_id} could not start: {row.error}", code=1)
    if row.status == SendStatus.PAUSED:
        fail(
            f"send {send_id} is paused ({row.pause_reason or 'no reason given'}) after "
            f"{counts['sent']} sent, {counts['failed']} failed, {counts['pending']} waiting; "
            f"resume with: circulars sends resume {send_id}",
            code=4,
        )
    if row.status == SendStatus.CANCELLED:
        fail(
            f"send {send_id} was cancelled: {counts['sent']} sent, {counts['failed']} failed, "
            f"{counts['cancelled']} not sent.",
            code=5,
        )
    click.echo(
        f"Done in {elapsed:.1f} s: {counts['sent']} sent, {counts['failed']} failed, "
        f"of {row.total} recipients."
    )
    if counts["failed"]:
        sys.exit(1)


def _local_time(moment: Any) -> str:
    """A moment as the organisation reads it: local time and zone name."""
    from zoneinfo import ZoneInfo

    zone = current_app.extensions["circulars.settings"].timezone
    return f"{moment.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M} ({zone})"


# --- sends (control) --------------------------------------------------------------------


@main.group("sends")
def sends_group() -> None:
    """Sends: list them; pause, resume or cancel one (cancel also drops a schedule)."""


def _control(action: str, send_id: int) -> None:
    from .sending import control
    from .tasks import START_SEND, enqueue

    session = db_session()
    try:
        if action == "pause":
            control.pause_send(session, send_id, "Paused from the command line.")
        elif action == "resume":
            control.resume_send(session, send_id)
            enqueue(START_SEND, send_id)
        else:
            control.cancel_send(session, send_id)
    except control.ControlRefused as exc:
        session.rollback()
        fail(str(exc), code=1)


@sends_group.command("pause")
@click.argument("send_id", type=int)
def sends_pause(send_id: int) -> None:
    """Pause a queued or running send; every worker stops within about a second."""
    _control("pause", send_id)
    click.echo(f"Send {send_id} paused. Resume with: circulars sends resume {send_id}")


@sends_group.command("resume")
@click.argument("send_id", type=int)
def sends_resume(send_id: int) -> None:
    """Resume a paused send; nothing already sent is sent again."""
    _control("resume", send_id)
    click.echo(f"Send {send_id} resumed.")


@sends_group.command("cancel")
@click.argument("send_id", type=int)
def sends_cancel(send_id: int) -> None:
    """Cancel a send, or its schedule; what was not sent yet is never sent."""
    from .models import Send

    _control("cancel", send_id)
    row = db_session().get(Send, send_id)
    click.echo(
        f"Send {send_id} cancelled: {row.sent_count} sent, {row.failed_count} failed, "
        f"{row.cancelled_count} not sent."
    )


@sends_group.command("list")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option(
    "--status",
    type=click.Choice(["scheduled", "queued", "running", "paused", "done", "failed", "cancelled"]),
    default=None,
    help="Only sends in this state.",
)
def sends_list(limit: int, status: str | None) -> None:
    """The latest sends: id, status, circular, when (scheduled or started), progress."""
    from sqlalchemy.orm import selectinload

    from .models import Send
    from .sending.service import send_progress

    session = db_session()
    query = select(Send).options(selectinload(Send.circular)).order_by(Send.id.desc())
    if status:
        query = query.where(Send.status == status)
    rows = list(session.scalars(query.limit(limit)))
    if not rows:
        click.echo("No sends.")
        return
    for row in rows:
        if row.status == "scheduled" and row.scheduled_at is not None:
            when = f"at {_local_time(row.scheduled_at)}"
        elif row.started_at is not None:
            when = f"started {_local_time(row.started_at)}"
        else:
            when = "not started"
        counts = send_progress(session, row.id)
        line = (
            f"{row.id:>6}  {row.status:<9}  {when}  {counts['sent']} sent, "
            f"{counts['failed']} failed, {counts['pending']} waiting"
            + (f", {counts['cancelled']} cancelled" if counts["cancelled"] else "")
            + f"  {row.circular.display_title}"
        )
        if row.status == "paused" and row.pause_reason:
            line += f"\n        paused: {row.pause_reason}"
        click.echo(line)


# --- DKIM -------------------------------------------------------------------------------


@main.group("dkim")
def dkim_group() -> None:
    """DKIM signing keys (files under DKIM_KEY_DIR, never in the database)."""


@dkim_group.command("generate", with_appcontext=False)
@click.option("--selector", required=True, help="The DNS selector, as in SEL._domainkey.DOMAIN.")
@click.option(
    "--algorithm", type=click.Choice(["rsa", "ed25519"]), default="rsa", show_default=True
)
@click.option("--domain", default=None, help="Default: DKIM_DOMAIN, else MAIL_FROM's domain.")
@click.option("--force", is_flag=True, help="Replace an existing key of this selector.")
def dkim_generate(selector: str, algorithm: str, domain: str | None, force: bool) -> None:
    """Create a key (RSA-2048 or Ed25519) and print the DNS TXT record to publish."""
    # Without the app: a DKIM_SELECTOR naming the key about to be made must not stop this.
    from .config import load_settings, parse_domain
    from .mail.dkim import DkimKeyError, key_path, write_key

    try:
        settings = load_settings()
        domain = parse_domain(domain) if domain else settings.dkim_signing_domain
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    assert domain is not None
    try:
        key = write_key(settings.dkim_keys_path, selector, algorithm, force=force)
    except DkimKeyError as exc:
        fail(str(exc))
    click.echo(f"Wrote {key_path(settings.dkim_keys_path, selector, algorithm)} (mode 0600).")
    click.echo("Publish this DNS record, then set DKIM_SELECTOR to use the key:")
    click.echo("")
    click.echo(key.dns_record(domain))


# --- bounces ----------------------------------------------------------------------------


@main.group("bounces")
def bounces_group() -> None:
    """Bounce and complaint intake."""


def _bounce_intake() -> Any:
    from .extensions import db
    from .wiring import bounce_intake

    return bounce_intake(current_app.extensions["circulars.settings"], db.engine)


@bounces_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=2525, show_default=True)
@click.option("--lmtp", is_flag=True, help="Speak LMTP instead of SMTP.")
def bounces_serve(host: str, port: int, lmtp: bool) -> None:
    """Receive bounces by SMTP (or LMTP) from the MTA, store and classify each one."""
    from .subscribers.bounce_intake import BounceReceiver

    receiver = BounceReceiver(_bounce_intake(), host, port, lmtp=lmtp)
    receiver.start()
    click.echo(f"Receiving bounces by {'LMTP' if lmtp else 'SMTP'} on {host}:{port}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        receiver.stop()


@bounces_group.command("poll")
@click.option("--mailbox", "url", default=None, help="Default: BOUNCE_MAILBOX_URL.")
def bounces_poll(url: str | None) -> None:
    """Fetch the bounce mailbox once: store, classify, then delete each message."""
    from .subscribers.bounce_intake import MailboxError, mailbox_from_url, poll

    url = url or current_app.extensions["circulars.settings"].bounce_mailbox_url
    if not url:
        fail("no mailbox: set BOUNCE_MAILBOX_URL or pass --mailbox")
    try:
        mailbox = mailbox_from_url(url or "")
    except ValueError as exc:
        fail(f"--mailbox is not valid: {exc}")
    try:
        result = poll(_bounce_intake(), mailbox)
    except MailboxError as exc:
        fail(str(exc), code=1)
    click.echo(
        f"{result.fetched} fetched, {result.stored} stored and deleted"
        + (f", {result.failed} left for later (database unavailable)" if result.failed else "")
    )


# --- running ----------------------------------------------------------------------------


@main.command("capture")
@click.option(
    "--port", type=int, default=None, help="Default: the port of the embedded capture server."
)
def capture_command(port: int | None) -> None:
    """Run only the capture SMTP server (mail goes to instance/outbox)."""
    from .config import CAPTURE_HOST, CAPTURE_PORT
    from .mail.capture import start_capture_server

    settings = current_app.extensions["circulars.settings"]
    controller = start_capture_server(settings.outbox_path, CAPTURE_HOST, port or CAPTURE_PORT)
    click.echo(
        f"Capturing mail on {CAPTURE_HOST}:{port or CAPTURE_PORT} into {settings.outbox_path}"
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        controller.stop()


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=5000, show_default=True)
@click.option(
    "--no-demo", is_flag=True, help="Do not create the demo account and content on first start."
)
def serve_command(host: str, port: int, no_demo: bool) -> None:
    """Run the whole system: web, worker, beat and (on the embedded default) mail capture."""
    import os

    from . import create_app
    from .devserver import serve

    if not os.environ.get("BASE_URL"):
        # Links in mail must point where this server listens; the worker inherits it.
        os.environ["BASE_URL"] = f"http://{host}:{port}"
    serve(create_app(), host=host, port=port, demo=not no_demo)


@main.command("demo")
def demo_command() -> None:
    """Create demo lists, subscribers and a draft (and an admin if there is none)."""
    from .demo import seed

    for line in seed(db_session(), current_app.extensions["circulars.files"]):
        click.echo(line)


from .branding_cli import branding_group  # noqa: E402
from .digest_cli import digests_command  # noqa: E402  (the command lives beside its service)
from .endorsement_cli import endorsements_group  # noqa: E402

main.add_command(branding_group)
main.add_command(digests_command)
main.add_command(endorsements_group)


if __name__ == "__main__":
    main()
