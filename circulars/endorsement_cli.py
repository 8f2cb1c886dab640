"""`circulars endorsements`: a sign-on statement's endorsements from the command line.

What the endorsements page does, for an operator's scripts: open and close a
sent circular for endorsement, list and export its endorsements, approve or
reject confirmed ones. A circular is named by its number, as on its archive
page (`/circulars/27-slug`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from .cli_support import db_session, fail
from .endorsements.export import export_rows
from .endorsements.service import (
    EndorsementRefused,
    close_endorsement,
    decide,
    is_open,
    open_for_endorsement,
    status_counts,
)
from .models import Circular, Endorsement, EndorsementStatus

STATUSES = [status.value for status in EndorsementStatus]


def _timezone() -> str:
    return str(current_app.extensions["circulars.settings"].timezone)


def _circular(number: int) -> Circular:
    found = db_session().scalar(select(Circular).where(Circular.number == number))
    if found is None:
        fail(f"there is no circular No. {number} (only sent circulars have a number).")
    return found


def _local(moment: Any) -> str:
    zone = _timezone()
    return f"{moment.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M} ({zone})"


def _state(circular: Circular) -> str:
    if is_open(circular):
        until = circular.endorsement_closes_at
        return "open" + (f" until {_local(until)}" if until is not None else "")
    return "closed"


@click.group("endorsements")
def endorsements_group() -> None:
    """Sign-on statements: open, close, list, export, approve and reject endorsements."""


@endorsements_group.command("open")
@click.argument("number", type=int)
@click.option(
    "--until",
    "until",
    metavar="WHEN",
    default=None,
    help="Close by itself then: '2026-12-31 18:00' in the organisation's time zone "
    "(TIMEZONE), or ISO 8601 with an offset. Default: open until closed.",
)
@with_appcontext
def endorsements_open(number: int, until: str | None) -> None:
    """Open (or reopen) circular No. NUMBER for endorsement."""
    from .sending.control import ControlRefused, parse_send_time

    session = db_session()
    circular = _circular(number)
    closes_at = None
    if until is not None:
        try:
            closes_at = parse_send_time(until, _timezone())
        except ControlRefused as exc:
            fail(f"--until: {exc}")
    try:
        open_for_endorsement(circular, closes_at)
    except EndorsementRefused as exc:
        session.rollback()
        fail(str(exc))
    session.commit()
    click.echo(f"Circular No. {number} is {_state(circular)} for endorsement.")


@endorsements_group.command("close")
@click.argument("number", type=int)
@with_appcontext
def endorsements_close(number: int) -> None:
    """Close circular No. NUMBER for endorsement (what was submitted stays)."""
    session = db_session()
    circular = _circular(number)
    close_endorsement(circular)
    session.commit()
    click.echo(f"Circular No. {number} is closed for endorsement.")


@endorsements_group.command("list")
@click.argument("number", type=int)
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only this status.")
@with_appcontext
def endorsements_list(number: int, status: str | None) -> None:
    """Endorsements of circular No. NUMBER: id, status, organisation, country, contact."""
    session = db_session()
    circular = _circular(number)
    counts = status_counts(session, circular.id)
    summary = ", ".join(f"{counts.get(name, 0)} {name.replace('_', ' ')}" for name in STATUSES)
    click.echo(f"Circular No. {number}: {_state(circular)}; {summary}.")
    query = select(Endorsement).where(Endorsement.circular_id == circular.id)
    if status:
        query = query.where(Endorsement.status == status)
    for row in session.scalars(query.order_by(Endorsement.org_key, Endorsement.country)):
        click.echo(
            f"{row.id}\t{row.status}\t{row.organisation}\t{row.country}\t"
            f"{row.contact_name} <{row.email}>"
        )


@endorsements_group.command("export")
@click.argument("number", type=int)
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only this status.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file (default: standard output).",
)
@with_appcontext
def endorsements_export(number: int, status: str | None, output: Path | None) -> None:
    """Export the endorsements of circular No. NUMBER as CSV (formula-like cells neutralised)."""
    circular = _circular(number)
    pieces = export_rows(db_session(), circular.id, status=status, timezone=_timezone())
    if output is None:
        for piece in pieces:
            click.echo(piece, nl=False)
        return
    with output.open("w", newline="", encoding="utf-8") as handle:
        for piece in pieces:
            handle.write(piece)
    click.echo(f"Exported the endorsements of circular No. {number} to {output}.", err=True)


def _decide(number: int, ids: tuple[int, ...], approve: bool) -> None:
    session = db_session()
    circular = _circular(number)
    known = set(
        session.scalars(
            select(Endorsement.id).where(
                Endorsement.circular_id == circular.id, Endorsement.id.in_(ids)
            )
        )
    )
    foreign = sorted(set(ids) - known)
    if foreign:
        fail(
            f"circular No. {number} has no endorsement {', '.join(map(str, foreign))}; "
            "nothing changed (see `circulars endorsements list`)."
        )
    outcome = decide(session, circular.id, ids, approve=approve, user_id=None)
    session.commit()
    verb = "approved" if approve else "rejected"
    click.echo(
        f"{outcome.changed} {verb}, {outcome.unchanged} already {verb}, "
        f"{outcome.unconfirmed} not decided (their address is not confirmed yet)."
    )


@endorsements_group.command("approve")
@click.argument("number", type=int)
@click.argument("ids", type=int, nargs=-1, required=True)
@with_appcontext
def endorsements_approve(number: int, ids: tuple[int, ...]) -> None:
    """Approve endorsements IDS of circular No. NUMBER: shown on its archive page."""
    _decide(number, ids, approve=True)


@endorsements_group.command("reject")
@click.argument("number", type=int)
@click.argument("ids", type=int, nargs=-1, required=True)
@with_appcontext
def endorsements_reject(number: int, ids: tuple[int, ...]) -> None:
    """Reject endorsements IDS of circular No. NUMBER: never shown."""
    _decide(number, ids, approve=False)
