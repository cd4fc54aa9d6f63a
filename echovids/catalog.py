"""The durable catalog of library clips (SQLAlchemy 2; SQLite by default, any URL via a setting)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache

from sqlalchemy import JSON, DateTime, Float, Integer, String, create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from echovids.errors import NotFound
from echovids.schemas import ClipEmbedded
from echovids.settings import get_settings


class Base(DeclarativeBase):
    pass


class Clip(Base):
    __tablename__ = "clips"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(512))
    source_kind: Mapped[str] = mapped_column(String(16))  # "file" | "youtube"
    file_name: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    youtube_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    start_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    end_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    labels: Mapped[list[str]] = mapped_column(JSON, default=list)
    space: Mapped[str | None] = mapped_column(String(64), nullable=True)
    shard: Mapped[int] = mapped_column(Integer)
    n_frames: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | ready | failed
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.now(timezone.utc)
    )


def shard_of(clip_id: str, shards: int) -> int:
    """Stable across processes and hosts (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(clip_id.encode(), digest_size=8).digest(), "big") % shards


@lru_cache(maxsize=4)
def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _wal(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            # Several worker processes write the same file: WAL lets readers run beside a writer.
            dbapi_connection.execute("PRAGMA journal_mode=WAL")

    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


def get_engine() -> Engine:
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = _engine(settings.database)
    _create_schema(engine)
    return engine


@lru_cache(maxsize=4)
def _create_schema(engine: Engine) -> None:
    Base.metadata.create_all(engine)


@contextmanager
def session() -> Iterator[Session]:
    factory = sessionmaker(get_engine(), expire_on_commit=False)
    with factory() as s, s.begin():
        yield s


def get_clip(clip_id: str) -> Clip:
    with session() as s:
        clip = s.get(Clip, clip_id)
        if clip is None:
            raise NotFound(f"No clip with id {clip_id!r}.")
        return clip


def get_clips(clip_ids: list[str]) -> dict[str, Clip]:
    if not clip_ids:
        return {}
    with session() as s:
        return {c.id: c for c in s.scalars(select(Clip).where(Clip.id.in_(clip_ids)))}


def set_status(clip_id: str, status: str) -> None:
    with session() as s:
        clip = s.get(Clip, clip_id)
        if clip is not None:
            clip.status = status


def mark_ready(clip_id: str, info: ClipEmbedded) -> None:
    with session() as s:
        clip = s.get(Clip, clip_id)
        if clip is None:
            raise NotFound(f"No clip with id {clip_id!r}.")
        clip.status = "ready"
        clip.duration_s = info.duration_s
        clip.content_hash = info.content_hash
        clip.space = info.space.key
        clip.n_frames = info.n_frames
        if not clip.labels:
            clip.labels = info.labels
