"""Relay limits and relay health, shared by every worker that sends.

Counters kept in one process would let each worker send the whole budget, so
they live where all workers see them: Redis in production (one Lua script per
call, atomic), or on the embedded default a SQLite file that every local
process opens (each call one `BEGIN IMMEDIATE` transaction).

What is shared, per relay:
- sends counted per second (a fixed one-second window) and over the last hour
  and the last day (a sliding estimate: the current window plus the previous
  one weighted by how much of it still falls inside the last hour or day, so a
  burst at the end of one hour does not get a whole new budget a minute later);
- open connections, as holders with an expiry that a live holder pushes on,
  so the slots of a killed worker come back by themselves;
- "down" marks, set when a relay refuses connections, which expire after the
  cool-down.

Tokens are taken in small blocks, so a connection pays one round trip per
block, not per message; what a connection did not use is given back.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

HOUR = 3600
DAY = 86400


class RelayStateUnavailable(Exception):
    """The shared store (Redis or the SQLite file) could not be reached or used."""


@dataclass(frozen=True)
class Limits:
    per_second: int | None = None
    per_hour: int | None = None
    per_day: int | None = None

    @property
    def any(self) -> bool:
        return bool(self.per_second or self.per_hour or self.per_day)


@dataclass(frozen=True)
class Windows:
    """The counting windows tokens were taken in, so unused ones go back where they came from."""

    second: int
    hour: int
    day: int


@dataclass(frozen=True)
class Grant:
    granted: int
    #: When nothing was granted: "second" (wait for the next one), "hour" or "day".
    exhausted: str | None
    windows: Windows
    #: Seconds until the current one-second window ends: how long the tokens are good for.
    seconds_left: float


@dataclass(frozen=True)
class Down:
    until: float  # epoch seconds
    reason: str


class RelayState(Protocol):
    """What the relay pool needs of the shared store."""

    def down_relays(self, relays: Sequence[str]) -> dict[str, Down]: ...

    def mark_down(self, relay: str, seconds: float, reason: str) -> None: ...

    def acquire_slot(self, relay: str, holder: str, limit: int, ttl: float) -> bool:
        """Take one of `limit` connection slots for `holder`, or renew the one it holds."""
        ...

    def take(
        self,
        relay: str,
        want: int,
        limits: Limits,
        *,
        holder: str | None = None,
        ttl: float = 0,
        unused: int = 0,
        windows: Windows | None = None,
    ) -> Grant:
        """Up to `want` sends, after giving back `unused` tokens of `windows`; renews the slot."""
        ...

    def release(
        self, relay: str, holder: str | None, unused: int = 0, windows: Windows | None = None
    ) -> None: ...


def windows_at(now: float) -> tuple[Windows, float, float, float]:
    """The windows `now` is in, how far into the hour and the day, what is left of the second."""
    second = math.floor(now)
    return (
        Windows(second, int(now // HOUR), int(now // DAY)),
        (now % HOUR) / HOUR,
        (now % DAY) / DAY,
        second + 1 - now,
    )


# --- Redis --------------------------------------------------------------------------------

_GIVE_BACK = """
local function give_back(unused, first)
  if unused <= 0 then return end
  for i = first, first + 2 do
    local v = tonumber(redis.call('GET', KEYS[i]) or '0')
    if v > 0 then redis.call('DECRBY', KEYS[i], math.min(unused, v)) end
  end
end
"""

# KEYS: 1 second, 2 hour, 3 previous hour, 4 day, 5 previous day, 6 slots,
#       7-9 the second, hour and day the unused tokens were taken in.
# ARGV: 1 want, 2 per second, 3 per hour, 4 per day (0: none), 5 fraction of the hour gone,
#       6 fraction of the day gone, 7 holder, 8 slot expiry (0: no slot), 9 unused,
#       10 lifetime of the slots key in ms.
_TAKE = (
    _GIVE_BACK
    + """
give_back(tonumber(ARGV[9]), 7)
if ARGV[8] ~= '0' and redis.call('ZADD', KEYS[6], 'XX', 'CH', ARGV[8], ARGV[7]) == 1 then
  redis.call('PEXPIRE', KEYS[6], ARGV[10])
end
local want = tonumber(ARGV[1])
local ps, ph, pd = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function count(key) return tonumber(redis.call('GET', key) or '0') end
local left_s, left_h, left_d = want, want, want
if pd > 0 then
  left_d = math.floor(pd - count(KEYS[4]) - count(KEYS[5]) * (1 - tonumber(ARGV[6])))
end
if ph > 0 then
  left_h = math.floor(ph - count(KEYS[2]) - count(KEYS[3]) * (1 - tonumber(ARGV[5])))
end
if ps > 0 then left_s = ps - count(KEYS[1]) end
if left_d <= 0 then return {0, 'day'} end
if left_h <= 0 then return {0, 'hour'} end
if left_s <= 0 then return {0, 'second'} end
local grant = math.min(want, left_s, left_h, left_d)
if ps > 0 then redis.call('INCRBY', KEYS[1], grant); redis.call('PEXPIRE', KEYS[1], 3000) end
if ph > 0 then redis.call('INCRBY', KEYS[2], grant); redis.call('EXPIRE', KEYS[2], 7260) end
if pd > 0 then redis.call('INCRBY', KEYS[4], grant); redis.call('EXPIRE', KEYS[4], 172860) end
return {grant, ''}
"""
)

# KEYS: 1 slots. ARGV: 1 now, 2 expiry, 3 holder, 4 limit, 5 key lifetime in ms.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
"""

# KEYS: 1-3 the second, hour and day of the unused tokens, 4 slots. ARGV: 1 unused, 2 holder.
_RELEASE = (
    _GIVE_BACK
    + """
give_back(tonumber(ARGV[1]), 1)
if ARGV[2] ~= '' then redis.call('ZREM', KEYS[4], ARGV[2]) end
return 1
"""
)


#: How often a worker reads Redis's clock again to correct its own.
CLOCK_CHECK_SECONDS = 60.0


class RedisRelayState:
    """Limits shared through Redis by the workers of any number of machines.

    Time windows (this second, this hour, this day) and slot expiries are read
    on Redis's clock, not on each worker's: a worker whose clock is off would
    otherwise count in windows of its own and send beyond the relay's limits.
    Each worker reads Redis's `TIME` once a minute and keeps the difference.
    """

    def __init__(
        self,
        client: Any,
        prefix: str = "circulars:relay",
        clock: Callable[[], float] = time.time,
    ) -> None:
        import redis

        self.client = client
        self.prefix = prefix
        self._clock = clock
        self._offset = 0.0
        self._offset_read_at: float | None = None
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self._take = client.register_script(_TAKE)
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, prefix: str = "circulars:relay") -> RedisRelayState:
        import redis

        return cls(redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5), prefix)

    def now(self) -> float:
        """Redis's time, from this worker's clock corrected by the last reading of it."""
        local = self._clock()
        if self._offset_read_at is None or local - self._offset_read_at >= CLOCK_CHECK_SECONDS:
            with self._guard():
                seconds, microseconds = self.client.time()
            after = self._clock()
            # The reply was made somewhere in the round trip: take its middle.
            self._offset = seconds + microseconds / 1e6 - (local + after) / 2
            self._offset_read_at = local = after
        return local + self._offset

    def _key(self, relay: str, suffix: object) -> str:
        # The braces keep one relay's keys in one Redis Cluster slot, as a script needs.
        return f"{self.prefix}:{{{relay}}}:{suffix}"

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except self._errors as exc:
            raise RelayStateUnavailable(f"relay limits in Redis are unavailable: {exc}") from exc

    def _window_keys(self, relay: str, windows: Windows | None) -> list[str]:
        if windows is None:
            windows = Windows(0, 0, 0)
        return [
            self._key(relay, f"s:{windows.second}"),
            self._key(relay, f"h:{windows.hour}"),
            self._key(relay, f"d:{windows.day}"),
        ]

    def down_relays(self, relays: Sequence[str]) -> dict[str, Down]:
        if not relays:
            return {}
        with self._guard():
            values = self.client.mget([self._key(relay, "down") for relay in relays])
        marks = {}
        for relay, value in zip(relays, values, strict=True):
            if value is not None:
                until, _, reason = value.decode("utf-8", "replace").partition("|")
                marks[relay] = Down(float(until), reason)
        return marks

    def mark_down(self, relay: str, seconds: float, reason: str) -> None:
        until = self.now() + seconds
        with self._guard():
            self.client.set(self._key(relay, "down"), f"{until}|{reason}", px=int(seconds * 1000))

    def acquire_slot(self, relay: str, holder: str, limit: int, ttl: float) -> bool:
        now = self.now()
        with self._guard():
            got = self._acquire(
                keys=[self._key(relay, "slots")],
                args=[now, now + ttl, holder, limit, int(ttl * 2000)],
            )
        return bool(got)

    def take(
        self,
        relay: str,
        want: int,
        limits: Limits,
        *,
        holder: str | None = None,
        ttl: float = 0,
        unused: int = 0,
        windows: Windows | None = None,
    ) -> Grant:
        now = self.now()
        current, hour_gone, day_gone, seconds_left = windows_at(now)
        keys = [
            self._key(relay, f"s:{current.second}"),
            self._key(relay, f"h:{current.hour}"),
            self._key(relay, f"h:{current.hour - 1}"),
            self._key(relay, f"d:{current.day}"),
            self._key(relay, f"d:{current.day - 1}"),
            self._key(relay, "slots"),
            *self._window_keys(relay, windows if unused > 0 else None),
        ]
        args = [
            want,
            limits.per_second or 0,
            limits.per_hour or 0,
            limits.per_day or 0,
            f"{hour_gone:.6f}",
            f"{day_gone:.6f}",
            holder or "",
            f"{now + ttl:.3f}" if holder else "0",
            unused if windows is not None else 0,
            int(ttl * 2000),
        ]
        with self._guard():
            granted, exhausted = self._take(keys=keys, args=args)
        reason = exhausted.decode() if isinstance(exhausted, bytes) else str(exhausted)
        return Grant(int(granted), reason or None, current, seconds_left)

    def release(
        self, relay: str, holder: str | None, unused: int = 0, windows: Windows | None = None
    ) -> None:
        keys = [*self._window_keys(relay, windows), self._key(relay, "slots")]
        with self._guard():
            self._release(keys=keys, args=[unused if windows is not None else 0, holder or ""])


# --- SQLite (one machine) -----------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counts (key TEXT PRIMARY KEY, value INTEGER NOT NULL,
                                   expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS slots (relay TEXT NOT NULL, holder TEXT NOT NULL,
                                  expires REAL NOT NULL, PRIMARY KEY (relay, holder));
CREATE TABLE IF NOT EXISTS down (relay TEXT PRIMARY KEY, until REAL NOT NULL,
                                 reason TEXT NOT NULL);
"""


def _use_wal(db: sqlite3.Connection, deadline: float) -> None:
    """Switch the file to WAL once; another process switching it at the same moment
    makes SQLite answer "database is locked" at once, without its busy time-out."""
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class SqliteRelayState:
    """The same rules as RedisRelayState, in a file every process on this machine opens.

    Each call is one `BEGIN IMMEDIATE` transaction, so two processes never both
    see the last free slot or token. The state is throw-away (counts of the last
    day, expiring marks), so the file is written without waiting for the disk.
    """

    def __init__(self, path: Path, prefix: str = "") -> None:
        self.path = path
        self.prefix = prefix
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pid = 0

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross a fork (Celery's prefork children inherit this object).
        if self._db is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            _use_wal(db, deadline=time.monotonic() + 30)
            db.execute("PRAGMA synchronous=OFF")
            db.executescript(_SCHEMA)
            self._db, self._pid = db, os.getpid()
        return self._db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                db = self._connection()
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise RelayStateUnavailable(
                    f"relay limits in {self.path} are unavailable: {exc}"
                ) from exc

    def _key(self, relay: str, suffix: object) -> str:
        return f"{self.prefix}{relay}:{suffix}"

    @staticmethod
    def _count(db: sqlite3.Connection, key: str, now: float) -> int:
        row = db.execute("SELECT value FROM counts WHERE key = ? AND expires > ?", (key, now))
        found = row.fetchone()
        return int(found[0]) if found else 0

    @staticmethod
    def _add(db: sqlite3.Connection, key: str, amount: int, now: float, lifetime: float) -> None:
        db.execute(
            "INSERT INTO counts (key, value, expires) VALUES (?, ?, ?) ON CONFLICT (key) DO "
            "UPDATE SET value = CASE WHEN expires > ? THEN value + excluded.value "
            "ELSE excluded.value END, expires = excluded.expires",
            (key, amount, now + lifetime, now),
        )

    def _give_back(
        self, db: sqlite3.Connection, relay: str, unused: int, windows: Windows | None, now: float
    ) -> None:
        if unused <= 0 or windows is None:
            return
        for suffix in (f"s:{windows.second}", f"h:{windows.hour}", f"d:{windows.day}"):
            db.execute(
                "UPDATE counts SET value = MAX(value - ?, 0) WHERE key = ? AND expires > ?",
                (unused, self._key(relay, suffix), now),
            )

    def down_relays(self, relays: Sequence[str]) -> dict[str, Down]:
        now = time.time()
        with self._transaction() as db:
            rows = db.execute("SELECT relay, until, reason FROM down WHERE until > ?", (now,))
            marks = {relay: Down(until, reason) for relay, until, reason in rows}
        return {relay: marks[key] for relay in relays if (key := self._key(relay, "")) in marks}

    def mark_down(self, relay: str, seconds: float, reason: str) -> None:
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO down (relay, until, reason) VALUES (?, ?, ?) ON CONFLICT (relay) "
                "DO UPDATE SET until = excluded.until, reason = excluded.reason",
                (self._key(relay, ""), now + seconds, reason),
            )

    def acquire_slot(self, relay: str, holder: str, limit: int, ttl: float) -> bool:
        now = time.time()
        key = self._key(relay, "")
        with self._transaction() as db:
            db.execute("DELETE FROM slots WHERE expires <= ?", (now,))
            db.execute("DELETE FROM counts WHERE expires <= ?", (now,))
            held = db.execute(
                "SELECT 1 FROM slots WHERE relay = ? AND holder = ?", (key, holder)
            ).fetchone()
            (count,) = db.execute("SELECT COUNT(*) FROM slots WHERE relay = ?", (key,)).fetchone()
            if not held and count >= limit:
                return False
            db.execute(
                "INSERT INTO slots (relay, holder, expires) VALUES (?, ?, ?) ON CONFLICT "
                "(relay, holder) DO UPDATE SET expires = excluded.expires",
                (key, holder, now + ttl),
            )
            return True

    def take(
        self,
        relay: str,
        want: int,
        limits: Limits,
        *,
        holder: str | None = None,
        ttl: float = 0,
        unused: int = 0,
        windows: Windows | None = None,
    ) -> Grant:
        now = time.time()
        current, hour_gone, day_gone, seconds_left = windows_at(now)
        second_key = self._key(relay, f"s:{current.second}")
        hour_key = self._key(relay, f"h:{current.hour}")
        day_key = self._key(relay, f"d:{current.day}")
        with self._transaction() as db:
            self._give_back(db, relay, unused, windows, now)
            if holder:
                db.execute(
                    "UPDATE slots SET expires = ? WHERE relay = ? AND holder = ?",
                    (now + ttl, self._key(relay, ""), holder),
                )
            left_s = left_h = left_d = want
            if limits.per_day:
                previous = self._count(db, self._key(relay, f"d:{current.day - 1}"), now)
                left_d = math.floor(
                    limits.per_day - self._count(db, day_key, now) - previous * (1 - day_gone)
                )
            if limits.per_hour:
                previous = self._count(db, self._key(relay, f"h:{current.hour - 1}"), now)
                left_h = math.floor(
                    limits.per_hour - self._count(db, hour_key, now) - previous * (1 - hour_gone)
                )
            if limits.per_second:
                left_s = limits.per_second - self._count(db, second_key, now)
            for left, name in ((left_d, "day"), (left_h, "hour"), (left_s, "second")):
                if left <= 0:
                    return Grant(0, name, current, seconds_left)
            grant = min(want, left_s, left_h, left_d)
            if limits.per_second:
                self._add(db, second_key, grant, now, 3)
            if limits.per_hour:
                self._add(db, hour_key, grant, now, 2 * HOUR + 60)
            if limits.per_day:
                self._add(db, day_key, grant, now, 2 * DAY + 60)
        return Grant(grant, None, current, seconds_left)

    def release(
        self, relay: str, holder: str | None, unused: int = 0, windows: Windows | None = None
    ) -> None:
        now = time.time()
        with self._transaction() as db:
            self._give_back(db, relay, unused, windows, now)
            if holder:
                db.execute(
                    "DELETE FROM slots WHERE relay = ? AND holder = ?",
                    (self._key(relay, ""), holder),
                )


def relay_state(url: str, prefix: str = "circulars:relay") -> RelayState:
    """The store for RELAY_STATE_URL: `redis://…`/`rediss://…`, or `sqlite:///path`."""
    if url.startswith(("redis://", "rediss://")):
        return RedisRelayState.from_url(url, prefix)
    if url.startswith("sqlite:///"):
        return SqliteRelayState(Path(url.removeprefix("sqlite:///")))
    raise ValueError(f"unsupported relay state URL: {url}")
