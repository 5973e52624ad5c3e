"""alembic's environment: migrate the database named by the config's URL.

Runs through SQLAlchemy's async engine so the same drivers serve the API and
the migrations (aiosqlite, asyncpg); no second, synchronous driver is needed.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from api import db
from api.tables import metadata


def run_sync_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite's ALTER is limited
        # alembic assumes SQLite cannot roll DDL back and commits after each step;
        # with db.transactional_sqlite_ddl it can, so a run is one transaction.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_async_engine(context.config.get_main_option("sqlalchemy.url"))
    if engine.dialect.name == "sqlite":
        db.transactional_sqlite_ddl(engine)  # one run, one transaction: all of it or nothing
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_sync_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


asyncio.run(run_async_migrations())
