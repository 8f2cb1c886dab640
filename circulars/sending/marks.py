"""Recording each delivery's outcome the moment the relay answers, without waiting on it.

The rule the engine keeps: a message is recorded as sent once the relay has
accepted it, and the next message is not handed to the relay before that
record is committed. A crash therefore leaves at most the message in flight
on each connection accepted but unrecorded (sent again later), and never
records a message the relay did not take.

Committing one UPDATE per message through the ORM session cost about 2 ms a
message on PostgreSQL (`bench/send_throughput.py`, docs/benchmarks.md): the
pool's pre-ping, BEGIN, UPDATE and COMMIT are four round trips, and the
commit waits for the WAL flush. `PipelinedMarks` sends each mark as one
autocommit statement (a prepared plan, one round trip, still flushed to disk
before it counts) on a connection of its own, from a helper thread, so the
flush overlaps with building and signing the next message; `confirm()`, which
the engine calls before handing over the next message, waits for it. The
durability and the crash bound are the ones above: only the waiting moved.

`SessionMarks` does the same synchronously through the session, for SQLite,
where a commit is cheap and one writer at a time is the rule.
"""

from __future__ import annotations

import enum
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, bindparam, update
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session

from ..models import Delivery


class Marks(Protocol):
    def record(self, delivery_id: int, **values: object) -> None:
        """Write `values` on the delivery; committed before the next `confirm()` returns."""

    def confirm(self) -> None:
        """Block until every recorded mark is committed; raises if one could not be."""

    def close(self) -> None: ...


class SessionMarks:
    """One UPDATE and commit per mark through the session, done before `record` returns."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def record(self, delivery_id: int, **values: object) -> None:
        self.session.execute(update(Delivery).where(Delivery.id == delivery_id).values(**values))
        self.session.commit()

    def confirm(self) -> None:
        pass

    def close(self) -> None:
        pass


def _plain(value: object) -> object:
    # Statuses are StrEnums; the driver is given their text, as the ORM would write it.
    return value.value if isinstance(value, enum.Enum) else value


class PipelinedMarks:
    """PostgreSQL: each mark one autocommit UPDATE on a connection of its own, from a thread.

    At most one mark is outstanding when the engine follows the rule (confirm
    before each send), so the order of marks is the order of acceptance.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._raw: Any = connection.connection.driver_connection
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="delivery-marks")
        self._pending: list[Future[None]] = []
        self._sql: dict[tuple[str, ...], str] = {}

    def _statement(self, keys: tuple[str, ...]) -> str:
        sql = self._sql.get(keys)
        if sql is None:
            statement = (
                update(Delivery)
                .where(Delivery.id == bindparam("delivery_id"))
                .values({key: bindparam(key) for key in keys})
            )
            sql = self._sql[keys] = str(statement.compile(dialect=self._connection.dialect))
        return sql

    def _run(self, sql: str, params: dict[str, object]) -> None:
        import psycopg

        try:
            # psycopg prepares a statement after a few executions: then a mark is
            # one Bind/Execute round trip and no parsing or planning.
            with self._raw.cursor() as cursor:
                cursor.execute(sql, params)
        except psycopg.OperationalError as exc:
            raise OperationalError(sql, params, exc) from exc
        except psycopg.Error as exc:
            raise DatabaseError(sql, params, exc) from exc

    def record(self, delivery_id: int, **values: object) -> None:
        params = {key: _plain(value) for key, value in values.items()}
        params["delivery_id"] = delivery_id
        self._pending.append(self._pool.submit(self._run, self._statement(tuple(values)), params))

    def confirm(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        try:
            self.confirm()
        finally:
            self._pool.shutdown(wait=True)
            self._connection.close()


def marks_for(session: Session) -> Marks:
    """Pipelined marks on PostgreSQL, the session's own on anything else."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql" or not isinstance(bind, Engine):
        return SessionMarks(session)
    connection = bind.connect().execution_options(isolation_level="AUTOCOMMIT")
    return PipelinedMarks(connection)
