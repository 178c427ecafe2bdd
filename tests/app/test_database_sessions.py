"""The PostgreSQL sessions Quire opens (app/db.py): a host cut off mid-transaction must not hold
its row locks for TCP's two-hour default."""

from __future__ import annotations

from sqlalchemy import text

from app.db import make_engine


def test_postgresql_ends_a_silent_clients_session_within_a_minute(postgres_url: str) -> None:
    """Both ends of each session probe a silent peer: the server after 30 s of silence, three
    probes 10 s apart, then it ends the session and its transaction's locks go with it."""
    engine = make_engine(postgres_url)
    with engine.connect() as connection:
        server = {
            name: connection.execute(text(f"SHOW {name}")).scalar_one()
            for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
        }
        client = connection.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
    assert server == {
        "tcp_keepalives_idle": "30",
        "tcp_keepalives_interval": "10",
        "tcp_keepalives_count": "3",
    }
    assert {key: client.get(key) for key in ("keepalives", "keepalives_idle")} == {
        "keepalives": "1",
        "keepalives_idle": "30",
    }
    engine.dispose()
