"""Microseconds the relay limiter adds per message, against Redis and the SQLite file.

The pool sends through a connection that does nothing, so what is timed is the
limiter alone: the token blocks (one Lua script or one SQLite transaction per
block), the connection slot and the down marks at connect. Every limit is set
(per second high enough not to pace, per hour, per day, max connections), each
connection carries a batch of messages as the engine's do, and the same loop
through an unlimited relay is the baseline that is subtracted.

    .venv/bin/python bench/relay_limiter.py [--messages 200000] [--batch 200]
        [--processes 1] [--redis redis://127.0.0.1:6379/8]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from circulars.config import SmtpRelay  # noqa: E402
from circulars.mail.ratelimit import RedisRelayState, RelayState, SqliteRelayState  # noqa: E402
from circulars.mail.relays import RelayPool, block_size  # noqa: E402

MESSAGE = b"x" * 100


class NullConnection:
    def __init__(self, relay: SmtpRelay, timeout: float, hostname: str | None) -> None:
        pass

    def open(self) -> None:
        pass

    def send(self, envelope_from: str, recipient: str, message: bytes) -> None:
        pass

    def close(self) -> None:
        pass


UNLIMITED = SmtpRelay("relay.bench", 25, "none")
LIMITED = replace(
    UNLIMITED,
    per_second=100_000,
    per_hour=1_000_000_000 // 1000,
    per_day=1_000_000_000,
    max_connections=64,
)


def open_store(kind: str, where: str, prefix: str) -> RelayState:
    if kind == "redis":
        return RedisRelayState.from_url(where, prefix)
    return SqliteRelayState(Path(where))


def run(relay: SmtpRelay, kind: str, where: str, prefix: str, messages: int, batch: int) -> float:
    """Seconds to push `messages` through the pool, `batch` per connection."""
    pool = RelayPool([relay], open_store(kind, where, prefix), connection_factory=NullConnection)
    started = time.perf_counter()
    sent = 0
    while sent < messages:
        with pool.connect() as connection:
            for _ in range(min(batch, messages - sent)):
                connection.send("a@bench", "b@bench", MESSAGE)
                sent += 1
    return time.perf_counter() - started


def _worker(args: tuple[str, str, str, str, int, int]) -> float:
    name, kind, where, prefix, messages, batch = args
    return run(LIMITED if name == "limited" else UNLIMITED, kind, where, prefix, messages, batch)


def measure(kind: str, where: str, messages: int, batch: int, processes: int) -> None:
    prefix = f"bench-relays:{uuid.uuid4().hex[:8]}"
    results = {}
    for name in ("unlimited", "limited"):
        jobs = [(name, kind, where, prefix, messages // processes, batch)] * processes
        if processes == 1:
            elapsed = _worker(jobs[0])
        else:
            with multiprocessing.get_context("spawn").Pool(processes) as workers:
                started = time.perf_counter()
                workers.map(_worker, jobs)
                elapsed = time.perf_counter() - started
        results[name] = elapsed
    added = (results["limited"] - results["unlimited"]) / messages * 1e6
    print(
        f"{kind:6}  {processes} process(es)  {messages} messages, {batch} per connection, "
        f"block {block_size(LIMITED)}: unlimited {results['unlimited']:.2f} s, "
        f"limited {results['limited']:.2f} s -> {added:.1f} us added per message"
    )
    if kind == "redis":
        import redis

        client = redis.Redis.from_url(where)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/8")
    options = parser.parse_args()
    print(f"relay limiter overhead, {date.today()}")
    measure("redis", options.redis, options.messages, options.batch, options.processes)
    with tempfile.TemporaryDirectory() as tmp:
        measure(
            "sqlite",
            str(Path(tmp) / "relay_state.db"),
            options.messages,
            options.batch,
            options.processes,
        )


if __name__ == "__main__":
    main()
