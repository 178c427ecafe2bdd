"""Alembic environment: the URL comes from Quire's settings, the metadata from app.models."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from app.db import make_engine
from app.migrate import MIGRATION_LOCK
from app.models import Base

config = context.config


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Before Alembic reads the current revision: a second upgrade waits here, then sees
            # the first one's committed head and has nothing to do (app.migrate.MIGRATION_LOCK).
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as new_connection:
        run(new_connection)
    engine.dispose()
