"""Alembic environment: the app's engine and models' metadata; the only source of the schema."""

from __future__ import annotations

from alembic import context
from flask import current_app

config = context.config
migrate_state = current_app.extensions["migrate"]
target_metadata = migrate_state.db.metadata


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    # Search indexes made by migrations 0003 (PostgreSQL trigram indexes) and 0004 (SQLite's
    # FTS5 table and its shadow tables) are not in the models.
    if not reflected or name is None:
        return True
    if type_ == "index" and name.endswith("_trgm"):
        return False
    return not (type_ == "table" and name.startswith("subscribers_fts"))


def run_migrations_offline() -> None:
    context.configure(
        url=str(migrate_state.db.engine.url),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = migrate_state.db.engine
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_object=include_object,
            **migrate_state.configure_args,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
