"""The embedded broker: kombu's SQLAlchemy transport, tuned for a SQLite file.

kombu hands every transport option to create_engine, so its polling interval
cannot be set through options, and its engine uses pysqlite's 5 s lock
time-out, too short when web, worker and beat share the file. This subclass
fixes both without changing how the transport stores messages.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import sqlalchemy as kombu_sqla
from sqlalchemy import event

POLLING_INTERVAL = 0.1


class Channel(kombu_sqla.Channel):  # type: ignore[misc]
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
    `broker_transport` and the URL keeps only the database part.
    """
    if broker_url.startswith("sqla+sqlite://"):
        return {
            "broker_url": broker_url.removeprefix("sqla+"),
            "broker_transport": f"{__name__}:Transport",
        }
    return {"broker_url": broker_url}
