"""Time `circulars send --wait` of a circular with a 200 KB attachment to N subscribers.

Runs the real thing: migrations, a CSV import, a Celery worker process with two
child processes, and an aiosmtpd sink on loopback that counts what arrives.
Prints the time from "send" to the end of `--wait`, and checks that every
subscriber got exactly one message.

    .venv/bin/python bench/send_1000.py --stack sqlite
    .venv/bin/python bench/send_1000.py --stack postgres   # local PostgreSQL + Redis
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parent.parent
CIRCULARS = [sys.executable, "-m", "circulars.cli"]


class Sink:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.recipients: Counter[str] = Counter()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        with self.lock:
            self.recipients.update(envelope.rcpt_tos)
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        CIRCULARS + args, env=env, cwd=ROOT, text=True, capture_output=True, **kwargs
    )
    if result.returncode not in (0,):
        print(result.stdout, result.stderr, file=sys.stderr)
        raise SystemExit(f"circulars {' '.join(args)} failed with {result.returncode}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--attachment-kb", type=int, default=200)
    options = parser.parse_args()

    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    workdir = Path(tempfile.mkdtemp(prefix="circulars-bench-"))
    env = {
        **os.environ,
        "INSTANCE_PATH": str(workdir),
        "SMTP_URL": f"smtp://127.0.0.1:{port}",
        "SECRET_KEY": secrets.token_urlsafe(32),
        "MAIL_FROM": "secretariat@example.org",
        "LOG_LEVEL": "WARNING",
    }
    database = None
    if options.stack == "postgres":
        import psycopg
        import redis

        database = f"circulars_bench_{secrets.token_hex(4)}"
        with psycopg.connect(
            "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        redis.Redis.from_url("redis://127.0.0.1:6379/8").flushdb()
        env["DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
        env["CELERY_BROKER_URL"] = "redis://127.0.0.1:6379/8"

    worker = None
    try:
        run(["db", "upgrade"], env)
        run(["lists", "create", "members", "--name", "Members"], env)
        people = workdir / "people.csv"
        people.write_text(
            "email,name\n"
            + "".join(f"p{i}@example.org,Person {i}\n" for i in range(options.recipients)),
            encoding="utf-8",
        )
        run(["subscribers", "import", str(people), "--list", "members"], env)
        body = workdir / "body.md"
        body.write_text("Colleagues,\n\nThe statement is attached.\n" * 20, encoding="utf-8")
        attachment = workdir / "statement.pdf"
        attachment.write_bytes(os.urandom(options.attachment_kb * 1024))
        created = run(
            [
                "circulars",
                "create",
                "--title",
                "Benchmark",
                "--body",
                str(body),
                "--attach",
                str(attachment),
                "--list",
                "members",
            ],
            env,
        )
        circular_id = created.stdout.strip()

        log = (workdir / "worker.log").open("wb")
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "worker",
                "--concurrency",
                "2",
                "--loglevel",
                "WARNING",
            ],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        time.sleep(6)  # let the worker connect before the clock starts

        started = time.monotonic()
        result = subprocess.run(
            CIRCULARS + ["send", circular_id, "--wait"],
            env=env,
            cwd=ROOT,
            text=True,
            capture_output=True,
        )
        elapsed = time.monotonic() - started
        time.sleep(0.5)
        counts = sink.recipients
        once = sum(1 for value in counts.values() if value == 1)
        print(f"stack: {options.stack}")
        print(f"recipients: {options.recipients}, attachment: {options.attachment_kb} KB")
        print(
            f"send --wait exit status: {result.returncode};",
            result.stdout.strip().splitlines()[-1],
        )
        print(f"elapsed: {elapsed:.2f} s ({options.recipients / elapsed:.0f} messages/s)")
        print(
            f"arrived: {sum(counts.values())} messages to {len(counts)} addresses;",
            f"exactly once: {once}",
        )
        if once != options.recipients or len(counts) != options.recipients:
            raise SystemExit("some subscriber did not get exactly one message")
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
        controller.stop()
        if database:
            import psycopg

            with psycopg.connect(
                "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True
            ) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":
    main()
