"""Crash safety, done for real: a worker SIGKILLed mid-send, the broker (Redis) and the
database (PostgreSQL) restarted mid-send, and a relay that cuts the connection after every
100th message. Afterwards every recipient has the circular, the send is done with nothing
pending, and the duplicates are at most the messages in flight on what was cut. The same
for a weekly digest whose worker is SIGKILLed half-way.

Each test builds its own stack (a private Redis, a fresh PostgreSQL database or a private
cluster, or SQLite files), its own relay, worker and beat, with short recovery settings:
SEND_CLAIM_LEASE_SECONDS, SEND_STALL_SECONDS and SEND_SWEEP_INTERVAL. Run with `-s` to see
the duplicate counts; they are also in each assertion message.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fault_stack import (
    SUBJECT,
    BeatProcess,
    FaultyRelay,
    PrivatePostgres,
    PrivateRedis,
    RelayServer,
    TaskClient,
    addresses,
    digest_circular_counts,
    queue_digest_setup,
    queue_send,
    wait_until,
)

from circulars.tasks import DIGEST_TICK

from conftest import (
    PG_ADMIN_URL,
    WorkerProcess,
    _pg_admin_dsn,
    _postgres_available,
    service_missing,
)

pytestmark = pytest.mark.integration

CONCURRENCY = 2  # child processes, so SMTP connections, per worker
LEASE_SECONDS = 15  # far longer than a batch of 100 takes, so no live batch loses its rows


@dataclass
class FaultStack:
    """One throwaway installation: its settings, servers and processes, torn down at the end."""

    backend: str
    workdir: Path
    relay: FaultyRelay
    env: dict[str, str] = field(default_factory=dict)
    redis: PrivateRedis | None = None
    postgres: PrivatePostgres | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    beat: BeatProcess | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    fault_at: float | None = None  # time.monotonic() of the (first) fault
    done_at: float | None = None
    _engine: Any = None

    def fault(self) -> None:
        if self.fault_at is None:
            self.fault_at = time.monotonic()

    def start_worker(self, name: str) -> WorkerProcess:
        worker = WorkerProcess(self.env, self.workdir / f"worker-{name}.log", CONCURRENCY)
        self.workers.append(worker)
        worker.start()
        return worker

    def start_beat(self) -> None:
        self.beat = BeatProcess(self.env, self.workdir / "beat.log")
        self.beat.start()

    def queue_send(self, recipients: int) -> int:
        return queue_send(self.env, recipients, self.workdir / "setup.log")

    def engine(self) -> Any:
        """An engine of the test's own on the stack's database (not the app's)."""
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        from circulars.config import parse_database_url

        if self._engine is None:
            self._engine = create_engine(
                parse_database_url(self.env["DATABASE_URL"]), poolclass=NullPool
            )
        return self._engine

    def state(self, send_id: int) -> dict[str, Any] | None:
        """The send's status and delivery counts, or None while the database is away."""
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError

        try:
            with self.engine().connect() as conn:
                status = conn.execute(
                    text("SELECT status FROM sends WHERE id = :id"), {"id": send_id}
                ).scalar_one()
                counts = dict(
                    conn.execute(
                        text(
                            "SELECT status, count(*) FROM deliveries WHERE send_id = :id "
                            "GROUP BY status"
                        ),
                        {"id": send_id},
                    ).all()
                )
        except DBAPIError:
            return None
        return {"status": status, **counts}

    def wait_done(self, send_id: int, timeout: float) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def finished() -> bool:
            state = self.state(send_id)
            if state is not None:
                last.clear()
                last.update(state)
            over = bool(state and state["status"] not in ("queued", "running"))
            if over:
                self.done_at = time.monotonic()
            return over

        try:
            wait_until("the send to finish", finished, timeout, every=0.5)
        except AssertionError as exc:
            logs = "\n".join(
                f"--- {w.log_path.name}\n{w.log_path.read_text(errors='replace')[-3000:]}"
                for w in self.workers
            )
            raise AssertionError(
                f"{exc}; last state {last}, relay took {self.relay.total}\n{logs}"
            ) from None
        return last

    def close(self) -> None:
        for worker in self.workers:
            worker.stop(signal.SIGKILL)
        if self.beat is not None:
            self.beat.stop()
        if self._engine is not None:
            self._engine.dispose()
        for cleanup in reversed(self.cleanups):
            cleanup()


@pytest.fixture
def build_stack(tmp_path: Path) -> Iterator[Callable[..., FaultStack]]:
    """build_stack(backend, relay=FaultyRelay(...), private_postgres=False) -> FaultStack."""
    stacks: list[FaultStack] = []

    def build(
        backend: str, relay: FaultyRelay, private_postgres: bool = False, relay_limits: str = ""
    ) -> FaultStack:
        if backend == "postgres":
            if not PrivateRedis.available():
                service_missing("redis-server (Debian package redis-server)")
            if private_postgres and not PrivatePostgres.available():
                service_missing("PostgreSQL's initdb and pg_ctl (Debian package postgresql)")
            if not private_postgres and not _postgres_available():
                service_missing(f"PostgreSQL at {PG_ADMIN_URL}")
        instance = tmp_path / "instance"
        instance.mkdir()
        stack = FaultStack(backend, tmp_path, relay)
        stacks.append(stack)
        server = RelayServer(relay)
        server.start()
        stack.cleanups.append(server.stop)
        stack.env = {
            "INSTANCE_PATH": str(instance),
            "SECRET_KEY": secrets.token_urlsafe(32),
            "SMTP_URL": server.url + relay_limits,
            "BASE_URL": "http://circulars.test",
            "MAIL_FROM": "secretariat@circulars.test",
            "ORG_NAME": "Migrant Rights Network",
            "SEND_BATCH_SIZE": "100",
            "SEND_RETRY_DELAY": "1",
            "SEND_CLAIM_LEASE_SECONDS": str(LEASE_SECONDS),
            "SEND_STALL_SECONDS": "4",
            "SEND_SWEEP_INTERVAL": "2",
            "SMTP_TIMEOUT": "10",
            "RATELIMIT_ENABLED": "false",
            "LOG_LEVEL": "INFO",
        }
        if backend == "sqlite":
            stack.env["DATABASE_URL"] = f"sqlite:///{instance / 'circulars.db'}"
            stack.env["CELERY_BROKER_URL"] = f"sqla+sqlite:///{instance / 'broker.db'}"
            return stack
        stack.redis = PrivateRedis(tmp_path / "redis")
        stack.redis.start()
        stack.cleanups.append(stack.redis.stop)
        stack.env["CELERY_BROKER_URL"] = stack.redis.url
        if private_postgres:
            stack.postgres = PrivatePostgres()
            stack.cleanups.append(stack.postgres.stop)
            stack.postgres.start()
            stack.env["DATABASE_URL"] = stack.postgres.url
        else:
            import psycopg

            name = f"circulars_crash_{secrets.token_hex(4)}"
            with psycopg.connect(_pg_admin_dsn(), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')

            def drop() -> None:
                with psycopg.connect(_pg_admin_dsn(), autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

            stack.cleanups.append(drop)
            stack.env["DATABASE_URL"] = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
        return stack

    yield build
    for stack in stacks:
        stack.close()


def check_everyone_got_it(
    stack: FaultStack, send_id: int, recipients: int, bound: int | None, what: str
) -> int:
    """The send is done with every delivery sent; every address received the circular; the
    number of duplicates (printed and returned) is at most `bound`."""
    state = stack.wait_done(send_id, timeout=180)
    assert state["status"] == "done", state
    assert state.get("sent") == recipients and set(state) == {"status", "sent"}, state
    received = stack.relay.counts()
    expected = set(addresses(recipients))
    missing = expected - set(received)
    assert not missing, f"{len(missing)} recipients never received it, e.g. {sorted(missing)[:5]}"
    assert set(received) == expected, set(received) - expected
    assert dict(stack.relay.subjects) == {SUBJECT: stack.relay.total}
    duplicates = sum(count - 1 for count in received.values())
    report = (
        f"{what} [{stack.backend}]: {recipients} recipients all reached, {stack.relay.total} "
        f"messages taken by the relay, {duplicates} duplicates"
        + ("" if bound is None else f" (allowed: {bound})")
    )
    if stack.fault_at is not None and stack.done_at is not None:
        report += f"; done {stack.done_at - stack.fault_at:.0f} s after the fault"
    print(f"\n{report}")
    assert bound is None or duplicates <= bound, report
    return duplicates


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_worker_sigkilled_mid_send_then_a_new_worker_finishes(build_stack, backend):
    recipients = 5000
    stack = build_stack(backend, FaultyRelay())
    send_id = stack.queue_send(recipients)
    stack.start_beat()
    first = stack.start_worker("killed")
    wait_until("a third of the send", lambda: stack.relay.total >= recipients // 3, timeout=120)
    first.stop(signal.SIGKILL)
    stack.fault()
    killed_at = stack.relay.total
    assert killed_at < recipients
    state = stack.state(send_id)
    assert state is not None and state["status"] == "running", state
    assert first.process is not None and first.process.poll() is not None

    started = time.monotonic()
    stack.start_worker("second")
    # Every connection of the killed worker can have had one message taken but not recorded.
    check_everyone_got_it(
        stack, send_id, recipients, bound=CONCURRENCY, what=f"SIGKILL at {killed_at} taken"
    )
    # Well within the lease plus a few sweeps, not the 10-minute production lease.
    assert time.monotonic() - started < 120


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_one_worker_process_killed_mid_send(build_stack, backend):
    """As the kernel's OOM killer does: one pool process dies, the worker lives on."""
    recipients = 5000
    stack = build_stack(backend, FaultyRelay())
    send_id = stack.queue_send(recipients)
    stack.start_beat()
    worker = stack.start_worker("one")
    wait_until("a third of the send", lambda: stack.relay.total >= recipients // 3, timeout=120)
    assert worker.process is not None
    children = pool_processes(worker.process.pid)
    assert len(children) == CONCURRENCY, children
    os.kill(children[0], signal.SIGKILL)
    stack.fault()
    killed_at = stack.relay.total
    # One connection was cut: at most its one message in flight arrives twice.
    check_everyone_got_it(
        stack, send_id, recipients, bound=1, what=f"one pool process SIGKILLed at {killed_at} taken"
    )
    assert worker.process.poll() is None


def pool_processes(pid: int) -> list[int]:
    listed = subprocess.run(
        ["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True, text=True, check=False
    )
    return [int(item) for item in listed.stdout.split()]


# With limits on the relay, the workers share their counters and connection slots in the
# same Redis (RELAY_STATE_URL defaults to the broker's), so they lose those too.
@pytest.mark.parametrize("relay_limits", ["", "?per_second=5000&max_connections=4"])
def test_redis_restarted_mid_send(build_stack, relay_limits):
    recipients = 5000
    stack = build_stack("postgres", FaultyRelay(), relay_limits=relay_limits)
    assert stack.redis is not None
    send_id = stack.queue_send(recipients)
    stack.start_beat()
    stack.start_worker("one")
    wait_until("a third of the send", lambda: stack.relay.total >= recipients // 3, timeout=120)
    # Crash it: the queued batch tasks are gone (no persistence); the sweeper puts them back.
    stack.redis.kill()
    stack.fault()
    down_at = stack.relay.total
    time.sleep(2)
    stack.redis.start()
    # No SMTP connection was cut, so nothing may arrive twice.
    check_everyone_got_it(
        stack,
        send_id,
        recipients,
        bound=0,
        what=f"Redis killed at {down_at} taken, restarted, relay limits {relay_limits or 'none'}",
    )
    assert all(w.process is not None and w.process.poll() is None for w in stack.workers)


def test_postgres_restarted_mid_send(build_stack):
    recipients = 5000
    stack = build_stack("postgres", FaultyRelay(), private_postgres=True)
    assert stack.postgres is not None
    send_id = stack.queue_send(recipients)
    stack.start_beat()
    stack.start_worker("one")
    moments = []
    for mode, share in (("fast", 3), ("immediate", 2)):
        wait_until(
            f"1/{share} of the send",
            lambda share=share: stack.relay.total >= recipients // share,
            timeout=180,
        )
        moments.append(f"{mode} at {stack.relay.total}")
        stack.fault()
        stack.postgres.restart(mode)
    # Each restart can leave, per connection, one message taken but not recorded as sent.
    check_everyone_got_it(
        stack,
        send_id,
        recipients,
        bound=2 * CONCURRENCY,
        what=f"PostgreSQL restarted ({', '.join(moments)} taken)",
    )


@pytest.mark.parametrize("drop", ["before-reply", "after-reply"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_relay_drops_the_connection_after_every_100th_message(build_stack, backend, drop):
    recipients = 2000
    relay = FaultyRelay(drop_every=100, drop=drop)
    stack = build_stack(backend, relay)
    send_id = stack.queue_send(recipients)
    stack.start_beat()
    stack.start_worker("one")
    duplicates = check_everyone_got_it(
        stack, send_id, recipients, bound=None, what=f"relay cuts after every 100th, {drop}"
    )
    report = f"{duplicates} duplicates for {relay.drops} dropped connections ({drop})"
    print(report)
    if drop == "before-reply":
        # Every 100th message taken is never acknowledged, so it is sent again: one duplicate
        # per drop at most.
        assert relay.drops >= recipients // 100, report
        assert duplicates <= relay.drops, report
    else:
        # The connection is gone when the next message starts, which was not taken: the
        # sender tries it again on a new connection and nothing arrives twice. (A batch whose
        # 100th message is its last quits first, so a few drops do not happen.)
        assert relay.drops >= recipients // 200, report
        assert duplicates == 0, report


# --- a digest run --------------------------------------------------------------------------


def digest_state(stack: FaultStack) -> dict[str, Any] | None:
    """The (one) digest run's status and its delivery counts, or None before it exists."""
    from sqlalchemy import text

    with stack.engine().connect() as conn:
        runs = conn.execute(text("SELECT id, status, total FROM digest_runs")).all()
        if not runs:
            return None
        assert len(runs) == 1, f"one period, one run: {runs}"
        run_id, status, total = runs[0]
        counts = dict(
            conn.execute(
                text(
                    "SELECT status, count(*) FROM digest_deliveries WHERE run_id = :id "
                    "GROUP BY status"
                ),
                {"id": run_id},
            ).all()
        )
    return {"status": status, "total": total, **counts}


def digest_rows(stack: FaultStack) -> dict[str, tuple[str, str, int]]:
    """Each reader's delivery row: {address: (status, the group's subject, circulars held)}."""
    from sqlalchemy import text

    with stack.engine().connect() as conn:
        rows = conn.execute(
            text(
                "SELECT d.email, d.status, g.subject, d.circular_ids FROM digest_deliveries d "
                "JOIN digest_groups g ON g.id = d.group_id"
            )
        ).all()
    found = {}
    for email, status, subject, circular_ids in rows:
        ids = json.loads(circular_ids) if isinstance(circular_ids, str) else circular_ids
        found[email] = (status, subject, len(ids))
    return found


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_worker_sigkilled_mid_digest_then_a_new_worker_finishes(build_stack, backend):
    """Issue 5: "never sent twice for the same period, also when ... a worker dies half-way".

    Beat's tick (DIGEST_TICK, queued by name as beat does) creates the run and a real worker
    snapshots and delivers it; it is SIGKILLed once a third of the rows are marked sent. A
    new worker and further ticks (beat's, every few seconds instead of every minute) take up
    the rows once the dead worker's lease is over.
    """
    readers = 3000
    stack = build_stack(backend, FaultyRelay())
    due = queue_digest_setup(stack.env, readers, stack.workdir / "setup.log")
    expected = digest_circular_counts(readers)
    beat = TaskClient(stack.env)
    stack.cleanups.append(beat.close)
    first = stack.start_worker("killed")
    beat.send(DIGEST_TICK)

    def sent_so_far() -> int:
        state = digest_state(stack)
        return int(state.get("sent", 0)) if state else 0

    wait_until("a third of the digests marked sent", lambda: sent_so_far() >= readers // 3, 120)
    first.stop(signal.SIGKILL)
    stack.fault()
    assert first.process is not None and first.process.poll() is not None
    time.sleep(0.5)  # what the relay was taking when the connection went
    at_kill = digest_state(stack)
    assert at_kill is not None and at_kill["status"] == "running", at_kill
    assert at_kill["total"] == readers and at_kill["sent"] < readers, at_kill
    rows_at_kill = digest_rows(stack)
    sent_at_kill = {email for email, row in rows_at_kill.items() if row[0] == "sent"}
    received_at_kill = stack.relay.counts()
    # Taken by the relay but not marked sent: what was in flight on the killed connections.
    in_flight = set(received_at_kill) - sent_at_kill
    killed_at = stack.relay.total

    stack.start_worker("second")
    last: dict[str, Any] = {}

    def done() -> bool:
        beat.send(DIGEST_TICK)
        state = digest_state(stack)
        last.clear()
        last.update(state or {})
        finished = bool(state and state["status"] == "done")
        if finished:
            stack.done_at = time.monotonic()
        return finished

    try:
        wait_until("the digest run to finish", done, timeout=120, every=2)
    except AssertionError as exc:
        logs = "\n".join(
            f"--- {w.log_path.name}\n{w.log_path.read_text(errors='replace')[-3000:]}"
            for w in stack.workers
        )
        raise AssertionError(f"{exc}; last state {last}\n{logs}") from None
    # Beat keeps ticking after the run is done: nothing more is sent, no second run appears.
    taken = stack.relay.total
    for _ in range(3):
        beat.send(DIGEST_TICK)
        time.sleep(1)
    assert stack.relay.total == taken, "a digest went out after the run was done"

    state = digest_state(stack)
    assert state == {"status": "done", "total": readers, "sent": readers}, state
    rows = digest_rows(stack)
    assert set(rows) == set(expected)
    got = stack.relay.subjects_by_recipient()
    missing = set(expected) - set(got)
    assert not missing, f"{len(missing)} readers got no digest, e.g. {sorted(missing)[:5]}"
    assert set(got) == set(expected), set(got) - set(expected)
    for email, (status, subject, held) in rows.items():
        assert (status, held) == ("sent", expected[email]), (email, rows[email])
        # The digest rendered for their group (circulars and language), and no other.
        assert set(got[email]) == {subject}, (email, got[email], subject)
    assert len({subject for _, subject, _ in rows.values()}) == 4  # 3 or 2 circulars, en or fr
    assert all(f"{due.day} " in subject for _, subject, _ in rows.values()), rows[addresses(1)[0]]

    received = stack.relay.counts()
    twice = {email for email, count in received.items() if count > 1}
    duplicates = sum(count - 1 for count in received.values())
    # No one recorded as sent before the kill got it again; the duplicates are the messages
    # in flight, at most one per SMTP connection of the killed worker.
    again = {email for email in sent_at_kill if received[email] != received_at_kill[email]}
    assert not again, f"{len(again)} readers already sent got it again, e.g. {sorted(again)[:5]}"
    report = (
        f"digest SIGKILL at {at_kill['sent']} marked sent, {killed_at} taken [{backend}]: "
        f"{readers} readers all reached, {stack.relay.total} messages taken by the relay, "
        f"{duplicates} duplicates (in flight at the kill: {len(in_flight)}, allowed: "
        f"{CONCURRENCY})"
    )
    if stack.fault_at is not None and stack.done_at is not None:
        report += f"; done {stack.done_at - stack.fault_at:.0f} s after the fault"
    print(f"\n{report}")
    assert twice <= in_flight, report
    assert duplicates <= len(in_flight) <= CONCURRENCY, report
