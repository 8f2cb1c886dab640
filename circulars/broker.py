"""The embedded broker: kombu's SQLAlchemy transport, tuned for a SQLite file.

kombu hands every transport option to create_engine, so its polling interval
cannot be set through options, and its engine uses pysqlite's 5 s lock
time-out, too short when web, worker and beat share the file. This subclass
fixes both without changing how the transport stores messages.

It also gives each thread its own session. kombu's channel keeps one session
for all threads, but a Celery worker uses its channel from two: the consumer
polls in the main thread while the pool's result thread requeues the task of
a pool process that died (SIGKILL, the OOM killer). Sharing one session there
broke it ("This transaction is closed"), the requeue failed ("UNABLE TO
RESTORE"), and the worker stopped taking tasks.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import sqlalchemy as kombu_sqla
from kombu.transport.virtual import Empty
from sqlalchemy import event

POLLING_INTERVAL = 0.1


class Channel(kombu_sqla.Channel):  # type: ignore[misc]
    def __init__(self, connection: Any, **kwargs: Any) -> None:
        self._sessions = threading.local()
        self._lock = threading.RLock()
        super().__init__(connection, **kwargs)

    def _get(self, queue: str) -> Any:
        with self._serialised():
            return super()._get(queue)

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        with self._serialised():
            super()._put(queue, payload, **kwargs)

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        with self._serialised():
            super()._new_queue(queue, **kwargs)

    def _purge(self, queue: str) -> Any:
        with self._serialised():
            return super()._purge(queue)

    def _size(self, queue: str) -> Any:
        with self._serialised():
            return super()._size(queue)

    @contextmanager
    def _serialised(self) -> Iterator[None]:
        """One statement at a time per process, and a session left usable after an error.

        kombu commits without rolling back when the commit fails (a busy file, a
        broken connection), which leaves the session refusing every later query
        ("prepared state"): the worker then stops for good.
        """
        with self._lock:
            try:
                yield
            except Empty:
                raise
            except Exception:
                self.session.rollback()
                raise

    @property
    def session(self) -> Any:
        session = getattr(self._sessions, "session", None)
        if session is None:
            _, session_factory = self._open()
            session = self._sessions.session = session_factory()
        return session

    def _engine_from_config(self) -> Any:
        conninfo = self.connection.client
        url = conninfo.hostname
        engine = kombu_sqla.create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine


class Transport(kombu_sqla.Transport):  # type: ignore[misc]
    Channel = Channel
    polling_interval = POLLING_INTERVAL


def celery_broker_options(broker_url: str) -> dict[str, str]:
    """Celery settings for a broker URL: `sqla+sqlite://` goes to this transport.

    kombu refuses import paths inside URLs, so the transport is named in
    `broker_transport` and the URL keeps only the database part. The read and
    write URLs are set as well: Celery takes the `CELERY_BROKER_URL` environment
    variable (our setting's name too) over `broker_url`, and kombu takes the
    `sqla+` of that URL over `broker_transport`, which silently ran every worker
    started with the variable set on kombu's own channel.
    """
    if broker_url.startswith("sqla+sqlite://"):
        url = broker_url.removeprefix("sqla+")
        return {
            "broker_url": url,
            "broker_read_url": url,
            "broker_write_url": url,
            "broker_transport": f"{__name__}:Transport",
        }
    return {"broker_url": broker_url}
