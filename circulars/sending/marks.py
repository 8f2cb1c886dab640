"""Recording each delivery's outcome the moment the relay answers, without waiting on it.

The rule the engine keeps: a message is recorded as sent once the relay has
accepted it, and the relay may not take the next message on the connection
before that record is committed. A crash therefore leaves at most the message
in flight on each connection accepted but unrecorded (sent again later), and
never records a message the relay did not take.

Committing one UPDATE per message through the ORM session cost about 2 ms a
message on PostgreSQL (docs/benchmarks.md, "Send throughput"): the pool's
pre-ping, BEGIN, UPDATE and COMMIT are four round trips, and the commit waits
for the WAL flush. `PipelinedMarks` sends each mark as one autocommit
statement on a connection of its own and returns at once; the server runs it
and flushes it to disk while the next message is built, signed and
transferred. `confirm()` reads the outcome; the engine has the transport call
it just before the "." that lets the relay take the next message
(`transport.accepting_after`). The durability and the crash bound are
unchanged: only the waiting moved off the path.

`SessionMarks` does the same synchronously through the session, for SQLite,
where a commit is cheap and one writer at a time is the rule.
"""

from __future__ import annotations

import enum
import select
from datetime import datetime
from typing import Any, NoReturn, Protocol

from sqlalchemy import Connection, Engine, update
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session

from ..models import Delivery
from ..models.base import Base


class Marks(Protocol):
    def record(self, delivery_id: int, **values: object) -> None:
        """Write `values` on the row; committed before the next `confirm()` returns."""

    def confirm(self) -> None:
        """Block until every recorded mark is committed; raises if one could not be."""

    def close(self) -> None: ...


class SessionMarks:
    """One UPDATE and commit per mark through the session, done before `record` returns."""

    def __init__(self, session: Session, model: type[Base] = Delivery) -> None:
        self.session = session
        self.table: Any = model.__table__

    def record(self, delivery_id: int, **values: object) -> None:
        self.session.execute(
            update(self.table).where(self.table.c.id == delivery_id).values(**values)
        )
        self.session.commit()

    def confirm(self) -> None:
        pass

    def close(self) -> None:
        pass


def _text(value: object) -> bytes | None:
    """A parameter in PostgreSQL's text format; the server types it from the column."""
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware one")
        return value.isoformat().encode("ascii")
    return str(value).encode("utf-8")


class PipelinedMarks:
    """PostgreSQL: each mark one autocommit UPDATE, sent at once, its outcome read later.

    libpq's asynchronous calls on a connection of its own: `record` sends the
    statement, `confirm` waits for its result (releasing the GIL in `select`).
    One statement is outstanding at a time, so marks commit in the order given.

    Each shape of UPDATE is a prepared statement, so the server parses and
    plans it once per batch instead of once per message (its CPU a mark:
    0.23-0.25 ms -> 0.16-0.18 ms, docs/benchmarks.md). The statements live
    only as long as this object: `close` deallocates them before the
    connection goes back to the pool, where psycopg may `DEALLOCATE ALL`
    after any rollback and other code could meet our names.
    """

    def __init__(self, connection: Connection, model: type[Base] = Delivery) -> None:
        self._connection = connection
        self._table: Any = model.__table__
        self._pg: Any = connection.connection.driver_connection.pgconn  # type: ignore[union-attr]
        self._names: dict[tuple[str, ...], tuple[bytes, bytes]] = {}
        self._outstanding: tuple[bytes, list[bytes | None]] | None = None

    def _statement(self, keys: tuple[str, ...]) -> tuple[bytes, bytes]:
        """(the SQL, the name it is prepared under on this connection)."""
        found = self._names.get(keys)
        if found is None:
            table = self._table
            sets = ", ".join(f"{table.c[key].name} = ${n}" for n, key in enumerate(keys, 1))
            # Names come from the model (an unknown key is a KeyError above); values are parameters.
            where = f"WHERE id = ${len(keys) + 1}"
            sql = f"UPDATE {table.name} SET {sets} {where}".encode("ascii")  # noqa: S608
            name = f"circulars_mark_{len(self._names)}".encode("ascii")
            self._prepare(name, sql)
            found = self._names[keys] = (sql, name)
        return found

    def _prepare(self, name: bytes, sql: bytes) -> None:
        from psycopg import pq

        self._outstanding = (sql, [])
        try:
            result = self._pg.prepare(name, sql)
            if result.error_field(pq.DiagnosticField.SQLSTATE) == _DUPLICATE_PREPARED:
                # Left by a batch that could not clean up: ours, so replace it.
                self._pg.exec_(b"DEALLOCATE " + name)
                result = self._pg.prepare(name, sql)
        except Exception as exc:
            self._fail(exc)
        if result.status != pq.ExecStatus.COMMAND_OK:
            message, lost = _error_of(result)
            self._fail(RuntimeError(message), connection_lost=lost)
        self._outstanding = None

    def record(self, delivery_id: int, **values: object) -> None:
        self.confirm()
        keys = tuple(values)
        sql, name = self._statement(keys)
        params = [*(_text(values[key]) for key in keys), str(delivery_id).encode("ascii")]
        self._outstanding = (sql, params)
        try:
            self._pg.send_query_prepared(name, params)
            while self._pg.flush():
                select.select([], [self._pg.socket], [])
        except Exception as exc:
            self._fail(exc)

    def confirm(self) -> None:
        if self._outstanding is None:
            return
        from psycopg import pq

        error: tuple[str, bool] | None = None
        try:
            while True:
                while self._pg.is_busy():
                    select.select([self._pg.socket], [], [])
                    self._pg.consume_input()
                result = self._pg.get_result()
                if result is None:
                    break
                if result.status != pq.ExecStatus.COMMAND_OK and error is None:
                    error = _error_of(result)
        except Exception as exc:  # the connection broke while reading
            self._fail(exc)
        if error is not None:
            self._fail(RuntimeError(error[0]), connection_lost=error[1])
        self._outstanding = None

    def _fail(self, exc: Exception, *, connection_lost: bool = True) -> NoReturn:
        sql, params = self._outstanding or (b"", [])
        self._outstanding = None
        if connection_lost:
            self._connection.invalidate()
            raise OperationalError(sql.decode(), params, exc) from exc
        raise DatabaseError(sql.decode(), params, exc) from exc

    def close(self) -> None:
        try:
            self.confirm()
        finally:
            try:
                self._deallocate()
            finally:
                self._connection.close()

    def _deallocate(self) -> None:
        from psycopg import pq

        names, self._names = [name for _, name in self._names.values()], {}
        if not names or self._connection.invalidated:
            return
        try:
            for name in names:
                if self._pg.exec_(b"DEALLOCATE " + name).status != pq.ExecStatus.COMMAND_OK:
                    raise RuntimeError(f"DEALLOCATE {name.decode()} failed")
        except Exception:
            # Never hand the pool a connection that may still hold our names.
            self._connection.invalidate()


def _error_of(result: Any) -> tuple[str, bool]:
    """A failed statement's message, and whether it means the connection is gone."""
    from psycopg import pq

    state = result.error_field(pq.DiagnosticField.SQLSTATE) or b""
    message = result.error_message.decode("utf-8", "replace").strip()
    return message, state[:2].decode("ascii", "replace") in _LOST


#: SQLSTATE duplicate_prepared_statement.
_DUPLICATE_PREPARED = b"42P05"
#: SQLSTATE classes that mean the server or the connection went away: retry later.
_LOST = frozenset({"08", "53", "57", "58"})


def marks_for(session: Session, model: type[Base] = Delivery) -> Marks:
    """Marks on `model`'s rows (a send's deliveries, a digest's): pipelined on PostgreSQL,
    the session's own on anything else."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql" or not isinstance(bind, Engine):
        return SessionMarks(session, model)
    connection = bind.connect().execution_options(isolation_level="AUTOCOMMIT")
    return PipelinedMarks(connection, model)
