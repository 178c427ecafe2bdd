"""Bring the database schema up to date: ``python -m app.migrate`` (run before API and workers)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from app.config import get_settings

MIGRATIONS = Path(__file__).parent / "migrations"
# The PostgreSQL advisory lock an upgrade holds for its transaction (app/migrations/env.py):
# two upgrades at once (a Job's pod replaced while the first still runs, one started by hand)
# take turns, and the second finds the schema at head, instead of failing half-way on tables
# the first one is creating. SQLite serialises writers by itself.
MIGRATION_LOCK = 0x7175_6972_652D_6D67  # "quire-mg" in ASCII: a key no other code takes


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    return config


def upgrade(url: str | None = None) -> None:
    command.upgrade(alembic_config(url or get_settings().resolved_database_url), "head")


if __name__ == "__main__":
    upgrade()
