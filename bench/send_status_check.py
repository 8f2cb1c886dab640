"""What a batch pays to notice a pause: the send's status read by primary key.

A batch reads `SELECT status, relay_errors FROM sends WHERE id = ?` (and commits)
at most every CHECK_INTERVAL seconds (circulars/sending/control.py). This times
that read on SQLite and PostgreSQL, and shows its share of a worker's time at
that interval against reading it before every message.

    .venv/bin/python bench/send_status_check.py [--reads 5000]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from circulars.models import Base, Circular, Send  # noqa: E402
from circulars.sending.control import CHECK_INTERVAL  # noqa: E402


def time_reads(url: str, reads: int) -> list[float]:
    """Seconds per read, in five rounds of `reads // 5`."""
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        circular = Circular(title="Bench", body_markdown="x")
        session.add(circular)
        session.flush()
        send = Send(circular_id=circular.id, status="running")
        session.add(send)
        session.commit()
        query = select(Send.status, Send.relay_errors).where(Send.id == send.id)
        for _ in range(200):  # warm the pool and the statement cache
            session.execute(query).one()
            session.commit()
        rounds = []
        per_round = max(1, reads // 5)
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(per_round):
                session.execute(query).one()
                session.commit()
            rounds.append((time.perf_counter() - started) / per_round)
    engine.dispose()
    return rounds


def report(label: str, rounds: list[float], rate: float) -> None:
    median = statistics.median(rounds)
    print(
        f"{label:<11} {median * 1e6:7.0f} µs per read (rounds {min(rounds) * 1e6:.0f}–"
        f"{max(rounds) * 1e6:.0f}); every {CHECK_INTERVAL} s: {median / CHECK_INTERVAL:.3%} "
        f"of a worker's time; before every message at {rate:.0f} msg/s: {median * rate:.1%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument(
        "--rate", type=float, default=400, help="messages per second of one worker process"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        report("SQLite", time_reads(f"sqlite:///{folder}/bench.db", args.reads), args.rate)

    import psycopg

    admin = args.postgres.replace("postgresql+psycopg://", "postgresql://")
    name = f"circulars_bench_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL skipped: {exc}")
        return
    try:
        url = f"{args.postgres.rsplit('/', 1)[0]}/{name}"
        report("PostgreSQL", time_reads(url, args.reads), args.rate)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
