"""Fixtures: the two stacks (SQLite + embedded broker, PostgreSQL + Redis), a real SMTP
server on loopback, a real Celery worker process, and the Flask app, client and runner.

Tests that take `app` run once per stack. A stack whose services are absent is
skipped locally; with CI=true it fails the run instead.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from flask.testing import FlaskClient
from sqlalchemy import delete, text

PROJECT_ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get(
    "TEST_DATABASE_URL_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
# Databases 9..15 are handed out one per test run, so runs side by side on one
# machine never share a broker queue (a worker of one run would eat the other's tasks).
REDIS_TEST_DBS = range(9, 16)
ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts"


def service_missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is not available; CI requires it", pytrace=False)
    pytest.skip(f"{what} is not available here")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- SMTP ---------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


@dataclass
class SmtpSink:
    """A real SMTP server in the test process; tests can make it refuse some recipients."""

    host: str
    port: int
    received: list[Received] = field(default_factory=list)
    reject: dict[str, str] = field(default_factory=dict)  # address -> permanent reply
    defer: dict[str, int] = field(default_factory=dict)  # address -> how many 451s first
    delay: float = 0.0  # seconds each message takes to be accepted (a slow relay)
    refuse_all: str | None = None  # a reply (e.g. "421 ...") to every recipient, while set
    # Called with each message's envelope once its content is in, before the relay answers:
    # what a test checks (or does) at the moment the relay takes a message.
    on_data: Callable[[Any], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def reset(self) -> None:
        with self.lock:
            self.received.clear()
            self.reject.clear()
            self.defer.clear()
            self.delay = 0.0
            self.refuse_all = None
            self.on_data = None

    def messages(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def wait_for(self, count: int, timeout: float = 60) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.messages()
            if len(got) >= count:
                return got
            time.sleep(0.1)
        raise AssertionError(f"expected {count} messages, got {len(self.messages())}")

    # aiosmtpd handler hooks
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        with self.lock:
            if self.refuse_all is not None:
                return self.refuse_all
            if address in self.reject:
                return self.reject[address]
            if self.defer.get(address, 0) > 0:
                self.defer[address] -= 1
                return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.on_data is not None:
            self.on_data(envelope)
        with self.lock:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
        return "250 Message accepted"


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpSink]:
    sink = SmtpSink("127.0.0.1", free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port, enable_SMTPUTF8=True)
    controller.start()
    yield sink
    controller.stop()


# --- stacks -------------------------------------------------------------------------------


def _pg_admin_dsn() -> str:
    return PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")


def _postgres_available() -> bool:
    import psycopg

    try:
        with psycopg.connect(_pg_admin_dsn(), connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping())
    except redis.RedisError:
        return False


def _claim_redis_db(request: pytest.FixtureRequest) -> str:
    """A Redis database of our own for this run (see REDIS_TEST_DBS); released at the end."""
    import redis

    if "TEST_REDIS_URL" in os.environ:
        return REDIS_URL
    base = REDIS_URL.rsplit("/", 1)[0]
    locks = redis.Redis.from_url(f"{base}/0")
    for number in REDIS_TEST_DBS:
        key = f"circulars-test-run:{number}"
        if locks.set(key, os.getpid(), nx=True, ex=1800):
            request.addfinalizer(lambda key=key: locks.delete(key))
            return f"{base}/{number}"
    pytest.fail("every Redis test database (9-15) is taken by another test run", pytrace=False)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, smtp_server: SmtpSink
) -> Iterator[dict[str, str]]:
    """The settings of one stack, as environment variables for the app and the worker."""
    instance = tmp_path_factory.mktemp(f"instance-{request.param}")
    env = {
        "INSTANCE_PATH": str(instance),
        "SECRET_KEY": secrets.token_urlsafe(32),
        "SMTP_URL": smtp_server.url,
        "BASE_URL": "http://circulars.test",
        "MAIL_FROM": "secretariat@circulars.test",
        "ORG_NAME": "Migrant Rights Network",
        "SEND_RETRY_DELAY": "1",
        "SEND_BATCH_SIZE": "50",
        "MAX_UPLOAD_SIZE": "2MB",
        "LOG_LEVEL": "WARNING",
    }
    if request.param == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{instance / 'circulars.db'}"
        env["CELERY_BROKER_URL"] = f"sqla+sqlite:///{instance / 'broker.db'}"
        env["STACK"] = "sqlite"
        yield env
        return

    if not _postgres_available():
        service_missing(f"PostgreSQL at {PG_ADMIN_URL}")
    if not _redis_available():
        service_missing(f"Redis at {REDIS_URL}")
    import psycopg
    import redis

    redis_url = _claim_redis_db(request)
    redis.Redis.from_url(redis_url).flushdb()
    name = f"circulars_test_{secrets.token_hex(4)}"
    with psycopg.connect(_pg_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    env["DATABASE_URL"] = f"{base}/{name}"
    env["CELERY_BROKER_URL"] = redis_url
    env["STACK"] = "postgres"
    yield env
    with psycopg.connect(_pg_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def _app(stack: dict[str, str]) -> Iterator[Any]:
    from flask_migrate import upgrade

    from circulars import create_app

    app = create_app(stack)
    app.config["TESTING"] = True
    with app.app_context():
        upgrade()
    yield app
    from circulars.extensions import db

    db.session.remove()
    assert db.engine is not None
    db.engine.dispose()


def _empty_tables(app: Any) -> None:
    from circulars.extensions import db
    from circulars.models import Base

    db.session.remove()
    assert db.engine is not None
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} CASCADE"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(delete(table))
        conn.execute(text("INSERT INTO counters (name, value) VALUES ('circular', 0)"))


@pytest.fixture
def app(_app: Any, smtp_server: SmtpSink) -> Iterator[Any]:
    """The app of the current stack, with empty tables before each test."""
    _empty_tables(_app)
    smtp_server.reset()
    from circulars.extensions import limiter

    if limiter.enabled:
        limiter.reset()  # rate-limit counters (subscribe per IP, confirmation cap) start at zero
    with _app.app_context():
        yield _app
    from circulars.extensions import db

    db.session.remove()


class IsolatedClient(FlaskClient):
    """A test client whose every request runs as in production: in its own app context,
    with its own `g` (where Flask-Login keeps the signed-in user) and database session.

    The `app` fixture keeps one app context pushed for the whole test, and Flask reuses
    it for requests made in the same thread, so without this every request would share
    the test's session (stale relationships) and `g` (a cookie-less client would be
    served as whoever signed in before). Each request therefore runs in a thread of its
    own; the test's transaction is committed first (SQLite admits one writer at a time)
    and the test's objects are expired afterwards, so they show what the request stored.
    """

    def open(self, *args: Any, **kwargs: Any) -> Any:
        _db().session.commit()
        kwargs.setdefault("buffered", True)
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["response"] = FlaskClient.open(self, *args, **kwargs)
            except BaseException as exc:  # re-raised in the test's thread
                outcome["error"] = exc

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        _db().session.expire_all()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["response"]


def _db() -> Any:
    from circulars.extensions import db

    return db


@pytest.fixture
def client(app: Any) -> IsolatedClient:
    return IsolatedClient(app, app.response_class)


@pytest.fixture
def fresh_client(app: Any) -> IsolatedClient:
    """A client with no cookies, as a mail provider's one-click POST arrives."""
    return IsolatedClient(app, app.response_class, use_cookies=False)


@pytest.fixture
def enqueued(app: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    """Tasks handed to Celery, recorded instead of queued.

    No stray task then outlives the test and reaches a worker started later, where
    SQLite's reused ids could make it act on another test's rows.
    """
    calls: list[tuple[str, tuple[Any, ...]]] = []

    def record(name: str, args: tuple[Any, ...] = (), **_options: Any) -> None:
        calls.append((name, tuple(args)))

    monkeypatch.setattr(app.extensions["celery"], "send_task", record)
    return calls


@pytest.fixture
def runner(app: Any) -> Any:
    from circulars.cli import main

    cli_runner = app.test_cli_runner()

    class Runner:
        def invoke(self, args: list[str], **kwargs: Any) -> Any:
            return cli_runner.invoke(main, args, catch_exceptions=False, **kwargs)

    return Runner()


@pytest.fixture
def session(app: Any) -> Any:
    from circulars.extensions import db

    return db.session


# --- helpers ------------------------------------------------------------------------------

CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def csrf_token(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


class Auth:
    def __init__(self, client: Any, session: Any) -> None:
        self.client = client
        self.session = session

    def create_user(
        self,
        email: str = "editor@example.org",
        role: str = "admin",
        password: str = "correct horse battery",
    ) -> Any:
        from circulars.accounts import create_user

        user = create_user(self.session, email, password, role)
        self.session.commit()
        return user

    def login(
        self, email: str = "editor@example.org", password: str = "correct horse battery"
    ) -> Any:
        page = self.client.get("/admin/login")
        return self.client.post(
            "/admin/login",
            data={"email": email, "password": password, "csrf_token": csrf_token(page.text)},
        )

    def post_form(self, page_url: str, url: str, data: dict[str, Any], **kwargs: Any) -> Any:
        """Submit a form as a browser does: with the CSRF token from the page that shows it."""
        page = self.client.get(page_url)
        assert page.status_code == 200, page.status_code
        return self.client.post(url, data={**data, "csrf_token": csrf_token(page.text)}, **kwargs)


@pytest.fixture
def auth(client: Any, session: Any) -> Auth:
    return Auth(client, session)


# --- a real worker ------------------------------------------------------------------------


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int = 2) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.concurrency = concurrency
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> None:
        with self.log_path.open("ab") as log:
            self.process = self._spawn(log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited:\n{self.log_path.read_text()[-3000:]}")
            if re.search(r"celery@\S+ ready\.", self.log_path.read_text(errors="replace")):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the worker did not start:\n{self.log_path.read_text()[-3000:]}")

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(self.concurrency),
                "--without-gossip",
                "--without-mingle",
                "--pool",
                "prefork",
            ],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture(scope="session")
def worker(
    stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A real Celery worker process for the current stack, started once per stack."""
    log = tmp_path_factory.mktemp("worker") / f"worker-{stack['STACK']}.log"
    process = WorkerProcess(stack, log)
    process.start()
    yield process
    process.stop()


# --- a real browser (Chromium through Playwright) and the app on a real port --------------

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        service_missing("Chromium (Debian package chromium)")
    return str(path)


@pytest.fixture
def live_server(app: Any) -> Iterator[str]:
    """The app of the current stack served on a loopback port, for the browser."""
    from werkzeug.serving import make_server

    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        yield instance
        instance.close()
