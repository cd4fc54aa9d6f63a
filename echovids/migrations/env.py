"""Alembic environment for the catalog, driven from code (echovids.catalog.migrate) or the alembic CLI.

There is no alembic.ini: ``echovids.catalog.alembic_config(url)`` builds the Config in code, so migrations run
from any working directory and from an installed package. The connection to migrate arrives in
``config.attributes["connection"]``; without one (the alembic CLI), an engine is made from sqlalchemy.url.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from echovids.catalog import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    # Batch mode lets ALTERs work on SQLite too (it copies the table when it must).
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
