"""Time a send's report, its CSV and a subscriber's history with 100,000 deliveries.

Creates a fresh database (SQLite file or PostgreSQL database), runs the
migrations, fills one send with N deliveries by INSERT … SELECT (96% accepted
over about half an hour, 3% failed with replies that name the address, 1%
waiting) and bounces for 3% of them, then times through the real Flask app
(test client, signed in): the report page, the CSV download read to its end
(with the process's peak memory before and after), and a subscriber's page.

    .venv/bin/python bench/send_report.py --stack sqlite --rows 100000
    .venv/bin/python bench/send_report.py --stack postgres --rows 100000
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_ADMIN_URL = os.environ.get(
    "BENCH_DATABASE_URL_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def create_database(stack: str, workdir: Path) -> tuple[str, Any]:
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


def fill(engine: Any, rows: int) -> float:
    started = time.perf_counter()
    postgres = engine.dialect.name == "postgresql"
    if postgres:
        series = f"SELECT generate_series(1, {rows}) AS n"
        sent_at = "TIMESTAMPTZ '2026-11-02 09:00:00+00' + (s.n * 0.018 || ' seconds')::interval"
    else:
        recurse = "SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < " + str(rows)  # noqa: S608
        series = f"WITH RECURSIVE seq(n) AS ({recurse}) SELECT n FROM seq"  # noqa: S608
        sent_at = (
            "strftime('%Y-%m-%d %H:%M:%f', '2026-11-02 09:00:00', (s.n * 0.018) || ' seconds')"
        )
    now = "'2026-11-02 09:00:00+00:00'"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO lists (id, slug, name, description, public, welcome_message, "
                "created_at) VALUES (1, 'members', 'Members', '', true, '', :now)"
            ),
            {"now": START},
        )
        conn.execute(
            text(
                f"""INSERT INTO subscribers (id, email, name, language, organization, attributes,
                    status, domain, suppression_exempt, created_at, updated_at)
                SELECT s.n, 'person' || s.n || '@org' || (s.n % 997) || '.example.org',
                    'Person ' || s.n, 'en', '', '{{}}', 'active',
                    'org' || (s.n % 997) || '.example.org', false, {now}, {now}
                FROM ({series}) AS s"""  # noqa: S608
            )
        )
        conn.execute(
            text(
                "INSERT INTO circulars (id, number, title, body_markdown, status, revision, "
                "created_at, updated_at, first_sent_at) VALUES (1, 1, 'Global Compact', "
                "'Hello.', 'sent', 1, :now, :now, :now)"
            ),
            {"now": START},
        )
        conn.execute(
            text(
                "INSERT INTO sends (id, circular_id, status, created_at, started_at, total) "
                "VALUES (1, 1, 'running', :now, :now, :rows)"
            ),
            {"now": START, "rows": rows},
        )
        # Every 33rd failed (three replies, each naming the address), every 100th waiting.
        conn.execute(
            text(
                f"""INSERT INTO deliveries (id, send_id, subscriber_id, list_id, email, name,
                    status, attempts, last_error, sent_at)
                SELECT s.n, 1, s.n, 1, 'person' || s.n || '@org' || (s.n % 997) || '.example.org',
                    'Person ' || s.n,
                    CASE WHEN s.n % 33 = 0 THEN 'failed' WHEN s.n % 100 = 0 THEN 'pending'
                         ELSE 'sent' END,
                    1,
                    CASE WHEN s.n % 33 = 0 THEN
                        CASE s.n % 3
                        WHEN 0 THEN '550 5.1.1 <person' || s.n || '@org' || (s.n % 997)
                            || '.example.org>: Recipient address rejected: User unknown'
                        WHEN 1 THEN '552 5.2.2 Mailbox full'
                        ELSE '554 5.7.1 Message rejected as spam' END
                    END,
                    CASE WHEN s.n % 33 = 0 OR s.n % 100 = 0 THEN NULL ELSE {sent_at} END
                FROM ({series}) AS s"""  # noqa: S608
            )
        )
        conn.execute(
            text(
                f"""INSERT INTO bounces (received_at, delivery_id, subscriber_id, email, kind,
                    status_code, diagnostic, source, raw_path, processed)
                SELECT {now}, id, subscriber_id, email,
                    CASE WHEN id % 3 = 0 THEN 'hard' WHEN id % 3 = 1 THEN 'soft'
                         ELSE 'complaint' END,
                    CASE WHEN id % 3 = 0 THEN '5.1.1' WHEN id % 3 = 1 THEN '4.2.2' ELSE '' END,
                    'smtp; 550 5.1.1 <' || email || '>: User unknown',
                    'smtp', '', true
                FROM deliveries WHERE status = 'sent' AND id % 31 = 0"""  # noqa: S608
            )
        )
        if postgres:
            for table in ("subscribers", "lists", "circulars", "sends", "deliveries"):
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE" if postgres else "ANALYZE"))
    return time.perf_counter() - started


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


def timed(client: Any, url: str, runs: int) -> tuple[float, float, int]:
    timings = []
    size = 0
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(url)
        size = len(response.get_data())
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return statistics.median(timings), max(timings), size


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="circulars-bench-report-"))
    url, drop = create_database(args.stack, workdir)
    try:
        from flask_migrate import upgrade

        from circulars import create_app
        from circulars.extensions import db

        app = create_app(
            {
                "DATABASE_URL": url,
                "INSTANCE_PATH": str(workdir / "instance"),
                "SECRET_KEY": secrets.token_urlsafe(32),
                "LOG_LEVEL": "WARNING",
            }
        )
        with app.app_context():
            upgrade()
            seconds = fill(db.engine, args.rows)
            db.session.remove()
        print(f"{args.stack}: {args.rows:,} deliveries filled in {seconds:.1f} s")
        client = sign_in(app)
        for label, path in (
            ("report page", "/admin/sends/1/report"),
            ("subscriber page with history", f"/admin/subscribers/{args.rows // 2 + 31 * 3}"),
        ):
            median, worst, _size = timed(client, path, args.runs)
            print(f"  {label:32} median {median:8.1f} ms   max {worst:8.1f} ms")
        before = peak_rss_mb()
        started = time.perf_counter()
        response = client.get("/admin/sends/1/deliveries.csv", buffered=False)
        size = 0
        lines = 0
        for piece in response.response:
            size += len(piece)
            lines += piece.count(b"\n") if isinstance(piece, bytes) else piece.count("\n")
        response.close()
        elapsed = time.perf_counter() - started
        print(
            f"  {'CSV download (streamed)':32} {elapsed * 1000:8.1f} ms   "
            f"{size / 1e6:.1f} MB, {lines - 1:,} rows; peak RSS {before:.0f} -> "
            f"{peak_rss_mb():.0f} MB"
        )
    finally:
        drop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
