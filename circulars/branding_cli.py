"""`circulars branding`: the branding settings page, for an operator's scripts.

`show` prints what every email and page uses now; `set` changes the fields
it is given and keeps the others, with the page's checks (contrast, web
addresses, the logo's content and size). Anything refused is named, option by
option, and nothing is saved.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from .branding_settings import (
    LOGO_MAX_SIZE,
    BrandingInvalid,
    BrandingValues,
    current_logo,
    current_values,
    logo_path,
    save_branding,
    saved_settings,
)
from .cli_support import db_session, fail
from .images import ImageRefused, check_image

#: The text fields of BrandingValues, each with its option (name -> --option-name).
TEXT_FIELDS = [f.name for f in fields(BrandingValues) if f.name != "social"]


def _option(field: str) -> str:
    return "--" + field.replace("_", "-")


def _defaults() -> Any:
    from .wiring import default_branding

    return default_branding(current_app.extensions["circulars.settings"])


def _problem_option(field: str) -> str:
    """The option a problem of the settings page's field `field` is about."""
    if field.startswith("social-"):
        index = field.split("-")[1]
        return f"--social (link {int(index) + 1})"
    if field == "logo":
        return "--logo"
    return _option(field)


@click.group("branding")
def branding_group() -> None:
    """The organisation's branding in every email and page: show it, or change it."""


@branding_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@with_appcontext
def branding_show(as_json: bool) -> None:
    """What every email and page uses now."""
    session = db_session()
    values = current_values(session, _defaults())
    row = saved_settings(session)
    logo = current_logo(session)
    logo_info = (
        {
            "path": logo_path(logo.sha256, logo.content_type),
            "content_type": logo.content_type,
            "width": logo.width,
            "height": logo.height,
            "bytes": logo.size,
        }
        if logo is not None
        else None
    )
    if as_json:
        data: dict[str, Any] = asdict(values)
        data["social"] = [{"name": name, "url": url} for name, url in values.social]
        data["logo"] = logo_info
        data["version"] = row.version if row is not None else None
        data["saved_at"] = row.updated_at.isoformat() if row is not None else None
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    if row is None:
        click.echo("Not saved yet: the ORG_* settings are in use.")
    else:
        by = f" by {row.updated_by_email}" if row.updated_by_email else ""
        click.echo(f"Version {row.version}, saved {row.updated_at:%Y-%m-%d %H:%M} UTC{by}.")
    for field in TEXT_FIELDS:
        value = getattr(values, field)
        shown = value.replace("\n", "\n" + " " * 17) if value else "-"
        click.echo(f"{field:16} {shown}")
    for name, url in values.social:
        click.echo(f"{'social':16} {name} {url}")
    if logo_info is None:
        click.echo(f"{'logo':16} -")
    else:
        click.echo(
            f"{'logo':16} {logo_info['path']} ({logo_info['width']} × {logo_info['height']} px, "
            f"{logo_info['bytes']:,} bytes)"
        )


def _text_options(command: Any) -> Any:
    for field in reversed(TEXT_FIELDS):
        command = click.option(
            _option(field),
            field,
            default=None,
            metavar="TEXT",
            help=f"New {field.replace('_', ' ')} ('' clears it).",
        )(command)
    return command


@branding_group.command("set")
@_text_options
@click.option(
    "--social",
    "social",
    multiple=True,
    metavar="NAME=URL",
    help="A social link, such as 'Mastodon=https://…'; repeat for each. Replaces all links.",
)
@click.option("--no-social", is_flag=True, help="Remove every social link.")
@click.option(
    "--logo",
    "logo_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help=f"A PNG, JPEG, GIF or WebP logo of at most {LOGO_MAX_SIZE // 1024} KB.",
)
@click.option("--remove-logo", is_flag=True, help="Show no logo.")
@with_appcontext
def branding_set(
    social: tuple[str, ...],
    no_social: bool,
    logo_file: Path | None,
    remove_logo: bool,
    **texts: str | None,
) -> None:
    """Change the given fields and keep the others; the next email and page use them."""
    if social and no_social:
        fail("give --social or --no-social, not both.")
    if logo_file is not None and remove_logo:
        fail("give --logo or --remove-logo, not both.")
    changes: dict[str, Any] = {field: value for field, value in texts.items() if value is not None}
    if social or no_social:
        links = []
        for item in social:
            name, equals, url = item.partition("=")
            if not equals:
                fail(f"--social {item!r}: write NAME=URL, such as 'Mastodon=https://…'.")
            links.append((name, url))
        changes["social"] = tuple(links)
    if not changes and logo_file is None and not remove_logo:
        fail("nothing to change: give at least one option (see --help).")
    image = None
    if logo_file is not None:
        try:
            with logo_file.open("rb") as handle:
                data = handle.read(LOGO_MAX_SIZE + 1)
            image = check_image(data, max_bytes=LOGO_MAX_SIZE)
        except OSError as exc:
            fail(f"--logo: cannot read {logo_file}: {exc.strerror or exc}")
        except ImageRefused as exc:
            fail(f"--logo: {exc}")
    session = db_session()
    values = replace(current_values(session, _defaults()), **changes)
    try:
        row = save_branding(
            session,
            values,
            files=current_app.extensions["circulars.files"],
            user=None,
            logo=image,
            remove_logo=remove_logo,
        )
    except BrandingInvalid as exc:
        session.rollback()
        for field, message in exc.problems.items():
            click.echo(f"Error: {_problem_option(field)}: {message}", err=True)
        click.echo("Nothing was saved.", err=True)
        sys.exit(2)
    click.echo(f"Branding saved (version {row.version}). Every email and page uses it from now on.")
