"""Circulars: numbered circulars and newsletters for a network's secretariat."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def create_app(environ: Mapping[str, str] | None = None) -> Flask:
    """Build the app; `environ` replaces os.environ for settings (tests pass a mapping)."""
    from .app import build_app

    return build_app(environ)
