"""Bring a database's schema up to date: ``smsgw migrate`` and ``make run`` call this."""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config

from api import db

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # alembic's config is an INI file underneath: a % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", db.connect_url(url).replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    path = db.sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as connection:
            for pragma in db.sqlite_pragmas():
                connection.execute(pragma)
    command.upgrade(alembic_config(url), "head")



@functools.cache
def revisions() -> tuple[str, tuple[str, ...]]:
    """This code's newest schema revision, and every revision it knows (``/readyz``
    compares the database's with them)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS))
    return script.get_current_head(), tuple(r.revision for r in script.walk_revisions())
