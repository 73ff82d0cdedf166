"""State of a running service in a real database: SQLAlchemy 2, SQLite (WAL) or PostgreSQL by URL.

Every request works in one transaction (`session_scope`): it commits whole or not at all. The
schema is created and upgraded by Alembic migrations (serve/migrations), never by create_all.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # = the model's dense item index
    external_id: Mapped[str] = mapped_column(String(200), unique=True)
    title: Mapped[str] = mapped_column(String(500), default="")
    text: Mapped[str] = mapped_column(Text, default="")
    fields: Mapped[str] = mapped_column(Text, default="{}")  # JSON of the fields an added item came with
    created_at: Mapped[datetime] = mapped_column(default=_now)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    external_id: Mapped[str] = mapped_column(String(200), unique=True)
    profile_text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=_now)


class Interaction(Base):
    __tablename__ = "interactions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))  # click | like | dislike | rating
    rating: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    __table_args__ = (Index("ix_interactions_user", "user_id"),)


KEY_DAYS = 1  # how long a batch's Idempotency-Key is kept: retries come within seconds, late ones within a day


def keys_expired_before() -> datetime:
    """Idempotency-Keys written before this moment are dropped (a user's, when they next send one)."""
    return _now() - timedelta(days=KEY_DAYS)


class RequestKey(Base):
    """The `Idempotency-Key` of a user's stored batch of events, with the batch's hash: a retry of the same
    request (a client's, or the Ray Serve gateway's after a replica died under it) finds it and stores
    nothing twice. Kept `KEY_DAYS` days; removed with the user."""

    __tablename__ = "request_keys"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    body_sha256: Mapped[str] = mapped_column(String(64))
    stored: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class Deletion(Base):
    """A user deleted on request: when, and a keyed hash of their id (`data.pseudonym.keyed_hash` under
    `Store.deletion_key`) so a later training run can leave them out; never the id, a profile or an event."""

    __tablename__ = "deletions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(64), unique=True)
    deleted_at: Mapped[datetime] = mapped_column(default=_now)


class ServiceMeta(Base):
    """Facts about the database itself (e.g. which catalogue it was built for)."""

    __tablename__ = "service_meta"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def display_url(url: str) -> str:
    """The URL with its password masked, for logs and messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is reported by the engine; never echo it whole
        return url.split("@", 1)[-1] if "@" in url else url


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:  # WAL: readers never block the writer
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # in WAL mode NORMAL still survives any application crash; only a power cut can lose the last commits
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def migrate(url: str) -> None:
    """Bring the database schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        migrate(url)
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time and its busy handler backs off in sleeps of up to 100 ms;
        # queueing writers on a lock in-process is far fairer. PostgreSQL needs no such thing.
        self.write_lock = threading.Lock() if url.startswith("sqlite") else nullcontext()
        self._deletion_key: str | None = None

    def deletion_key(self) -> str:
        """The secret the deletion log hashes user ids with: made once per database, on first use, and kept
        in it (a training run reading the log needs it; whoever can read the database can read it). It never
        changes once made, so it is read once per process."""
        if self._deletion_key is None:
            try:
                with self.session_scope() as s:
                    if s.get(ServiceMeta, "deletion_key") is None:
                        s.add(ServiceMeta(key="deletion_key", value=secrets.token_hex(32)))
            except IntegrityError:  # another replica made it at the same moment: use theirs
                pass
            with self.session_scope() as s:
                self._deletion_key = s.get(ServiceMeta, "deletion_key").value  # type: ignore[union-attr]
        return self._deletion_key

    @contextmanager
    def session_scope(self) -> Iterator[Session]:
        """One transaction: commit on success, roll back everything on any error."""
        session = self.sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


def deleted_subjects(url: str) -> tuple[str, set[str]]:
    """(key, keyed hashes) of the users deleted on request in a service database, for `metarec train
    --forget-from` to leave them out of the next artefact."""
    from sqlalchemy import select

    store = Store(url)
    try:
        key = store.deletion_key()
        with store.session_scope() as s:
            return key, set(s.scalars(select(Deletion.subject)).all())
    finally:
        store.engine.dispose()
