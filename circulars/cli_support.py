"""What every `circulars` command group shares: how a refusal ends, and the session."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click


def fail(message: str, code: int = 2) -> NoReturn:
    """Say why on standard error and exit (2: bad input, nothing was changed)."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def db_session() -> Any:
    """The app context's session (the command runs inside one)."""
    from .extensions import db

    return db.session
