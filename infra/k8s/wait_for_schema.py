"""Wait until the database schema is the one this image's code expects: the migrate Job's work.

The init container of every long-running Quire pod (api, worker, beat) on Kubernetes. Alembic
migrations are not safe to run from several pods at once, so only the quire-migrate Job runs
``python -m app.migrate``; the other pods wait here until the database carries this image's
Alembic head, instead of starting against a missing table. During a rolling upgrade the new
pods wait for the new Job, while the old pods keep serving.

It also stops (exit 1, saying which) while a setting that only the Secret can give is empty:
without them a pod would quietly use SQLite in its emptyDir, a broker on its own localhost, or a
signing key of its own that no other replica shares.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from app.config import get_settings
from app.logs import configure_logging, get_logger
from app.migrate import alembic_config

REQUIRED = ("QUIRE_DATABASE_URL", "QUIRE_BROKER_URL", "QUIRE_SECRET_KEY")
POLL_SECONDS = 2.0

log = get_logger("quire.k8s")


def missing_settings(environ: Mapping[str, str]) -> list[str]:
    return [name for name in REQUIRED if not environ.get(name, "").strip()]


def main() -> int:
    missing = missing_settings(os.environ)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    # Alembic says which dialect it uses at every connection: once per poll, noise here.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if missing:
        log.error(
            "schema.settings_missing",
            "set them in secret.env (infra/k8s/secret.env.example)",
            missing=",".join(missing),
        )
        return 1
    url = settings.resolved_database_url
    expected = sorted(ScriptDirectory.from_config(alembic_config(url)).get_heads())
    engine = create_engine(url, pool_pre_ping=True)
    while True:
        try:
            with engine.connect() as connection:
                current = sorted(MigrationContext.configure(connection).get_current_heads())
        except Exception as error:  # noqa: BLE001 - the database may not be up yet: wait on
            log.info("schema.waiting", database="unreachable", error=type(error).__name__)
        else:
            if current == expected:
                log.info("schema.ready", revision=",".join(expected))
                return 0
            log.info(
                "schema.waiting",
                "waiting for the quire-migrate Job",
                current=",".join(current) or "none",
                expected=",".join(expected),
            )
        time.sleep(POLL_SECONDS)


if __name__ == "__main__":
    sys.exit(main())
