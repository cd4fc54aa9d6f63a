"""The durable catalog of library clips (SQLAlchemy 2; SQLite by default, any URL via a setting)."""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from sqlalchemy import JSON, DateTime, Float, Integer, String, create_engine, event, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from echovids import clip_audio
from echovids.errors import NotFound
from echovids.redis_conn import get_redis
from echovids.schemas import ClipEmbedded, ClipStatus, Source
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
    # A ClipStatus; duplicate: the same decoded audio as `duplicate_of`, not indexed twice.
    status: Mapped[str] = mapped_column(String(16), default=ClipStatus.pending, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: datetime.now(UTC), index=True)
    # sha256 of the uploaded file's bytes: lets a bulk ingest skip a file before decoding or embedding it.
    file_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    # The job processing the clip; written only once its tasks were sent (see pipeline.submit_clip).
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    duplicate_of: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Durable bookkeeping of failures (Redis may be flushed or lost): how often the clip's embedding started
    # (a clip that kills its worker is redelivered; after `library_max_attempts` it fails), how often the
    # upkeep re-sent it, and the coded error it failed with.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    resubmissions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(String(1024), nullable=True)


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
    _migrate_once(engine)
    return engine


# -- schema: Alembic migrations (echovids/migrations), applied on start, once per process ----------------------
MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
_BASELINE = "0001"  # the schema create_all made before there were migrations
_PG_LOCK_KEY = 0x6563686F  # "echo": serialises concurrent upgrades of one PostgreSQL database


def alembic_config(url: str):  # type: ignore[no-untyped-def]
    """An Alembic Config built in code (no alembic.ini): works from any cwd and from an installed package."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # configparser interpolates %
    return config


@contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    """SQLite: processes that start together (serve starts four) migrate one at a time."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the catalog's schema to ``revision``; safe when several processes start at once."""
    from alembic import command

    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with _file_lock(engine), engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        config.attributes["connection"] = connection
        tables = set(inspect(connection).get_table_names())
        if "clips" in tables and "alembic_version" not in tables:
            command.stamp(config, _BASELINE)  # a catalog made by create_all, before migrations
        command.upgrade(config, revision)


@lru_cache(maxsize=8)
def _migrate_once(engine: Engine) -> None:
    migrate(engine)


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


def clips_with_status(status: ClipStatus) -> list[tuple[str, int]]:
    """(id, shard) of every clip in this state."""
    with session() as s:
        return [(row.id, row.shard) for row in s.execute(select(Clip.id, Clip.shard).where(Clip.status == status))]


def clip_ids_where(
    shard: int, source: str | None = None, min_duration_s: float | None = None, max_duration_s: float | None = None
) -> set[str]:
    """The ids of a shard's clips of this source kind and duration (a search's filters a segment cannot apply)."""
    query = select(Clip.id).where(Clip.shard == shard)
    if source is not None:
        query = query.where(Clip.source_kind == source)
    if min_duration_s is not None:
        query = query.where(Clip.duration_s >= min_duration_s)
    if max_duration_s is not None:
        query = query.where(Clip.duration_s <= max_duration_s)
    with session() as s:
        return set(s.scalars(query))


def set_status(clip_id: str, status: ClipStatus) -> None:
    with session() as s:
        clip = s.get(Clip, clip_id)
        if clip is not None:
            clip.status = status


def mark_failed(clip_id: str, code: str, message: str) -> None:
    """A clip that will not be indexed, and why; the upkeep never sends a failed clip again, so its stored audio
    (kept to index it again) goes: what is left is the listing's row and its error."""
    with session() as s:
        clip = s.get(Clip, clip_id)
        if clip is None or clip.status not in (ClipStatus.pending, ClipStatus.failed):
            return
        clip.status, clip.error_code, clip.error_message = ClipStatus.failed, code, message[:1024]
    clip_audio.delete(clip_id)


def is_settled(clip_id: str) -> bool:
    """Whether the clip is indexed (``ready``) or kept as another's ``duplicate``: its processing is over."""
    with session() as s:
        clip = s.get(Clip, clip_id)
        return clip is not None and clip.status in (ClipStatus.ready, ClipStatus.duplicate)


def start_attempt(clip_id: str) -> int | None:
    """Count one more start of the clip's processing; returns the count (None: the clip is gone)."""
    with session() as s:
        clip = s.get(Clip, clip_id)
        if clip is None:
            return None
        clip.attempts = (clip.attempts or 0) + 1
        return clip.attempts


def mark_ready(clip_id: str, info: ClipEmbedded) -> None:
    with session() as s:
        clip = s.get(Clip, clip_id)
        if clip is None:
            raise NotFound(f"No clip with id {clip_id!r}.")
        clip.status = ClipStatus.ready
        clip.error_code = clip.error_message = None
        clip.duration_s = info.duration_s
        clip.content_hash = info.content_hash
        clip.space = info.space.key
        clip.n_frames = info.n_frames
        if not clip.labels:
            clip.labels = info.labels


def find_by_file_hash(file_sha256: str) -> Clip | None:
    """The clip made from a file with exactly these bytes (failed ones last), or None."""
    with session() as s:
        clips = list(s.scalars(select(Clip).where(Clip.file_sha256 == file_sha256)))
    order: dict[str, int] = {ClipStatus.ready: 0, ClipStatus.duplicate: 1, ClipStatus.pending: 2, ClipStatus.failed: 3}
    return min(clips, key=lambda c: (order.get(c.status, 9), c.created_at), default=None)


CLAIM_LOCK_S = 60  # a claim takes milliseconds; a process that died holding the lock frees it after this


def claim_content(clip_id: str, info: ClipEmbedded) -> str | None:
    """At index time: record the clip's decoded-audio hash, and when another clip of the same space already has the
    same audio (ready, or being indexed: pending with its hash recorded), mark this one ``duplicate`` (not indexed
    twice) and return the earliest such clip's id.

    Clips of one audio claim it one at a time (a Redis lock on the hash), so two copies indexed at the same moment
    on different shards keep exactly one: each could otherwise record its hash and look for the other before the
    other had recorded its own, and both be kept.
    """
    space = info.space.key
    with get_redis().lock(f"echovids:claim:{space}:{info.content_hash}", timeout=CLAIM_LOCK_S), session() as s:
        clip = s.get(Clip, clip_id)
        if clip is None:
            raise NotFound(f"No clip with id {clip_id!r}; it was deleted before it was indexed.")
        if clip.status in (ClipStatus.ready, ClipStatus.duplicate):
            return clip.duplicate_of  # a retried task: decided already
        clip.content_hash = info.content_hash
        clip.space = space
        # Each clip of these decided, under the lock, before this one: the one not a duplicate is the audio's.
        others = s.execute(
            select(Clip.id, Clip.created_at).where(
                Clip.content_hash == info.content_hash,
                Clip.space == space,
                Clip.id != clip_id,
                Clip.status.in_((ClipStatus.ready, ClipStatus.pending)),
            )
        ).all()
        if not others:
            return None
        clip.status = ClipStatus.duplicate
        clip.duplicate_of = min((o.created_at, o.id) for o in others)[1]
        clip.duration_s = info.duration_s
        return clip.duplicate_of


def source_of(clip: Clip, at_s: float = 0.0) -> Source:
    """Where a clip comes from; for YouTube, a link that starts ``at_s`` seconds into the clip."""
    source = Source(
        kind=clip.source_kind,
        file_name=clip.file_name,
        youtube_id=clip.youtube_id,
        start_s=clip.start_s,
        end_s=clip.end_s,
    )
    if clip.youtube_id:
        source.url = f"https://www.youtube.com/watch?v={clip.youtube_id}&t={int((clip.start_s or 0.0) + at_s)}s"
    return source
