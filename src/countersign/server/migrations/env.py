"""alembic environment: the engine comes from the server, never from an ini file.

Every instance migrates on start, possibly at the same moment as another one, so
the whole upgrade is one transaction that first takes a database-wide lock:
SQLite ``BEGIN IMMEDIATE`` (the write lock), PostgreSQL a transaction-scoped
advisory lock. The second instance then finds the schema at head and does nothing.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import func, select

from countersign.server.schema import metadata

# an arbitrary 64-bit key, the same in every countersign instance
MIGRATION_LOCK = 0x2C0D_5E1F_6A3B_9477

engine = context.config.attributes["engine"]
sqlite = engine.dialect.name == "sqlite"
with engine.connect() as connection:
    if sqlite:
        connection.execution_options(immediate=True)  # BEGIN IMMEDIATE (storage.py)
    connection.begin()
    if engine.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=sqlite)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
