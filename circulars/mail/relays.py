"""Sending through several relays, each with its share, its limits and a cool-down after failing.

The pool is a Messenger like SmtpMessenger, so the send engine does not know
it is there: `connect()` picks a relay by weight among those not taken out,
and the connection paces itself under that relay's limits (shared by every
worker through a RelayState). A relay that refuses a connection is taken out
for the cool-down and the next one is tried, also in the middle of a batch;
only when no relay can take mail does the engine see ConnectionFailed, and it
defers the rest of the batch as it always has.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol

from ..config import SmtpRelay
from .ratelimit import Limits, RelayState, RelayStateUnavailable, Windows
from .transport import ConnectionFailed, SmtpConnection, _local_hostname

log = logging.getLogger(__name__)


#: When a batch held back by our own limits should try again, by what held it back: a
#: full connection count frees within seconds, a spent hourly budget within minutes.
HOLD_SECONDS = {"connections": 15.0, "hour": 120.0, "day": 600.0}


class RelayLimited(ConnectionFailed):
    """No relay failed: every one is held back by our own limits (budget spent, connections full).

    The engine defers the batch for `retry_after` seconds without counting it as a
    relay error or as one of the batch's tries, so a daily limit delays a send
    rather than failing its recipients.
    """

    def __init__(self, reply: str, retry_after: float) -> None:
        super().__init__(reply, permanent=False)
        self.retry_after = retry_after


class RelayConnection(Protocol):
    """What the pool needs of one relay's connection: SmtpConnection's shape."""

    def open(self) -> None: ...

    def send(self, envelope_from: str, recipient: str, message: bytes) -> None: ...

    def close(self) -> None: ...


ConnectionFactory = Callable[[SmtpRelay, float, str | None], RelayConnection]


def limits_of(relay: SmtpRelay) -> Limits:
    return Limits(relay.per_second, relay.per_hour, relay.per_day)


def block_size(relay: SmtpRelay) -> int:
    """Tokens taken per round trip to the shared store.

    Large enough that the round trip disappears per message, small enough that
    one worker does not hold a second's budget it cannot use (leftovers go
    back, but only at the end of the second or of the connection).
    """
    if relay.per_second:
        return max(1, min(64, relay.per_second // 8))
    return 64


def limit_reply(relay: SmtpRelay, exhausted: str) -> str:
    if exhausted == "day":
        return f"relay {relay.label}: daily limit of {relay.per_day} reached"
    return f"relay {relay.label}: hourly limit of {relay.per_hour} reached"


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S UTC")


class RelayPool:
    """A Messenger over one or more relays; see the module docstring."""

    def __init__(
        self,
        relays: Sequence[SmtpRelay],
        state: RelayState,
        *,
        cooldown: float = 60,
        timeout: float = 30,
        connect_wait: float = 30,
        slot_ttl: float = 120,
        rng: random.Random | None = None,
        connection_factory: ConnectionFactory | None = None,
    ) -> None:
        if not relays:
            raise ValueError("a relay pool needs at least one relay")
        self.relays = tuple(relays)
        self.state = state
        self.cooldown = cooldown
        self.timeout = timeout
        self.connect_wait = connect_wait
        self.slot_ttl = slot_ttl
        # None: the random module's own generator, which is reseeded in forked workers.
        self.rng = rng
        self.connection_factory: ConnectionFactory = connection_factory or (
            lambda relay, timeout, hostname: SmtpConnection(relay, timeout, hostname)
        )

    def connect(self) -> PooledConnection:
        connection = PooledConnection(self)
        connection.open()
        return connection

    def order(self, relays: Sequence[SmtpRelay]) -> list[SmtpRelay]:
        """The relays in the order to try them: each next one drawn by weight from the rest."""
        draw = self.rng.random if self.rng is not None else random.random
        left = list(relays)
        ordered = []
        while left:
            point = draw() * sum(relay.weight for relay in left)
            for index, relay in enumerate(left):
                point -= relay.weight
                if point < 0 or index == len(left) - 1:
                    ordered.append(left.pop(index))
                    break
        return ordered


class PooledConnection:
    """One connection through the pool; it may move to another relay when its relay fails."""

    def __init__(self, pool: RelayPool) -> None:
        self.pool = pool
        self.relay: SmtpRelay | None = None
        self.inner: RelayConnection | None = None
        self.holder: str | None = None
        self.tokens = 0
        self.windows: Windows | None = None
        self._limits = Limits()
        self._tokens_until = 0.0  # monotonic time after which held tokens are stale
        self._renew_at = 0.0  # monotonic time to renew the connection slot

    def __enter__(self) -> PooledConnection:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- choosing a relay ---------------------------------------------------------------

    def open(
        self, excluded: dict[str, str] | None = None, held: dict[str, float] | None = None
    ) -> None:
        """Connect to the first relay that takes us; ConnectionFailed saying why when none does.

        Relays at their connection maximum are waited for, up to `connect_wait`
        seconds; relays taken out or past their hourly or daily limit are not.
        """
        pool = self.pool
        excluded = dict(excluded or {})
        deadline = time.monotonic() + pool.connect_wait
        while True:
            reasons = dict(excluded)
            # Relays held back by our limits, with when to try again; the rest failed.
            holds = dict(held or {})
            candidates = [relay for relay in pool.relays if relay.key not in reasons]
            try:
                down = pool.state.down_relays([relay.key for relay in candidates])
            except RelayStateUnavailable as exc:
                raise ConnectionFailed(str(exc), permanent=False) from exc
            for relay in candidates:
                if relay.key in down:
                    mark = down[relay.key]
                    reasons[relay.key] = (
                        f"relay {relay.label} taken out until {_clock(mark.until)} "
                        f"after: {mark.reason}"
                    )
            busy = False
            for relay in pool.order([r for r in candidates if r.key not in reasons]):
                reason, full, hold = self._try(relay)
                if reason is None:
                    return
                reasons[relay.key] = reason
                if hold is not None:
                    holds[relay.key] = hold
                busy = busy or full
            if busy and time.monotonic() < deadline:
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                continue
            reply = "; ".join(reasons.values())
            if reasons and set(reasons) <= set(holds):
                raise RelayLimited(reply, retry_after=min(holds.values()))
            raise ConnectionFailed(reply, permanent=False)

    def _try(self, relay: SmtpRelay) -> tuple[str | None, bool, float | None]:
        """(None, ...) when connected; else why not, whether waiting could help, and,
        when our own limits held it back, in how many seconds to try again."""
        pool = self.pool
        holder = None
        try:
            if relay.max_connections:
                holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
                if not pool.state.acquire_slot(
                    relay.key, holder, relay.max_connections, pool.slot_ttl
                ):
                    return (
                        f"relay {relay.label}: all {relay.max_connections} connections in use",
                        True,
                        HOLD_SECONDS["connections"],
                    )
            grant = None
            limits = limits_of(relay)
            if limits.any:
                grant = pool.state.take(
                    relay.key, block_size(relay), limits, holder=holder, ttl=pool.slot_ttl
                )
                if grant.exhausted in ("hour", "day"):
                    pool.state.release(relay.key, holder)
                    return limit_reply(relay, grant.exhausted), False, HOLD_SECONDS[grant.exhausted]
        except RelayStateUnavailable as exc:
            raise ConnectionFailed(str(exc), permanent=False) from exc
        inner = pool.connection_factory(relay, pool.timeout, _local_hostname())
        try:
            inner.open()
        except ConnectionFailed as exc:
            if grant is not None:
                self._let_go(relay, holder, grant.granted, grant.windows)
            else:
                self._let_go(relay, holder, 0, None)
            self._take_out(relay, exc.reply)
            return f"relay {relay.label}: {exc.reply}", False, None
        self.relay, self.inner, self.holder, self._limits = relay, inner, holder, limits
        self.tokens = grant.granted if grant else 0
        self.windows = grant.windows if grant else None
        now = time.monotonic()
        self._tokens_until = now + (grant.seconds_left if grant else 0)
        self._renew_at = now + pool.slot_ttl / 4
        return None, False, None

    def _take_out(self, relay: SmtpRelay, reply: str) -> None:
        # With one relay there is no other to carry on: each later try goes to it, as before.
        if len(self.pool.relays) < 2:
            return
        log.warning("relay %s taken out for %s s: %s", relay.label, self.pool.cooldown, reply)
        try:
            self.pool.state.mark_down(relay.key, self.pool.cooldown, reply)
        except RelayStateUnavailable as exc:
            log.warning("could not record relay %s as down: %s", relay.label, exc)

    def _let_go(
        self, relay: SmtpRelay, holder: str | None, unused: int, windows: Windows | None
    ) -> None:
        """Give back the slot and unused tokens; a failure here only delays their expiry."""
        if holder is None and not (unused and windows):
            return
        try:
            self.pool.state.release(relay.key, holder, unused, windows)
        except RelayStateUnavailable as exc:
            log.warning("could not release relay %s: %s", relay.label, exc)

    def _leave(self) -> SmtpRelay | None:
        """Close the current relay's connection and give back what it held."""
        relay, inner = self.relay, self.inner
        if relay is None:
            return None
        if inner is not None:
            inner.close()
        self._let_go(relay, self.holder, self.tokens, self.windows)
        self.relay = self.inner = self.holder = self.windows = None
        self.tokens = 0
        return relay

    def _move_on(self, reason: str, hold: float | None = None) -> None:
        """Leave the current relay for another; ConnectionFailed when none can take over.

        `hold`: the relay is held back by our limits (not failed), for about that long.
        """
        relay = self._leave()
        if relay is None:
            self.open()
            return
        self.open({relay.key: reason}, {relay.key: hold} if hold is not None else None)

    # --- sending ------------------------------------------------------------------------

    def _ready(self) -> None:
        """Hold a token of the current relay, waiting for the next second when it is spent."""
        while True:
            relay, limits = self.relay, self._limits
            assert relay is not None
            now = time.monotonic()
            if not limits.any:
                if self.holder and now >= self._renew_at:
                    try:
                        kept = self.pool.state.acquire_slot(
                            relay.key, self.holder, relay.max_connections or 1, self.pool.slot_ttl
                        )
                    except RelayStateUnavailable as exc:
                        raise ConnectionFailed(str(exc), permanent=False) from exc
                    if not kept:
                        # Not renewed in time (a send longer than the expiry); others took it.
                        log.warning("relay %s: connection slot lost; sending on", relay.label)
                    self._renew_at = now + self.pool.slot_ttl / 4
                return
            if self.tokens > 0 and now < self._tokens_until:
                return
            try:
                grant = self.pool.state.take(
                    relay.key,
                    block_size(relay),
                    limits,
                    holder=self.holder,
                    ttl=self.pool.slot_ttl,
                    unused=self.tokens,
                    windows=self.windows,
                )
            except RelayStateUnavailable as exc:
                raise ConnectionFailed(str(exc), permanent=False) from exc
            self.tokens, self.windows = grant.granted, grant.windows
            now = time.monotonic()
            if grant.granted:
                # Without a per-second limit the tokens keep, but the slot wants renewing.
                self._tokens_until = now + (
                    grant.seconds_left if relay.per_second else self.pool.slot_ttl / 4
                )
                return
            if grant.exhausted == "second":
                time.sleep(grant.seconds_left + 0.001)
                continue
            exhausted = grant.exhausted or "day"
            self._move_on(limit_reply(relay, exhausted), HOLD_SECONDS[exhausted])

    def send(self, envelope_from: str, recipient: str, message: bytes) -> None:
        if self.relay is None:
            self.open()
        while True:
            if self.tokens <= 0 or time.monotonic() >= self._tokens_until:
                self._ready()
            assert self.inner is not None and self.relay is not None
            rated = self._limits.any
            if rated:
                self.tokens -= 1
            try:
                self.inner.send(envelope_from, recipient, message)
                return
            except ConnectionFailed as exc:
                # Reconnecting to this relay failed, so nothing went out: another relay may take it.
                if rated:
                    self.tokens += 1
                self._take_out(self.relay, exc.reply)
                self._move_on(f"relay {self.relay.label}: {exc.reply}")

    def close(self) -> None:
        self._leave()
