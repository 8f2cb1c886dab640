"""What the crash-safety tests put together: a relay that can be slow or drop connections, a
private Redis and a private PostgreSQL cluster a test may kill and restart, Celery beat (the
sweeper), and a send queued through the CLI in a process of its own.

The servers are private because restarting the machine's shared Redis or PostgreSQL would
break every other test run on it. The send is set up in a subprocess because the app binds
one global database: the test process keeps its own app (if any) untouched and reads the
outcome through an engine of its own.

Run as a script (`python tests/fault_stack.py setup N`), it is that set-up: migrations, a
list, N subscribers, a circular, and `circulars send`; it prints the send's id. With
`digest-setup N` it sets up a weekly digest due now instead (see `_digest_setup`).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SUBJECT = "Circular No. 1: Contingency plan for the regional meeting"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(what: str, check: Callable[[], Any], timeout: float, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# --- the relay ----------------------------------------------------------------------------


class FaultyRelay:
    """An aiosmtpd handler that counts what it takes, per recipient.

    `delay` slows every DATA (so a fault lands mid-send). With `drop_every`, the
    connection is cut after every Nth message the relay took:
    - "before-reply": the message is taken (queued) but the connection is aborted before
      the 250 goes out, so the sender cannot know; it tries again and the recipient gets
      it twice. This is the case that makes duplicates.
    - "after-reply": the 250 goes out, and the connection is aborted when the sender
      starts the next message, which therefore was not taken.
    """

    def __init__(self, delay: float = 0.0, drop_every: int = 0, drop: str = "before-reply"):
        assert drop in ("before-reply", "after-reply")
        self.delay = delay
        self.drop_every = drop_every
        self.drop = drop
        self.lock = threading.Lock()
        self.received: Counter[str] = Counter()
        self.subjects: Counter[str] = Counter()
        self.pairs: Counter[tuple[str, str]] = Counter()  # (recipient, subject)
        self.taken = 0
        self.drops = 0
        self._headers = BytesHeaderParser(policy=policy.default)

    @property
    def total(self) -> int:
        with self.lock:
            return self.taken

    def counts(self) -> Counter[str]:
        with self.lock:
            return Counter(self.received)

    def subjects_by_recipient(self) -> dict[str, Counter[str]]:
        with self.lock:
            found: dict[str, Counter[str]] = {}
            for (recipient, subject), count in self.pairs.items():
                found.setdefault(recipient, Counter())[subject] += count
            return found

    def _abort(self, server: Any) -> None:
        with self.lock:
            self.drops += 1
        server.transport.abort()

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
        if getattr(session, "drop_next", False):
            session.drop_next = False
            self._abort(server)
            return "421 4.4.2 Connection dropped"  # never arrives: the socket is gone
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.delay:
            await asyncio.sleep(self.delay)
        subject = str(self._headers.parsebytes(envelope.original_content)["Subject"])
        with self.lock:
            self.received.update(envelope.rcpt_tos)
            self.subjects[subject] += 1
            self.pairs.update((rcpt, subject) for rcpt in envelope.rcpt_tos)
            self.taken += 1
            number = self.taken
        if self.drop_every and number % self.drop_every == 0:
            if self.drop == "before-reply":
                self._abort(server)
            else:
                session.drop_next = True
        return "250 2.0.0 Queued"


class RelayServer:
    def __init__(self, handler: FaultyRelay) -> None:
        from aiosmtpd.controller import Controller

        self.handler = handler
        self.port = _free_port()
        self.controller = Controller(handler, hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


# --- private servers ----------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of our own on a free port, keeping nothing on disk (as in CI)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--logfile",
                str(self.workdir / "redis.log"),
            ],
            start_new_session=True,
        )
        wait_until("Redis to answer", self._ping, timeout=20)

    def _ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """As a crash or an OOM kill: SIGKILL, and everything in memory is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        self.kill()


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb + pg_ctl) on a free port, in a temp dir.

    initdb refuses to run as root, so as root the cluster belongs to the `postgres` user.
    """

    def __init__(self) -> None:
        self.port = _free_port()
        self.bindir = self.find_bindir()
        self.workdir = Path(tempfile.mkdtemp(prefix="circulars-pg-"))
        self.data = self.workdir / "data"
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.workdir, "postgres", "postgres")

    @staticmethod
    def find_bindir() -> Path | None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        return Path(found[-1]).parent if found else None

    @classmethod
    def available(cls) -> bool:
        if cls.find_bindir() is None:
            return False
        if os.geteuid() != 0:
            return True
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False
        return shutil.which("runuser") is not None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        assert self.bindir is not None
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        # Output to a file, not a pipe: a server started by pg_ctl would keep a pipe open.
        output = self.workdir / "pg_ctl.out"
        with output.open("ab") as sink:
            result = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, timeout=120)
        if result.returncode != 0:
            log = self.workdir / "postgres.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            said = output.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(args)} failed:\n{said}{tail}")

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync", "--locale", "C")  # fmt: skip
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.workdir} "
            "-c fsync=off -c full_page_writes=off -c max_connections=100"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.workdir / "postgres.log"),
                  "-o", options, "-w", "-t", "60", "start")  # fmt: skip

    def restart(self, mode: str) -> None:
        """`fast`: clients are disconnected, a clean shut-down; `immediate`: as a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.workdir / "postgres.log"),
                  "-m", mode, "-w", "-t", "60", "restart")  # fmt: skip

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.workdir, ignore_errors=True)


# --- processes ----------------------------------------------------------------------------


class BeatProcess:
    """`celery -A worker beat`: the sweeper's clock, as a separate process in production."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        schedule = Path(self.env["INSTANCE_PATH"]) / "celerybeat-schedule"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "worker",
                    "beat",
                    "--loglevel",
                    "INFO",
                    "--schedule",
                    str(schedule),
                ],  # fmt: skip
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def queue_send(env: dict[str, str], recipients: int, log_path: Path) -> int:
    """Run the set-up below in a process of its own; the id of the queued send."""
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "setup", str(recipients)],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    log_path.write_text(result.stdout + result.stderr)
    match = re.search(r"^send-id (\d+)$", result.stdout, re.MULTILINE)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"set-up failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return int(match.group(1))


def addresses(recipients: int) -> list[str]:
    return [f"reader{i:05d}@example.org" for i in range(recipients)]


def _setup(recipients: int) -> None:
    """Everything through the `circulars` commands a secretariat would type."""
    from click.testing import CliRunner

    from circulars.cli import main

    instance = Path(os.environ["INSTANCE_PATH"])
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(main, list(args), catch_exceptions=False)
        if result.exit_code != 0:
            raise SystemExit(f"circulars {' '.join(args)}: {result.exit_code}\n{result.output}")
        return str(result.output)

    run("db", "upgrade")
    run("lists", "create", "members", "--name", "Member organisations")
    people = instance / "people.csv"
    people.write_text(
        "email,name\n"
        + "".join(f"{email},Reader {email[6:11]}\n" for email in addresses(recipients)),
        encoding="utf-8",
    )
    output = run("subscribers", "import", str(people), "--list", "members")
    if f"{recipients} subscribed" not in output:
        raise SystemExit(f"import: {output}")
    body = instance / "body.md"
    body.write_text(
        "Dear colleagues,\n\nThe meeting moves to **Amman** if the border stays closed.\n",
        encoding="utf-8",
    )
    title = SUBJECT.split(": ", 1)[1]
    circular_id = run(
        "circulars", "create", "--title", title, "--body", str(body), "--list", "members"
    ).strip()
    output = run("send", circular_id)
    match = re.search(r"Send (\d+) started", output)
    if match is None:
        raise SystemExit(f"send: {output}")
    print(f"send-id {match.group(1)}", flush=True)


# --- a digest due now ----------------------------------------------------------------------

DIGEST_LIST = "Partner organisations"
DIGEST_TITLES = (
    "Global Compact: last round of negotiations",
    "Regional consultation in Nairobi",
    "Annual report of the network",
)


def digest_circular_counts(recipients: int) -> dict[str, int]:
    """How many circulars each reader's digest holds: the last third joined after the first."""
    late = recipients * 2 // 3
    return {email: 3 if index < late else 2 for index, email in enumerate(addresses(recipients))}


def queue_digest_setup(env: dict[str, str], recipients: int, log_path: Path) -> datetime:
    """Run `_digest_setup` in a process of its own; the period_end of the digest due now."""
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "digest-setup", str(recipients)],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    log_path.write_text(result.stdout + result.stderr)
    match = re.search(r"^digest-due (\S+)$", result.stdout, re.MULTILINE)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"set-up failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return datetime.fromisoformat(match.group(1))


def _digest_setup(recipients: int) -> None:
    """A list whose weekly digest is due this hour (TIMEZONE=UTC), N weekly readers (a quarter
    in French), and three circulars sent to it in the last two hours, the first before the
    last third of the readers joined. Nothing is queued: the test starts the digest.

    The readers' and sends' times are in the past, so they are dated here in the database,
    as the digest tests date them to their simulated clock."""
    from datetime import UTC, timedelta

    from click.testing import CliRunner
    from sqlalchemy import select, update

    from circulars import create_app
    from circulars.cli import main
    from circulars.extensions import db
    from circulars.models import Circular, MailingList, Send, SendStatus, Subscriber, Subscription
    from circulars.sending import engine
    from circulars.sending.service import create_send

    instance = Path(os.environ["INSTANCE_PATH"])
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(main, list(args), catch_exceptions=False)
        if result.exit_code != 0:
            raise SystemExit(f"circulars {' '.join(args)}: {result.exit_code}\n{result.output}")
        return str(result.output)

    run("db", "upgrade")
    run("lists", "create", "partners", "--name", DIGEST_LIST)
    people = instance / "people.csv"
    people.write_text(
        "email,name,language\n"
        + "".join(
            f"{email},Reader {email[6:11]},{'fr' if index % 4 == 3 else 'en'}\n"
            for index, email in enumerate(addresses(recipients))
        ),
        encoding="utf-8",
    )
    output = run("subscribers", "import", str(people), "--list", "partners")
    if f"{recipients} subscribed" not in output:
        raise SystemExit(f"import: {output}")
    circular_ids = []
    for title in DIGEST_TITLES:
        body = instance / "body.md"
        body.write_text(f"News of the network: {title}.\n\nDetails follow.\n", encoding="utf-8")
        created = run("circulars", "create", "--title", title, "--body", str(body), "--list",
                      "partners").strip()  # fmt: skip
        circular_ids.append(int(created))

    app = create_app()
    with app.app_context():
        session = db.session
        ctx = app.extensions["circulars.send_context"]
        due = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        partners = session.scalar(select(MailingList).where(MailingList.slug == "partners"))
        assert partners is not None
        partners.digest_weekday, partners.digest_weekly_hour = due.weekday(), due.hour
        late_from = addresses(recipients)[recipients * 2 // 3]
        for joined, which in (
            (due - timedelta(hours=3), Subscriber.email < late_from),
            (due - timedelta(minutes=90), Subscriber.email >= late_from),
        ):
            session.execute(
                update(Subscription)
                .where(
                    Subscription.list_id == partners.id,
                    Subscription.subscriber_id.in_(select(Subscriber.id).where(which)),
                )
                .values(
                    delivery="weekly", confirmed_at=joined, created_at=joined, digest_since=joined
                )
            )
        session.commit()
        for circular_id, ago in zip(circular_ids, (120, 60, 30), strict=True):
            send = create_send(session, circular_id, [partners.id])
            session.commit()
            if engine.start_send(session, send.id, ctx):
                raise SystemExit("the circular had readers of every circular; expected none")
            sent_at = due - timedelta(minutes=ago)
            session.execute(update(Send).where(Send.id == send.id).values(started_at=sent_at))
            session.execute(
                update(Circular).where(Circular.id == circular_id).values(first_sent_at=sent_at)
            )
            session.commit()
            status = session.scalar(select(Send.status).where(Send.id == send.id))
            if status != SendStatus.DONE:
                raise SystemExit(f"send {send.id} is {status}, not done")
    print(f"digest-due {due.isoformat()}", flush=True)


class TaskClient:
    """Queues a task by name on the stack's broker, as beat does (no app, no result)."""

    def __init__(self, env: dict[str, str]) -> None:
        from celery import Celery

        from circulars.broker import celery_broker_options

        self.celery = Celery("fault-stack-client", set_as_current=False)
        self.celery.config_from_object(
            {**celery_broker_options(env["CELERY_BROKER_URL"]), "task_ignore_result": True}
        )

    def send(self, name: str, *args: Any) -> None:
        self.celery.send_task(name, args=args)

    def close(self) -> None:
        self.celery.close()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("setup", "digest-setup"):
        raise SystemExit("usage: fault_stack.py setup|digest-setup RECIPIENTS")
    if sys.argv[1] == "setup":
        _setup(int(sys.argv[2]))
    else:
        _digest_setup(int(sys.argv[2]))
