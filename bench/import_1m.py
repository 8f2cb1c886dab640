"""Import a generated CSV of N subscribers (default 1,000,000) into a fresh database.

The file has three attribute columns besides email,name,language,organization,
about 1% bad rows (invalid addresses, unknown languages, wrong field counts)
and about 0.5% duplicates. It is imported through the code path the Celery
worker runs (`import_jobs.run_job`: checking pass, chunked writes, a commit
per chunk with progress), in this process, into a fresh SQLite file or a fresh
PostgreSQL database (migrations applied first). Prints the elapsed time, rows
per second, the job's counts, and the peak RSS sampled every 20 ms during the
import, against the RSS before it: run with --rows 250000 too and compare.

    .venv/bin/python bench/import_1m.py --stack sqlite
    .venv/bin/python bench/import_1m.py --stack postgres --rows 250000
    .venv/bin/python bench/import_1m.py --stack sqlite --profile   # cProfile, top 25
    .venv/bin/python bench/import_1m.py --stack postgres --private-pg  # tuned server

With --private-pg the import runs on a private PostgreSQL cluster tuned for bulk
loads (bench/pg_cluster.py) instead of the machine's shared server with
Debian's defaults (BENCH_PG_URL).
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG_ADMIN = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PAGE = os.sysconf("SC_PAGE_SIZE")

DOMAINS = [f"member{i}.example.org" for i in range(150)] + [
    "example.org",
    "un.example.org",
    "migrants.example.net",
    "réseau.example.org",
]
LANGUAGES = ["en", "fr", "es", "ar", "ru", "zh", "pt-br"]
COUNTRIES = ["Perú", "Mali", "Jordan", "Nepal", "Mexico", "Kenya", "Senegal", "Philippines"]


def generate(path: Path, rows: int, seed: int = 7) -> dict[str, Any]:
    """Write the CSV row by row; return how many bad and duplicate rows it holds, and
    1,000 of its addresses to put on the suppression list first (as a real one would be)."""
    rng = random.Random(seed)
    bad = duplicates = 0
    to_suppress: list[str] = []
    step = max(rows // 1000, 2)
    recent: list[str] = []
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("email,name,language,organization,country,member_since,sector\n")
        for i in range(rows):
            roll = rng.random()
            if roll < 0.004:
                bad += 1
                out.write(f"person{i}.example.org,No At {i},en,Org,Mali,2020,health\n")
                continue
            if roll < 0.007:
                bad += 1
                out.write(f"person{i}@member1.example.org,Bad Lang,english,Org,Mali,2020,\n")
                continue
            if roll < 0.010:
                bad += 1
                out.write(f"person{i}@member2.example.org,Short row\n")
                continue
            if roll < 0.015 and recent:
                duplicates += 1
                out.write(f"{rng.choice(recent).upper()},Again,fr,,,,\n")
                continue
            email = f"Person.{i}@{rng.choice(DOMAINS)}"
            if i % step == step // 2 and len(to_suppress) < 1000:
                to_suppress.append(email.lower())
            if len(recent) < 1000:
                recent.append(email)
            else:
                recent[rng.randrange(1000)] = email
            out.write(
                f'{email},"Person {i}, Jr.",{rng.choice(LANGUAGES)},Organisation {i % 997},'
                f"{rng.choice(COUNTRIES)},{2000 + i % 25},{'health' if i % 3 else ''}\n"
            )
    return {"bad": bad, "duplicates": duplicates, "suppress": to_suppress}


class RssSampler(threading.Thread):
    """Resident set size of this process, sampled from /proc every 20 ms."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = self.current()
        self.running = True

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * PAGE

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.current())
            time.sleep(0.02)

    def stop(self) -> int:
        self.running = False
        self.join()
        return self.peak


def server_cpu() -> float | None:
    """CPU seconds used so far by the local PostgreSQL server's processes (all of them:
    the backend, the WAL writer, the checkpointer, autovacuum), or None if /proc does
    not show them (a remote server, or not allowed to read them)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    seen = False
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() not in ("postgres", "postmaster"):
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seen = True
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick if seen else None


def mb(size: int) -> str:
    return f"{size / 1024 / 1024:.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stack", choices=["sqlite", "postgres", "pg"], default="sqlite", help="pg = postgres"
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--profile", action="store_true", help="cProfile the import")
    parser.add_argument(
        "--writers",
        type=int,
        default=2,
        help="writer connections on PostgreSQL (IMPORT_WRITERS; default 2, as the worker)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and files")
    parser.add_argument(
        "--private-pg",
        action="store_true",
        help="a private PostgreSQL cluster tuned for bulk loads (bench/pg_cluster.py)",
    )
    options = parser.parse_args()
    if options.stack == "pg":
        options.stack = "postgres"
    if options.private_pg:
        from pg_cluster import TUNED_SETTINGS, private_cluster

        global PG_ADMIN
        with private_cluster() as url:
            PG_ADMIN = url
            print(
                "private PostgreSQL cluster:",
                ", ".join(f"{k}={v}" for k, v in TUNED_SETTINGS.items()),
            )
            bench(options)
        return
    bench(options)


def bench(options: argparse.Namespace) -> None:

    workdir = Path(tempfile.mkdtemp(prefix="circulars-bench-import-"))
    env = {
        "INSTANCE_PATH": str(workdir / "instance"),
        "SECRET_KEY": secrets.token_urlsafe(32),
        "LOG_LEVEL": "WARNING",
        "SMTP_URL": "smtp://127.0.0.1:2525",
    }
    database = None
    if options.stack == "postgres":
        import psycopg

        database = f"circulars_bench_{secrets.token_hex(4)}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        env["DATABASE_URL"] = f"{PG_ADMIN.rsplit('/', 1)[0]}/{database}"
    else:
        env["DATABASE_URL"] = f"sqlite:///{workdir / 'instance' / 'circulars.db'}"

    try:
        csv_path = workdir / "people.csv"
        started = time.monotonic()
        made = generate(csv_path, options.rows)
        print(
            f"generated {options.rows:,} rows ({mb(csv_path.stat().st_size)}, "
            f"{made['bad']:,} bad, {made['duplicates']:,} duplicates) "
            f"in {time.monotonic() - started:.1f} s"
        )
        subprocess.run(
            [sys.executable, "-m", "circulars.cli", "db", "upgrade"],
            env={**os.environ, **env},
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        run(options, env, csv_path, made)
    finally:
        if options.keep:
            print(f"kept: {workdir} {env['DATABASE_URL']}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        if database and not options.keep:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def run(
    options: argparse.Namespace, env: dict[str, str], csv_path: Path, made: dict[str, Any]
) -> None:
    from circulars import create_app
    from circulars.extensions import db
    from circulars.models import ImportJob, MailingList
    from circulars.subscribers.import_jobs import create_job, run_job
    from circulars.subscribers.suppression import suppress

    app = create_app(env)
    with app.app_context():
        session = db.session
        members = MailingList(slug="members", name="Members")
        session.add(members)
        for email in made["suppress"]:
            suppress(session, email=email, reason="hard_bounce")
        suppress(session, domain="closed.example.net", reason="blocked")
        session.commit()
        job = create_job(
            session,
            list_id=members.id,
            filename=csv_path.name,
            stored_path=csv_path,
            size=csv_path.stat().st_size,
        )
        session.commit()
        job_id = job.id
        session.expire_all()

        before = RssSampler.current()
        sampler = RssSampler()
        sampler.start()
        profiler = None
        if options.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        cpu_before, server_before = os.times(), server_cpu()
        started = time.monotonic()
        outcome = run_job(session, job_id, Path(env["INSTANCE_PATH"]), writers=options.writers)
        elapsed = time.monotonic() - started
        cpu_after, server_after = os.times(), server_cpu()
        if profiler is not None:
            import pstats

            profiler.disable()
        peak = sampler.stop()

        session.expire_all()
        job = session.get(ImportJob, job_id)
        assert outcome is not None and job is not None
        writers = options.writers if options.stack == "postgres" else 1
        print(f"stack: {options.stack} ({session.get_bind().dialect.name}), writers: {writers}")
        print(f"status: {job.status} {job.error or ''}")
        print(f"elapsed: {elapsed:.1f} s ({options.rows / elapsed:,.0f} rows/s)")
        print(
            f"rows {job.rows:,}; new subscribers {job.imported:,}; added to the list "
            f"{job.subscribed:,}; rejected {job.rejected:,} (generated: {made['bad']:,} bad + "
            f"{made['duplicates']:,} duplicates); suppressed {job.suppressed:,} (of "
            f"{len(made['suppress']):,} on the suppression list)"
        )
        print(
            f"RSS before the import {mb(before)}, peak during it {mb(peak)} (+{mb(peak - before)})"
        )
        python_cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
        line = f"CPU: this process {python_cpu:.1f} s"
        if options.stack == "postgres" and server_before is not None and server_after is not None:
            line += f", PostgreSQL's processes {server_after - server_before:.1f} s"
        print(f"{line} (of {elapsed:.1f} s elapsed on {os.cpu_count()} cores)")
        if profiler is not None:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
