"""Engine and session scope: one transaction per request or task, committed on success."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from app import queue
from app.config import get_settings

# TCP keepalives on both ends of every PostgreSQL session. A host cut off (or powered off) in the
# middle of a transaction keeps that transaction's row locks until the server ends its session,
# and the server ends a silent client's session only when TCP gives up on it: after two hours by
# Linux's defaults, during which every writer of those rows (the sweep, the other hosts' records)
# waits. With these the server probes a client silent for 30 s and ends its session after three
# unanswered probes 10 s apart, about a minute, releasing the locks; the client side does the
# same for a server that went away. A live client answers probes from its kernel, whatever it is
# doing, so a long transaction (a PDF uploaded inside its record) is never cut short by them.
POSTGRES_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "options": "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3",
}


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # Several worker processes and the API share one SQLite file: WAL lets readers run beside
        # the one writer, and the busy timeout makes writers queue instead of failing at once.
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        return engine
    # A connect timeout, so an unreachable server fails a readiness probe instead of hanging it.
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        connect_args={"connect_timeout": 10, **POSTGRES_KEEPALIVES},
    )


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().resolved_database_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


def check_database() -> None:
    """Raise when the database cannot be reached (readiness probe)."""
    with get_engine().connect() as connection:
        connection.execute(text("SELECT 1"))


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session whose transaction commits when the block ends and rolls back on error.

    The tasks queued on it (``app.queue.queue_after_commit``) are sent once the commit
    succeeded, after the connection went back to the pool; when it rolls back they are dropped.
    """
    session = get_sessionmaker()()
    sends: list[queue.Send] = []
    session.info[queue.PENDING_SENDS] = sends
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    queue.send_all(sends)
