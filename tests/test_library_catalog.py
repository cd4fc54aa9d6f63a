"""The catalog's schema comes from Alembic migrations, on SQLite and on PostgreSQL."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from echovids.schemas import ClipEmbedded, EmbeddingSpace
from tests.conftest import EXTERNAL_REDIS

ROOT = Path(__file__).resolve().parents[1]
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_available() -> bool:
    try:
        with create_engine(POSTGRES).connect() as c:
            c.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, empty catalog database: SQLite in tmp_path, or a PostgreSQL schema of this test's own."""
    from echovids.settings import get_settings

    monkeypatch.setenv("ECHOVIDS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ECHOVIDS_REDIS_URL", EXTERNAL_REDIS)  # a claim of content takes a lock there
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    else:
        if not postgres_available():
            pytest.skip("no PostgreSQL at 127.0.0.1:5432")
        schema = f"t_{uuid.uuid4().hex[:12]}"
        admin = create_engine(POSTGRES)
        with admin.begin() as c:
            c.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{POSTGRES}?options=-csearch_path%3D{schema}"
    monkeypatch.setenv("ECHOVIDS_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()
    from echovids import catalog

    catalog._engine(url).dispose()
    if schema:
        with admin.begin() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    from echovids.catalog import MIGRATIONS_DIR, alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() or str(MIGRATIONS_DIR)


def current_revision(url: str) -> str | None:
    engine = create_engine(url)
    with engine.connect() as c:
        rows = c.execute(text("SELECT version_num FROM alembic_version")).all()
    engine.dispose()
    return rows[0][0] if rows else None


def test_schema_is_migrated_to_head_on_first_use(database: str) -> None:
    from echovids import catalog

    engine = catalog.get_engine()
    assert current_revision(database) == head_revision() == "0003"
    columns = {c["name"] for c in inspect(engine).get_columns("clips")}
    assert {"file_sha256", "job_id", "duplicate_of", "content_hash", "labels", "space", "shard"} <= columns
    # The model and the migrations agree: an autogenerate diff is empty.
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), catalog.Base.metadata)
    assert diff == []


def test_migrations_go_down_and_up_again(database: str) -> None:
    from alembic import command

    from echovids import catalog

    engine = catalog.get_engine()
    with engine.begin() as c:
        config = catalog.alembic_config(database)
        config.attributes["connection"] = c
        command.downgrade(config, "base")
    assert "clips" not in inspect(engine).get_table_names()
    catalog.migrate(engine)
    assert current_revision(database) == "0003"


def test_a_catalog_made_before_migrations_is_stamped_and_upgraded(database: str) -> None:
    """A catalog that create_all made (no alembic_version) keeps its rows and gains the new columns."""
    from echovids import catalog

    engine = create_engine(database)
    catalog.migrate(engine, "0001")
    with engine.begin() as c:
        c.execute(text("DROP TABLE alembic_version"))
        c.execute(
            text(
                "INSERT INTO clips (id, title, source_kind, labels, shard, n_frames, status, created_at) "
                "VALUES ('old', 'an old clip', 'file', '[]', 0, 3, 'ready', CURRENT_TIMESTAMP)"
            )
        )
    engine.dispose()
    assert catalog.get_clip("old").title == "an old clip"
    assert catalog.get_clip("old").file_sha256 is None
    assert catalog.get_clip("old").attempts == 0 and catalog.get_clip("old").error_code is None
    assert current_revision(database) == "0003"


def _migrate_in_child(url: str, data_dir: str) -> None:
    import os

    os.environ["ECHOVIDS_DATABASE_URL"] = url
    os.environ["ECHOVIDS_DATA_DIR"] = data_dir
    from echovids import catalog

    catalog.get_engine()


def test_processes_starting_together_migrate_once(database: str, tmp_path: Path) -> None:
    """`echovids serve` starts four processes at once; each upgrades on start without tripping on the others."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_migrate_in_child, args=(database, str(tmp_path / "data"))) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert current_revision(database) == "0003"


def test_migrations_run_from_any_directory(database: str, tmp_path: Path) -> None:
    """No alembic.ini and no relative paths: a process started elsewhere migrates the same way."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = "from echovids import catalog; catalog.get_engine(); print('ok')"
    env = {
        "ECHOVIDS_DATABASE_URL": database,
        "ECHOVIDS_DATA_DIR": str(tmp_path / "d2"),
        "PYTHONPATH": str(ROOT),
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert current_revision(database) == "0003"


def _embedded(clip_id: str, content_hash: str, model: str = "yamnet") -> ClipEmbedded:
    return ClipEmbedded(
        clip_id=clip_id,
        space=EmbeddingSpace(model=model, version="1", dim=4),
        n_frames=3,
        duration_s=1.5,
        content_hash=content_hash,
        labels=["Dog"],
    )


def test_same_decoded_audio_is_marked_duplicate_once(database: str) -> None:
    from echovids import catalog

    with catalog.session() as s:
        for cid in ("a", "b", "c", "d"):
            s.add(catalog.Clip(id=cid, title=cid, source_kind="file", labels=[], shard=0, status="pending"))
    assert catalog.claim_content("a", _embedded("a", "h1")) is None
    catalog.mark_ready("a", _embedded("a", "h1"))
    assert catalog.claim_content("b", _embedded("b", "h1")) == "a"
    assert catalog.get_clip("b").status == "duplicate"
    assert catalog.claim_content("b", _embedded("b", "h1")) == "a"  # a retried task decides the same
    assert catalog.claim_content("c", _embedded("c", "h2")) is None  # other audio
    assert catalog.claim_content("d", _embedded("d", "h1", model="vggish")) is None  # other space


def test_two_copies_claimed_later_one_first_keep_one(database: str) -> None:
    """Two copies being indexed at once, the later-made one first to claim (as claims are taken, one at a time):
    the earlier-made one, finding it, is the duplicate. (Deciding by creation order kept both.)"""
    from echovids import catalog

    with catalog.session() as s:
        for cid in ("first-made", "second-made"):
            s.add(catalog.Clip(id=cid, title=cid, source_kind="file", labels=[], shard=0, status="pending"))
    assert catalog.claim_content("second-made", _embedded("second-made", "h1")) is None
    assert catalog.claim_content("first-made", _embedded("first-made", "h1")) == "second-made"
    assert [catalog.get_clip(c).status for c in ("first-made", "second-made")] == ["duplicate", "pending"]


def test_a_file_hash_finds_its_clip(database: str) -> None:
    from echovids import catalog

    with catalog.session() as s:
        s.add(
            catalog.Clip(
                id="f1", title="x", source_kind="file", labels=["Dog"], shard=0, status="failed", file_sha256="abc"
            )
        )
        s.add(
            catalog.Clip(
                id="f2", title="x", source_kind="file", labels=["Dog"], shard=0, status="ready", file_sha256="abc"
            )
        )
    found = catalog.find_by_file_hash("abc")
    assert found is not None and found.id == "f2"
    assert catalog.find_by_file_hash("nope") is None
