"""Engine and session helpers, shared by the API, the workers and the CLI."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

_lock = threading.Lock()
_factories: dict[str, sessionmaker[Session]] = {}


def create_db_engine(url: str, *, pool_size: int = 5) -> Engine:
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")  # readers don't block the writer
            cur.close()

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def session_factory(url: str) -> sessionmaker[Session]:
    """One engine and session factory per database URL and process."""
    with _lock:
        if url not in _factories:
            _factories[url] = sessionmaker(bind=create_db_engine(url), expire_on_commit=False)
        return _factories[url]


def dispose_engines() -> None:
    """Forget pooled connections; called in a worker child after fork (they are not fork-safe)."""
    with _lock:
        for factory in _factories.values():
            engine = factory.kw["bind"]
            engine.dispose(close=False)
        _factories.clear()


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def upsert_insert(session: Session) -> Any:
    """The dialect's `insert` construct, which has ON CONFLICT (Postgres and SQLite alike)."""
    return (postgresql if session.get_bind().dialect.name == "postgresql" else sqlite).insert
