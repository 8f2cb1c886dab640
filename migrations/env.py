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
    # The trigram indexes exist on PostgreSQL only, made by migration 0003; not in the models.
    return not (type_ == "index" and reflected and name is not None and name.endswith("_trgm"))


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
