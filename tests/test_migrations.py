"""The migrations are the only source of the schema: one head, no drift, and a way back.

Run through the real `flask db` commands in a subprocess, on a database of their own,
so the app under test elsewhere keeps its connection.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import PG_ADMIN_URL, PROJECT_ROOT, _pg_admin_dsn, _postgres_available, service_missing


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    if not _postgres_available():
        service_missing(f"PostgreSQL at {PG_ADMIN_URL}")
    import psycopg

    name = f"circulars_migrations_{secrets.token_hex(4)}"
    with psycopg.connect(_pg_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(_pg_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def flask_db(database_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "SECRET_KEY": secrets.token_urlsafe(24),
        "LOG_LEVEL": "WARNING",
    }
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "circulars", "db", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_there_is_one_head(tmp_path: Path) -> None:
    result = flask_db(f"sqlite:///{tmp_path / 'heads.db'}", tmp_path, "heads")
    assert result.returncode == 0, result.stderr
    heads = [line for line in result.stdout.splitlines() if "(head)" in line]
    assert len(heads) == 1, result.stdout


def test_upgrade_matches_the_models_and_downgrades_cleanly(
    database_url: str, tmp_path: Path
) -> None:
    upgraded = flask_db(database_url, tmp_path, "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    # `db check` fails when the models hold anything the migrations do not create.
    checked = flask_db(database_url, tmp_path, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "No new upgrade operations detected" in checked.stdout + checked.stderr

    down = flask_db(database_url, tmp_path, "downgrade", "base")
    assert down.returncode == 0, down.stderr
    again = flask_db(database_url, tmp_path, "upgrade")
    assert again.returncode == 0, again.stderr
    current = flask_db(database_url, tmp_path, "current")
    assert "(head)" in current.stdout, current.stdout + current.stderr


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_subscriber_search_has_trigram_indexes_on_postgresql(
    database_url: str, tmp_path: Path
) -> None:
    assert flask_db(database_url, tmp_path, "upgrade").returncode == 0
    import psycopg

    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        names = {
            row[0]
            for row in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'subscribers'"
            )
        }
    assert "ix_subscribers_search_trgm" in names
    # One index for the three columns (0013), not one each (0003).
    assert (
        not {
            "ix_subscribers_email_trgm",
            "ix_subscribers_name_trgm",
            "ix_subscribers_organization_trgm",
        }
        & names
    )
