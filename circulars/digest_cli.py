"""`circulars digests`: which digests are due, and running them now instead of waiting for beat."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from .models import Circular, MailingList, Subscription, SubscriptionStatus, utcnow


def _at(value: str | None, timezone: str) -> datetime:
    if value is None:
        return utcnow()
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        click.echo(
            f"Error: --at: {value!r} is not a date and time such as 2026-12-07T09:30.", err=True
        )
        sys.exit(2)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(timezone))
    return moment.astimezone(ZoneInfo("UTC"))


def _local(moment: datetime, timezone: str) -> str:
    return f"{moment.astimezone(ZoneInfo(timezone)):%Y-%m-%d %H:%M}"


def _numbers(session: Any, circular_ids: tuple[int, ...]) -> str:
    if not circular_ids:
        return "none"
    numbers = sorted(
        number
        for number in session.scalars(select(Circular.number).where(Circular.id.in_(circular_ids)))
        if number is not None
    )
    return ", ".join(f"No. {number}" for number in numbers)


@click.command("digests")
@with_appcontext  # added with main.add_command, so FlaskGroup does not wrap it itself
@click.option("--dry-run", is_flag=True, help="Only print what is due; send and record nothing.")
@click.option("--list", "slug", default=None, help="Only this list (its short name).")
@click.option(
    "--at",
    "at",
    default=None,
    metavar="ISO-DATETIME",
    help="Evaluate as of this moment (in TIMEZONE unless it has an offset); default: now.",
)
def digests_command(dry_run: bool, slug: str | None, at: str | None) -> None:
    """Digests due now, per list and frequency: who would get one, with which circulars.

    Without --dry-run they are sent now, in this process, and recorded as beat's
    would be: a period already sent is never sent again, and one cut short is finished.
    """
    from .digests import runs, schedule
    from .extensions import db

    session = db.session
    settings = current_app.extensions["circulars.settings"]
    zone = settings.timezone
    moment = _at(at, zone)
    if (
        slug is not None
        and session.scalar(select(MailingList.id).where(MailingList.slug == slug)) is None
    ):
        click.echo(f"Error: there is no list {slug!r}.", err=True)
        sys.exit(2)
    if not dry_run and moment > utcnow():
        click.echo("Error: --at is in the future; only --dry-run can look ahead.", err=True)
        sys.exit(2)
    click.echo(f"As of {_local(moment, zone)} ({zone}):")
    reports = runs.dry_run(session, moment, zone, list_slug=slug)
    if not reports:
        click.echo("No digest is due.")
        _print_next(session, moment, zone, slug, schedule)
        return
    for report in reports:
        period = report.period
        head = (
            f"{period.list_slug} {period.frequency}, period "
            f"{_local(period.period_start, zone)} to {_local(period.period_end, zone)}"
        )
        if report.run_status == "done":
            click.echo(f"{head}: already sent (run {report.run_id}, {report.readers} recipients).")
            continue
        if report.run_status == "running":
            click.echo(
                f"{head}: run {report.run_id} under way, {report.recipients} of "
                f"{report.readers} recipients still to send; circulars "
                f"{_numbers(session, report.circular_ids)}."
            )
            continue
        click.echo(
            f"{head}: {report.recipients} recipients (of {report.readers} {period.frequency} "
            f"readers), {report.groups} digests to render; circulars "
            f"{_numbers(session, report.circular_ids)}."
        )
    session.rollback()
    if dry_run:
        click.echo("Dry run: nothing was sent.")
        return
    ctx = current_app.extensions["circulars.send_context"]
    results = runs.run_due(session, ctx, moment, list_slug=slug)
    for run_id, outcome in results:
        waiting = f", {outcome.deferred} to retry" if outcome.deferred else ""
        click.echo(f"Run {run_id}: {outcome.sent} sent, {outcome.failed} failed{waiting}.")
    if not results:
        click.echo("Nothing left to send.")


def _print_next(session: Any, moment: datetime, zone: str, slug: str | None, schedule: Any) -> None:
    """The next digest of each list that has digest readers, so an empty answer still helps."""
    query = (
        select(MailingList, Subscription.delivery)
        .join(Subscription, Subscription.list_id == MailingList.id)
        .where(
            Subscription.status == SubscriptionStatus.CONFIRMED,
            Subscription.delivery.in_(["weekly", "monthly"]),
        )
        .distinct()
        .order_by(MailingList.slug, Subscription.delivery)
    )
    if slug is not None:
        query = query.where(MailingList.slug == slug)
    for mailing_list, frequency in session.execute(query):
        plan = schedule.Schedule.of(mailing_list)
        upcoming = schedule.following(plan, frequency, moment, zone)
        click.echo(f"Next: {mailing_list.slug} {frequency} on {_local(upcoming, zone)}.")
