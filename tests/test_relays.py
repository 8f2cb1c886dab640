"""Several relays, their limits and their health, shared by every process that sends.

Each test that needs the shared store runs on both: the SQLite file of the
embedded default (sqlite stack) and Redis (postgres stack). The relays are real
SMTP servers on loopback; a relay that is down is a port nobody listens on.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP
from sqlalchemy import select

from circulars.config import ConfigError, SmtpRelay, load_settings, parse_smtp_url
from circulars.mail.ratelimit import RedisRelayState, RelayState, SqliteRelayState
from circulars.mail.relays import HOLD_SECONDS, RelayLimited, RelayPool
from circulars.mail.transport import ConnectionFailed, SmtpMessenger

from conftest import SmtpSink, free_port

MESSAGE = b"From: a@circulars.test\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"


# --- the shared store, on each stack ----------------------------------------------------------


@dataclass(frozen=True)
class Store:
    """How to open the shared store; picklable, so a second process opens the same one."""

    url: str
    prefix: str

    def open(self) -> RelayState:
        if self.url.startswith("redis://"):
            return RedisRelayState.from_url(self.url, self.prefix)
        return SqliteRelayState(Path(self.url.removeprefix("sqlite:///")))


@pytest.fixture
def store(stack: dict[str, str], tmp_path: Path) -> Iterator[Store]:
    if stack["STACK"] == "sqlite":
        yield Store(f"sqlite:///{tmp_path / 'relay_state.db'}", "")
        return
    import redis

    spec = Store(stack["CELERY_BROKER_URL"], f"test-relays:{secrets.token_hex(4)}")
    yield spec
    client = redis.Redis.from_url(spec.url)
    for key in client.scan_iter(f"{spec.prefix}:*"):
        client.delete(key)


# --- relays: real SMTP servers on loopback that count their connections ---------------------


class CountingSink(SmtpSink):
    """An SMTP sink that also knows how many connections it has open, and the most at once."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.open_now = 0
        self.peak = 0
        self.connections = 0

    def opened(self) -> None:
        with self.lock:
            self.open_now += 1
            self.connections += 1
            self.peak = max(self.peak, self.open_now)

    def closed(self) -> None:
        with self.lock:
            self.open_now -= 1

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.peak = self.open_now = self.connections = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        # When each message arrived, in the message itself, for the pacing check.
        envelope.original_content = (
            f"X-Sent-At: {time.time():.6f}\r\n".encode() + envelope.original_content
        )
        return await super().handle_DATA(server, session, envelope)

    def arrival_times(self) -> list[float]:
        return [float(r.message["X-Sent-At"]) for r in self.messages()]


class CountingSMTP(SMTP):
    def __init__(self, handler: CountingSink, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.sink = handler

    def connection_made(self, transport: Any) -> None:
        self.sink.opened()
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.sink.closed()
        super().connection_lost(error)


class CountingController(Controller):
    def factory(self) -> SMTP:
        return CountingSMTP(self.handler, **self.SMTP_kwargs)


def start_sink(port: int | None = None) -> tuple[CountingSink, Controller]:
    sink = CountingSink("127.0.0.1", port or free_port())
    controller = CountingController(sink, hostname=sink.host, port=sink.port)
    controller.start()
    time.sleep(0.05)  # the controller's own start-up probe has been counted and closed
    sink.reset()
    return sink, controller


@pytest.fixture
def sinks() -> Iterator[list[CountingSink]]:
    started = [start_sink() for _ in range(2)]
    yield [sink for sink, _ in started]
    for _, controller in started:
        controller.stop()


def relay(url: str, **limits: Any) -> SmtpRelay:
    return replace(parse_smtp_url(url), **limits)


def dead_relay(**limits: Any) -> SmtpRelay:
    return relay(f"smtp://127.0.0.1:{free_port()}", **limits)


def send_one(pool: RelayPool, recipient: str = "b@example.org") -> None:
    with pool.connect() as connection:
        connection.send("a@circulars.test", recipient, MESSAGE)


# --- weights and health ----------------------------------------------------------------------


def test_relays_share_connections_by_weight(store: Store, sinks: list[CountingSink]) -> None:
    heavy, light = sinks
    pool = RelayPool(
        [relay(heavy.url, weight=3), relay(light.url, weight=1)],
        store.open(),
        rng=random.Random(20261128),
    )
    for _ in range(200):
        send_one(pool)

    got = (len(heavy.messages()), len(light.messages()))
    assert sum(got) == 200
    # 3:1 is 150:50; a fair coin over 200 draws stays well within this.
    assert 130 <= got[0] <= 170, got


def test_a_refused_relay_is_taken_out_and_comes_back_after_the_cooldown(
    store: Store, sinks: list[CountingSink]
) -> None:
    backup = sinks[0]
    down = dead_relay(weight=100)
    state = store.open()
    pool = RelayPool([down, relay(backup.url, weight=1)], state, cooldown=1.5, rng=random.Random(7))

    send_one(pool, "first@example.org")  # tries the heavy relay, is refused, goes on

    assert [r.rcpt_tos for r in backup.messages()] == [["first@example.org"]]
    marks = state.down_relays([down.key])
    assert down.key in marks and "cannot connect" in marks[down.key].reason
    taken_out_at = time.monotonic()

    # The relay is back up, but it is out until the cool-down ends: no one tries it.
    revived, controller = start_sink(down.port)
    try:
        for _ in range(5):
            send_one(pool)
        assert revived.connections == 0
        assert len(backup.messages()) == 6

        time.sleep(max(0.0, 1.6 - (time.monotonic() - taken_out_at)))
        for _ in range(5):
            send_one(pool)
        # Weight 100 against 1: back in, it takes nearly everything again.
        assert len(revived.messages()) >= 4
        assert state.down_relays([down.key]) == {}
    finally:
        controller.stop()


def test_when_every_relay_is_down_connect_fails_temporarily_naming_each(store: Store) -> None:
    first, second = dead_relay(), dead_relay()
    pool = RelayPool([first, second], store.open(), cooldown=30)

    with pytest.raises(ConnectionFailed) as failed:
        pool.connect()
    assert not failed.value.permanent
    assert not isinstance(failed.value, RelayLimited)  # failures: relay errors
    assert f"relay {first.label}" in failed.value.reply
    assert f"relay {second.label}" in failed.value.reply

    # Within the cool-down nobody knocks again; the reply says until when.
    with pytest.raises(ConnectionFailed) as again:
        pool.connect()
    assert "taken out until" in again.value.reply


def test_a_relay_lost_in_the_middle_of_a_batch_hands_over_to_the_other(
    store: Store, sinks: list[CountingSink]
) -> None:
    stays = sinks[0]
    leaving, controller = start_sink()
    pool = RelayPool(
        [relay(leaving.url, weight=1000), relay(stays.url, weight=1)],
        store.open(),
        rng=random.Random(1),
    )
    connection = pool.connect()
    try:
        connection.send("a@circulars.test", "one@example.org", MESSAGE)
        assert len(leaving.messages()) == 1
        controller.stop()
        errors = []
        for number in range(2, 6):
            try:
                connection.send("a@circulars.test", f"n{number}@example.org", MESSAGE)
            except ConnectionFailed:
                raise
            except Exception as exc:  # the message in flight when the link dropped
                errors.append(exc)
    finally:
        connection.close()
    # At most the message on the dropped link failed (temporarily); the rest went on.
    assert len(errors) <= 1
    assert len(stays.messages()) == 4 - len(errors)


def test_an_unreachable_limit_store_defers_instead_of_sending_unlimited(
    sinks: list[CountingSink],
) -> None:
    sink = sinks[0]
    nowhere = RedisRelayState.from_url(f"redis://127.0.0.1:{free_port()}/0")
    pool = RelayPool([relay(sink.url, per_hour=100)], nowhere)
    with pytest.raises(ConnectionFailed) as failed:
        pool.connect()
    assert not failed.value.permanent
    assert "relay limits in Redis are unavailable" in failed.value.reply
    assert sink.messages() == []


# --- limits ---------------------------------------------------------------------------------


def test_the_per_second_limit_paces_every_connection_together(
    store: Store, sinks: list[CountingSink]
) -> None:
    sink = sinks[0]
    limit, per_thread = 5, 8
    pool = RelayPool([relay(sink.url, per_second=limit)], store.open())

    def send_several(tag: str) -> None:
        with pool.connect() as connection:
            for number in range(per_thread):
                connection.send("a@circulars.test", f"{tag}{number}@example.org", MESSAGE)

    started = time.monotonic()
    threads = [threading.Thread(target=send_several, args=(tag,)) for tag in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started

    total = 2 * per_thread
    assert len(sink.messages()) == total
    # Windows are calendar seconds: 16 messages at 5 a second need 4 windows, so 3
    # boundaries pass; the first window may be all but over at the start.
    assert elapsed >= math.ceil(total / limit) - 2, elapsed
    # Per calendar second at the relay: the limit, plus at most one message that took
    # its token at the very end of the second before and arrived in this one.
    stamps = Counter(int(at) for at in sink.arrival_times())
    assert max(stamps.values()) <= limit + 1, stamps


@pytest.mark.parametrize(("limit", "word"), [("per_hour", "hourly"), ("per_day", "daily")])
def test_hourly_and_daily_limits_defer_with_a_clear_reply(
    store: Store, sinks: list[CountingSink], limit: str, word: str
) -> None:
    sink = sinks[0]
    only = relay(sink.url, **{limit: 3})
    pool = RelayPool([only], store.open())

    with pool.connect() as connection:
        for number in range(3):
            connection.send("a@circulars.test", f"p{number}@example.org", MESSAGE)
        with pytest.raises(ConnectionFailed) as refused:
            connection.send("a@circulars.test", "p3@example.org", MESSAGE)
    assert refused.value.reply == f"relay {only.label}: {word} limit of 3 reached"
    assert not refused.value.permanent
    # Held back by our own budget, not a relay failure: retried later, not counted.
    assert isinstance(refused.value, RelayLimited)
    assert refused.value.retry_after == HOLD_SECONDS["hour" if word == "hourly" else "day"]
    assert len(sink.messages()) == 3

    # A new connection (another worker, a retry) is refused the same way, before any SMTP.
    connections_before = sink.connections
    with pytest.raises(ConnectionFailed, match=f"{word} limit of 3 reached"):
        pool.connect()
    assert sink.connections == connections_before


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
def test_workers_with_clocks_apart_count_in_the_same_windows(store: Store) -> None:
    """Redis's clock, not each worker's, decides which hour and day a message counts in:
    a worker whose clock is two days ahead still shares the hourly budget."""
    import time

    from circulars.mail.ratelimit import Limits

    on_time = RedisRelayState.from_url(store.url, store.prefix)
    ahead = RedisRelayState(on_time.client, store.prefix, clock=lambda: time.time() + 2 * 86400)
    assert abs(on_time.now() - ahead.now()) < 0.5

    hourly = Limits(per_hour=5)
    assert on_time.take("relay-a", 3, hourly).granted == 3
    assert ahead.take("relay-a", 5, hourly).granted == 2
    spent = ahead.take("relay-a", 1, hourly)
    assert (spent.granted, spent.exhausted) == (0, "hour")


def test_a_spent_relay_hands_over_to_one_with_budget_left(
    store: Store, sinks: list[CountingSink]
) -> None:
    spent, spare = sinks
    pool = RelayPool(
        [relay(spent.url, weight=1000, per_day=2), relay(spare.url, weight=1)],
        store.open(),
        rng=random.Random(3),
    )
    with pool.connect() as connection:
        for number in range(6):
            connection.send("a@circulars.test", f"p{number}@example.org", MESSAGE)
    assert (len(spent.messages()), len(spare.messages())) == (2, 4)


def test_a_closed_connection_gives_back_the_tokens_it_did_not_use(
    store: Store, sinks: list[CountingSink]
) -> None:
    sink = sinks[0]
    pool = RelayPool([relay(sink.url, per_hour=10)], store.open())
    for _ in range(5):  # each connection takes a block, uses two and closes
        with pool.connect() as connection:
            connection.send("a@circulars.test", "x@example.org", MESSAGE)
            connection.send("a@circulars.test", "y@example.org", MESSAGE)
    assert len(sink.messages()) == 10
    with pytest.raises(ConnectionFailed, match="hourly limit of 10 reached"):
        pool.connect()


# --- connections, across processes -----------------------------------------------------------


def _hold_connections(store: Store, url: str, rounds: int, hold: float, go: Any) -> None:
    """Two threads that connect, send, hold the connection a while and close, several times."""
    pool = RelayPool([relay(url, max_connections=2)], store.open(), connect_wait=60)
    go.wait(60)

    def work() -> None:
        for _ in range(rounds):
            with pool.connect() as connection:
                connection.send("a@circulars.test", f"{os.getpid()}@example.org", MESSAGE)
                time.sleep(hold)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_max_connections_holds_across_processes(store: Store, sinks: list[CountingSink]) -> None:
    sink = sinks[0]
    spawn = multiprocessing.get_context("spawn")
    go = spawn.Event()
    other = spawn.Process(target=_hold_connections, args=(store, sink.url, 5, 0.1, go))
    other.start()
    try:
        time.sleep(1.5)  # the other process is importing; both start together on `go`
        go.set()
        _hold_connections(store, sink.url, 5, 0.1, go)
    finally:
        other.join(60)
    assert other.exitcode == 0

    senders = Counter(r.rcpt_tos[0] for r in sink.messages())
    # Two processes, two threads each, five rounds each.
    assert senders == {f"{os.getpid()}@example.org": 10, f"{other.pid}@example.org": 10}
    assert sink.peak <= 2, sink.peak
    assert sink.peak == 2  # and both slots were used


def _hold_forever(store: Store, url: str, ready: Any) -> None:
    pool = RelayPool([relay(url, max_connections=1)], store.open(), slot_ttl=2)
    pool.connect()
    ready.set()
    time.sleep(600)


def test_the_slot_of_a_killed_holder_comes_back_after_it_expires(
    store: Store, sinks: list[CountingSink]
) -> None:
    sink = sinks[0]
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Event()
    holder = spawn.Process(target=_hold_forever, args=(store, sink.url, ready))
    holder.start()
    try:
        assert ready.wait(60)
        impatient = RelayPool(
            [relay(sink.url, max_connections=1)], store.open(), connect_wait=0.3, slot_ttl=2
        )
        with pytest.raises(ConnectionFailed) as busy:
            impatient.connect()
        assert "all 1 connections in use" in busy.value.reply
        assert not busy.value.permanent
        assert isinstance(busy.value, RelayLimited)
        assert busy.value.retry_after == HOLD_SECONDS["connections"]
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # type: ignore[arg-type]
        holder.join(10)

    # Nobody releases the dead holder's slot; it comes back when it expires.
    patient = RelayPool(
        [relay(sink.url, max_connections=1)], store.open(), connect_wait=10, slot_ttl=2
    )
    started = time.monotonic()
    send_one(patient)
    assert time.monotonic() - started < 10
    assert len(sink.messages()) == 1


@pytest.mark.parametrize("limits", [{}, {"per_hour": 1000}], ids=["slot-only", "rated"])
def test_a_connection_in_use_keeps_its_slot_beyond_the_expiry(
    store: Store, sinks: list[CountingSink], limits: dict[str, int]
) -> None:
    sink = sinks[0]
    busy = relay(sink.url, max_connections=1, **limits)
    pool = RelayPool([busy], store.open(), connect_wait=0.2, slot_ttl=2)
    with pool.connect() as connection:
        for number in range(12):  # about 5 s of sending, more than twice the slot's expiry
            connection.send("a@circulars.test", f"p{number}@example.org", MESSAGE)
            time.sleep(0.2)
            with pytest.raises(ConnectionFailed, match="all 1 connections in use"):
                pool.connect()
    send_one(pool)  # closed: the slot is free at once
    assert len(sink.messages()) == 13


# --- settings -------------------------------------------------------------------------------


def load(tmp_path: Path, **env: str) -> Any:
    return load_settings({"INSTANCE_PATH": str(tmp_path), **env})


def test_relays_and_their_limits_come_from_the_settings(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        SMTP_RELAYS="smtp://relay1.example.org:25?weight=3&per_second=50&per_hour=20000"
        "&per_day=200000&max_connections=4, smtps://user:p%40ss@relay2.example.org"
        "\n smtp+starttls://relay3.example.org?weight=2",
        RELAY_COOLDOWN_SECONDS="120",
    )
    first, second, third = settings.relays
    assert (first.host, first.port, first.weight, first.per_second) == (
        "relay1.example.org",
        25,
        3,
        50,
    )
    assert (first.per_hour, first.per_day, first.max_connections) == (20000, 200000, 4)
    assert (second.security, second.port, second.password, second.weight) == ("tls", 465, "p@ss", 1)
    assert (third.security, third.weight, third.per_hour) == ("starttls", 2, None)
    assert settings.capture_mail is False
    assert settings.smtp_relay == first
    assert settings.relay_cooldown_seconds == 120
    assert "p%40ss" not in str(settings.public()) and "p@ss" not in str(settings.public())


def test_the_limit_store_defaults_to_the_broker_redis_else_a_file(tmp_path: Path) -> None:
    assert load(tmp_path).relay_state_url == f"sqlite:///{tmp_path.resolve()}/relay_state.db"
    on_redis = load(tmp_path, CELERY_BROKER_URL="redis://cache:6379/2")
    assert on_redis.relay_state_url == "redis://cache:6379/2"
    assert load(tmp_path, RELAY_STATE_URL="redis://other/1").relay_state_url == "redis://other/1"


def test_one_relay_without_limits_is_used_directly_else_through_the_pool(
    tmp_path: Path,
) -> None:
    from circulars.wiring import relay_messenger

    assert isinstance(relay_messenger(load(tmp_path)), SmtpMessenger)
    assert isinstance(
        relay_messenger(load(tmp_path, SMTP_URL="smtp://r.example.org")), SmtpMessenger
    )
    limited = relay_messenger(load(tmp_path, SMTP_URL="smtp://r.example.org?per_hour=100"))
    assert isinstance(limited, RelayPool) and limited.relays[0].per_hour == 100
    several = relay_messenger(
        load(tmp_path, SMTP_RELAYS="smtp://a.example.org smtp://b.example.org")
    )
    assert isinstance(several, RelayPool) and len(several.relays) == 2


BAD_RELAYS = [
    ("smtp://a.example.org?weight=0", "relay 1 (smtp://a.example.org?weight=0): weight must be"),
    ("smtp://a.example.org smtp://b.example.org?per_hour=lots", "relay 2 (smtp://b.example.org"),
    ("smtp://a.example.org?per_minute=5", "unknown parameter 'per_minute'"),
    ("smtp://a.example.org?max_connections=2&max_connections=3", "max_connections is given twice"),
    (
        "smtp://a.example.org, smtp://a.example.org",
        "relay 2 (smtp://a.example.org) is listed twice",
    ),
    ("http://a.example.org", "relay 1 (http://a.example.org): scheme must be"),
    ("smtp://a.example.org smtp://b.example.org:99999", "relay 2"),
    ("smtp://a.example.org/path", "has no path"),
    (" , ", "name at least one relay"),
]


@pytest.mark.parametrize(("value", "message"), BAD_RELAYS)
def test_a_malformed_relay_stops_start_up_naming_the_setting_and_the_relay(
    tmp_path: Path, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, SMTP_RELAYS=value)
    assert str(refused.value).startswith("SMTP_RELAYS is not valid: ")
    assert message in str(refused.value)


def test_relay_errors_never_show_a_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, SMTP_RELAYS="smtps://u:s3cret@a.example.org smtps://u:s3cret@b?weight=x")
    assert "s3cret" not in str(refused.value) and "relay 2 (smtps://u:***@b?weight=x)" in str(
        refused.value
    )


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"SMTP_URL": "smtp://a.example.org?per_second=-1"}, "SMTP_URL"),
        ({"SMTP_URL": "smtp://x.org", "SMTP_RELAYS": "smtp://y.org"}, "SMTP_URL and SMTP_RELAYS"),
        ({"RELAY_COOLDOWN_SECONDS": "0"}, "RELAY_COOLDOWN_SECONDS"),
        ({"RELAY_COOLDOWN_SECONDS": "soon"}, "RELAY_COOLDOWN_SECONDS"),
        ({"RELAY_STATE_URL": "memory://"}, "RELAY_STATE_URL"),
    ],
)
def test_other_relay_settings_are_checked(tmp_path: Path, env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load(tmp_path, **env)


# --- end to end: the send engine through two relays, one of them down ------------------------


def test_a_send_through_two_relays_one_down_reaches_everyone_once(
    app: Any, session: Any, stack: dict[str, str], store: Store, smtp_server: SmtpSink
) -> None:
    from circulars.models import Circular, Delivery, MailingList, Send
    from circulars.sending import engine
    from circulars.sending.service import create_send
    from circulars.subscribers.service import add_to_list
    from circulars.wiring import send_context

    # The down relay weighs five times the live one: most connections try it first.
    relays = f"smtp://127.0.0.1:{free_port()}?weight=5 {smtp_server.url}?per_second=200"
    settings = load_settings(
        {**stack, "SMTP_URL": "", "SMTP_RELAYS": relays, "RELAY_STATE_URL": store.url}
    )
    ctx = replace(send_context(settings), batch_size=20)
    assert isinstance(ctx.messenger, RelayPool)

    members = MailingList(slug="members", name="Members")
    session.add(members)
    session.flush()
    for index in range(120):
        add_to_list(session, members, f"p{index}@example.org", name=f"Person {index}")
    circular = Circular(title="Two relays", body_markdown="Hello.")
    session.add(circular)
    session.commit()
    send = create_send(session, circular.id, [members.id])
    session.commit()

    ranges = engine.start_send(session, send.id, ctx)
    outcomes = [engine.deliver_batch(session, send.id, first, last, ctx) for first, last in ranges]

    assert sum(outcome.sent for outcome in outcomes) == 120
    recipients = Counter(r for item in smtp_server.messages() for r in item.rcpt_tos)
    assert len(recipients) == 120 and set(recipients.values()) == {1}
    session.expire_all()
    assert session.get(Send, send.id).status == "done"
    assert set(session.scalars(select(Delivery.status))) == {"sent"}


def test_one_relay_spent_and_the_other_down_is_a_relay_failure_not_a_hold(
    store: Store, sinks: list[CountingSink]
) -> None:
    sink = sinks[0]
    spent = relay(sink.url, per_day=1)
    pool = RelayPool([spent, dead_relay()], store.open(), rng=random.Random(0))
    with pool.connect() as connection:
        connection.send("a@circulars.test", "p0@example.org", MESSAGE)
    with pytest.raises(ConnectionFailed) as failed:
        pool.connect()
    assert f"relay {spent.label}: daily limit of 1 reached" in failed.value.reply
    assert not isinstance(failed.value, RelayLimited)
