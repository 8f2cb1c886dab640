"""Time admin subscriber pages (search, filters, keyset pages) with 1,000,000 subscribers.

Creates a fresh database (SQLite file or PostgreSQL database), runs the
migrations, fills it with INSERT … SELECT (generate_series on PostgreSQL, a
recursive CTE on SQLite) across 3 lists with languages, organisations and JSON
attributes, then requests each page ~20 times through the real Flask app with
its test client (routing, login, the query, the template) and prints p50/p95.

    .venv/bin/python bench/subscribers_page.py --stack sqlite --rows 1000000
    .venv/bin/python bench/subscribers_page.py --stack postgres --rows 1000000 --bulk
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_ADMIN_URL = os.environ.get(
    "BENCH_DATABASE_URL_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
FIRST = [
    "Ana",
    "Bruno",
    "Carla",
    "David",
    "Elena",
    "Farid",
    "Grace",
    "Hassan",
    "Ines",
    "Jonas",
    "Karim",
    "Lea",
    "Maria",
    "Nadia",
    "Omar",
    "Paula",
    "Rafael",
    "Sara",
    "Tomas",
    "Yusuf",
]
LAST = [
    "Silva",
    "Garcia",
    "Martin",
    "Dubois",
    "Rossi",
    "Novak",
    "Haddad",
    "Kowalski",
    "Mensah",
    "Okafor",
    "Petrov",
    "Santos",
    "Tanaka",
    "Schmidt",
    "Moreau",
    "Costa",
    "Ibrahim",
    "Jensen",
    "Lopez",
    "Ndiaye",
    "Rahman",
    "Cohen",
    "Fischer",
    "Kariuki",
    "Mendes",
]
ORGS = [
    "Caritas",
    "Red Crescent",
    "Oxfam",
    "ACNUR",
    "Migrant Rights Network",
    "Amnesty",
    "IOM Liaison",
    "Save the Children",
    "Refugee Council",
    "Solidar",
    "Anonymous Foundation",
    "Lawyers Without Borders",
]
COUNTRIES = [
    "Kenya",
    "Chile",
    "France",
    "Lebanon",
    "Jordan",
    "Nepal",
    "Brazil",
    "Senegal",
    "Italy",
    "Mexico",
    "Philippines",
    "Egypt",
    "Morocco",
]
LANGUAGES = ["en", "fr", "ar", "es", "ru", "zh"]


def create_database(stack: str, workdir: Path) -> tuple[str, Any]:
    """A fresh database URL and a function that drops it."""
    if stack == "sqlite":
        return f"sqlite:///{workdir / 'bench.db'}", lambda: None
    import psycopg

    admin = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    name = f"circulars_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}", drop


def values_table(conn: Any, name: str, values: list[str]) -> None:
    conn.execute(text(f"CREATE TEMPORARY TABLE {name} (i INTEGER PRIMARY KEY, v TEXT)"))
    conn.execute(
        text(f"INSERT INTO {name} (i, v) VALUES (:i, :v)"),  # noqa: S608
        [{"i": i, "v": v} for i, v in enumerate(values)],
    )


def fill(engine: Any, rows: int) -> float:
    """Subscribers, their subscriptions on 3 lists, and some suppressions; returns seconds."""
    started = time.perf_counter()
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO lists (id, slug, name, description, public, welcome_message, "
                "created_at) VALUES (1, 'members', 'Members', '', true, '', :now), "
                "(2, 'partners', 'Partners', '', true, '', :now), "
                "(3, 'press', 'Press', '', false, '', :now)"
            ),
            {"now": "2026-11-01 00:00:00+00:00"},
        )
        for name, values in (
            ("b_first", FIRST),
            ("b_last", LAST),
            ("b_org", ORGS),
            ("b_country", COUNTRIES),
            ("b_lang", LANGUAGES),
        ):
            values_table(conn, name, values)
        if postgres:
            series = f"SELECT generate_series(1, {rows}) AS n"
            json = "::jsonb"
            created = "TIMESTAMPTZ '2026-11-01 00:00:00+00' - (s.n || ' seconds')::interval"
        else:
            recurse = "SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < " + str(rows)  # noqa: S608
            series = f"WITH RECURSIVE seq(n) AS ({recurse}) SELECT n FROM seq"  # noqa: S608
            json = ""
            created = "strftime('%Y-%m-%d %H:%M:%f', '2026-11-01', '-' || s.n || ' seconds')"
        # Emails: first.last<n>@org<n % 997>.example.org; names and organisations from the
        # small tables, so common words ("Garcia", "Oxfam") match many rows, as in real lists.
        # Only numbers and fixed fragments are formatted into these statements.
        insert_subscribers = f"""
                INSERT INTO subscribers (id, email, name, language, organization, attributes,
                    status, domain, suppression_exempt, created_at, updated_at)
                SELECT s.n,
                    lower(f.v) || '.' || lower(l.v) || s.n || '@org' || (s.n % 997)
                        || '.example.org',
                    f.v || ' ' || l.v,
                    g.v,
                    CASE WHEN s.n % 4 = 0 THEN '' ELSE o.v END,
                    ('{{"country": "' || c.v || '", "member_type": "'
                        || CASE WHEN s.n % 3 = 0 THEN 'full' ELSE 'associate' END
                        || '"}}'){json},
                    CASE WHEN s.n % 50 = 0 THEN 'unsubscribed' ELSE 'active' END,
                    'org' || (s.n % 997) || '.example.org',
                    false,
                    {created},
                    {created}
                FROM ({series}) AS s
                JOIN b_first f ON f.i = s.n % {len(FIRST)}
                JOIN b_last l ON l.i = (s.n / {len(FIRST)}) % {len(LAST)}
                JOIN b_org o ON o.i = (s.n / 7) % {len(ORGS)}
                JOIN b_country c ON c.i = (s.n / 3) % {len(COUNTRIES)}
                JOIN b_lang g ON g.i = (s.n / 11) % {len(LANGUAGES)}
                """  # noqa: S608
        conn.execute(text(insert_subscribers))
        for list_id, modulo in ((1, 2), (2, 3), (3, 5)):
            insert_subscriptions = f"""
                    INSERT INTO subscriptions (subscriber_id, list_id, status, delivery,
                        created_at, updated_at)
                    SELECT id, {list_id},
                        CASE WHEN id % 7 = 0 THEN 'unconfirmed'
                             WHEN id % 50 = 0 THEN 'unsubscribed' ELSE 'confirmed' END,
                        CASE WHEN id % 13 = 0 THEN 'weekly' ELSE 'every' END,
                        created_at, created_at
                    FROM subscribers WHERE id % {modulo} = 0
                    """  # noqa: S608
            conn.execute(text(insert_subscriptions))
        conn.execute(
            text(
                "INSERT INTO suppressions (kind, value, value_hash, reason, note, created_at) "
                "SELECT 'address', email, 'h' || id, 'hard_bounce', '', created_at "
                "FROM subscribers WHERE id % 97 = 0"
            )
        )
        conn.execute(
            text(
                "INSERT INTO suppressions (kind, value, value_hash, reason, note, created_at) "
                "VALUES ('domain', 'org13.example.org', 'd13', 'blocked', '', '2026-11-01'), "
                "('domain', 'org500.example.org', 'd500', 'blocked', '', '2026-11-01')"
            )
        )
        if postgres:
            conn.execute(
                text("SELECT setval(pg_get_serial_sequence('subscribers', 'id'), :n)"),
                {"n": rows},
            )
            conn.execute(text("SELECT setval(pg_get_serial_sequence('lists', 'id'), 3)"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE" if postgres else "ANALYZE"))
    return time.perf_counter() - started


CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def sign_in(app: Any) -> Any:
    from circulars.accounts import create_user
    from circulars.extensions import db

    with app.app_context():
        create_user(db.session, "bench@example.org", "correct horse battery", "admin")
        db.session.commit()
        db.session.remove()
    client = app.test_client()
    page = client.get("/admin/login")
    token = CSRF_RE.search(page.text)
    assert token
    response = client.post(
        "/admin/login",
        data={
            "email": "bench@example.org",
            "password": "correct horse battery",
            "csrf_token": token.group(1),
        },
    )
    assert response.status_code == 302, response.status_code
    return client


def cases(engine: Any, rows: int) -> list[tuple[str, str]]:
    """(label, url) of the pages timed; cursors and sample values read from the data."""
    with engine.connect() as conn:
        page_100_after = conn.execute(
            text("SELECT id FROM subscribers ORDER BY id DESC LIMIT 1 OFFSET :n"),
            {"n": 99 * 50 - 1},
        ).scalar()
        sample = conn.execute(
            text("SELECT email FROM subscribers WHERE id = :n"), {"n": rows // 2 + 1}
        ).scalar()
    local = str(sample).split("@")[0]
    return [
        ("first page", "/admin/subscribers"),
        ("page 100 (keyset)", f"/admin/subscribers?after={page_100_after}"),
        ("oldest first, page 1", "/admin/subscribers?order=oldest"),
        ("address start (ana.silva12@org…)", f"/admin/subscribers?q={local}%40org"),
        ("exact address", f"/admin/subscribers?q={sample}"),
        ("domain (@org42.example.org)", "/admin/subscribers?q=%40org42.example.org"),
        ("name, common (garcia)", "/admin/subscribers?q=garcia"),
        ("organisation, common (oxfam)", "/admin/subscribers?q=oxfam"),
        ("name + org, rare (one match)", f"/admin/subscribers?q={local}"),
        ("search matching nothing", "/admin/subscribers?q=zzqx-nothing"),
        ("filter: list", "/admin/subscribers?list=2"),
        ("filter: list + unconfirmed", "/admin/subscribers?list=3&list_status=unconfirmed"),
        ("filter: language", "/admin/subscribers?language=ar"),
        ("filter: attribute", "/admin/subscribers?attribute=country%3DKenya"),
        ("filter: status unsubscribed", "/admin/subscribers?status=unsubscribed"),
        ("filter: suppressed", "/admin/subscribers?suppressed=yes"),
        (
            "list + language + attribute",
            "/admin/subscribers?list=1&language=fr&attribute=member_type%3Dfull",
        ),  # noqa: E501
    ]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def time_pages(client: Any, pages: list[tuple[str, str]], runs: int) -> list[tuple[str, ...]]:
    results = []
    for label, url in pages:
        timings = []
        shown = 0
        for attempt in range(runs + 2):
            started = time.perf_counter()
            response = client.get(url)
            elapsed = (time.perf_counter() - started) * 1000
            assert response.status_code == 200, (url, response.status_code)
            if attempt >= 2:  # two warm-up requests: caches, not the first-ever parse
                timings.append(elapsed)
            shown = len(re.findall(r'<td><a href="/admin/subscribers/\d+">', response.text))
        results.append(
            (
                label,
                f"{statistics.median(timings):.0f}",
                f"{percentile(timings, 0.95):.0f}",
                str(shown),
            )
        )
        print(f"{label:40} p50 {results[-1][1]:>6} ms  p95 {results[-1][2]:>6} ms  rows {shown}")
    return results


def time_bulk(app: Any) -> None:
    """A bulk add of everyone on Members to a new list, and its confirmation count."""
    from circulars.extensions import db
    from circulars.models import MailingList
    from circulars.subscribers.bulk import BulkAction, preview, run
    from circulars.subscribers.search import SubscriberFilter

    with app.app_context():
        target = MailingList(slug="everyone", name="Everyone")
        db.session.add(target)
        db.session.commit()
        query_filter = SubscriberFilter(list_id=1)
        started = time.perf_counter()
        outcome = preview(db.session, query_filter, BulkAction.ADD, target.id)
        print(
            f"bulk add preview: {outcome.matched} matched, {outcome.changed} to add, "
            f"{outcome.suppressed} suppressed in {time.perf_counter() - started:.1f} s"
        )
        result = run(
            db.session,
            query_filter,
            BulkAction.ADD,
            target.id,
            user_id=None,
            on_chunk=lambda _r: db.session.commit(),
        )
        db.session.commit()
        print(
            f"bulk add: {result.changed} added, {result.suppressed} suppressed skipped, "
            f"in {result.seconds:.1f} s"
        )
        started = time.perf_counter()
        result = run(
            db.session,
            SubscriberFilter(list_id=target.id),
            BulkAction.REMOVE,
            target.id,
            user_id=None,
            on_chunk=lambda _r: db.session.commit(),
        )
        db.session.commit()
        print(f"bulk remove: {result.changed} removed in {result.seconds:.1f} s")
        db.session.remove()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--bulk", action="store_true", help="also time a bulk add and remove")
    options = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="circulars-bench-"))
    url, drop = create_database(options.stack, workdir)
    try:
        from flask_migrate import upgrade

        from circulars import create_app
        from circulars.extensions import db

        app = create_app(
            {
                "DATABASE_URL": url,
                "INSTANCE_PATH": str(workdir),
                "SECRET_KEY": secrets.token_urlsafe(32),
                "LOG_LEVEL": "WARNING",
            }
        )
        with app.app_context():
            upgrade()
        assert db.engine is not None
        seconds = fill(db.engine, options.rows)
        print(f"{options.stack}: filled {options.rows:,} subscribers in {seconds:.1f} s")
        pages = cases(db.engine, options.rows)
        client = sign_in(app)
        time_pages(client, pages, options.runs)
        if options.bulk:
            time_bulk(app)
        db.session.remove()
        db.engine.dispose()
    finally:
        drop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
