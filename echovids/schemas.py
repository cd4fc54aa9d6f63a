"""Pydantic models for every boundary: HTTP bodies and Celery task payloads."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from echovids.audio_params import FRAME_HOP_S


class JobStatus(StrEnum):
    queued = "queued"
    embedding = "embedding"
    searching = "searching"
    checking = "checking"
    done = "done"
    failed = "failed"

    @property
    def settled(self) -> bool:
        return self in (JobStatus.done, JobStatus.failed)


class ClipStatus(StrEnum):
    """A library clip's state in the catalog (stored as its string)."""

    pending = "pending"  # queued or being embedded and indexed
    ready = "ready"  # indexed: it can match
    failed = "failed"
    duplicate = "duplicate"  # the same decoded audio as another clip (`duplicate_of`), not indexed twice


class MatchKind(StrEnum):
    exact = "exact"
    similar = "similar"


class Source(BaseModel):
    kind: str = Field(description="'youtube' or 'file'")
    file_name: str | None = None
    youtube_id: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    url: str | None = Field(default=None, description="For YouTube: a link that starts at the match (t=)")


class ErrorBody(BaseModel):
    code: str
    message: str


class SearchResult(BaseModel):
    clip_id: str
    title: str
    source: Source
    match_start_s: float = Field(description="Where in the library clip the best-matching moment is")
    query_start_s: float = Field(
        description="The moment of the query that plays at match_start_s (match_start_s - query_start_s is where "
        "the query's start lies in the clip); for a similar match, the middle of the stretch that matches best"
    )
    score: float = Field(
        description="How alike the query and the clip sound at the matched moment, in [-1, 1]: mostly the "
        "cosine similarity of their mean embeddings there, partly the frame-by-frame fit. For a search by "
        "text, in [0, 1]: the matched stretch's class scores weighted by the text's classes (text_classes). "
        "Results are ordered exact matches first (this very recording), then by score."
    )
    match: MatchKind = MatchKind.similar
    period_s: float | None = Field(
        default=None,
        description="For an exact match that repeats (a beep pattern, a click train, an engine's cycle): the "
        "spacing of the moments that match alike; match_start_s is the best of them",
    )
    labels: list[str] = Field(default=[], description="AudioSet class names of what the matched moment holds")
    label_ids: list[str] = Field(default=[], description="The same classes as AudioSet ontology ids (/m/...)")
    available: bool | None = None


class SearchFilters(BaseModel):
    """What a result must be, applied inside each shard's search (so k results still come back)."""

    labels: list[str] = Field(
        default=[],
        description="AudioSet class names (as labels shows them); a result's matched moment holds one of them",
    )
    source: Literal["youtube", "file"] | None = None
    min_duration_s: float | None = Field(default=None, ge=0)
    max_duration_s: float | None = Field(default=None, ge=0)

    @property
    def by_clip(self) -> bool:
        """Whether a filter needs the catalog (what a segment does not know: source, duration)."""
        return self.source is not None or self.min_duration_s is not None or self.max_duration_s is not None


class TextClass(BaseModel):
    """One AudioSet class a description was read as, with its share of the description."""

    id: str = Field(description="AudioSet ontology id (/m/...)")
    name: str
    weight: float = Field(description="The class's weight in the description's mixture (they sum to 1)")


class Job(BaseModel):
    id: str
    kind: str = "search"
    status: JobStatus
    created_at: datetime
    updated_at: datetime
    k: int | None = None
    progress: str | None = None
    results: list[SearchResult] | None = None
    partial: bool = False
    missing_shards: list[int] = []
    error: ErrorBody | None = None
    clip_id: str | None = None
    text: str | None = Field(default=None, description="A search by description: the text searched for")
    text_classes: list[TextClass] | None = Field(
        default=None, description="How the text was read: the AudioSet classes it was mapped to, heaviest first"
    )
    filters: SearchFilters | None = None
    stage_ms: dict[str, float] = Field(
        default={}, description="Milliseconds from submission to the start of each stage (and to done)"
    )


class EmbeddingSpace(BaseModel):
    """Which model made a vector; vectors of different spaces are never compared."""

    model: str
    version: str
    dim: int
    # Seconds between the stored frames of a library clip: a query is framed at the search's hop
    # (audio_params.FRAME_HOP_S) and compared with frames at this hop, a whole multiple of it. Not part of the
    # key: the vectors of one space compare at any hop.
    hop_s: float = Field(default=FRAME_HOP_S, gt=0)

    @property
    def key(self) -> str:
        return f"{self.model}:{self.version}:{self.dim}"


class QueryEmbedded(BaseModel):
    """What the embedder hands to the search fan-out (the vectors themselves stay in Redis)."""

    job_id: str
    space: EmbeddingSpace | None = Field(default=None, description="None for a text query (class weights)")
    n_frames: int
    k: int
    text: bool = False
    filters: SearchFilters | None = None


class ShardCandidate(BaseModel):
    clip_id: str
    match: MatchKind
    match_start_s: float
    query_start_s: float
    score: float
    labels: list[str] = Field(default=[], description="What the clip's matched moment holds, when known")
    votes: float = Field(
        description="Aligned landmark hashes weighted by loudness for exact matches; summed similarity otherwise"
    )
    correlation: float | None = Field(default=None, description="Waveform correlation, when verified exact")
    period_s: float | None = None
    recheck: int | None = Field(
        default=None,
        description="The fingerprint holds it but gives no clear offset: its place among its shard's clips to "
        "verify against their audio (0 first)",
    )
    anywhere: bool = Field(default=False, description="The fingerprint says which clip holds it, not where")
    recheck_at_s: float | None = Field(
        default=None,
        description="Where the fingerprint places the query's start in the clip, when the match aligns it elsewhere "
        "(both places are verified)",
    )


class ShardAnswer(BaseModel):
    shard: int
    candidates: list[ShardCandidate]
    error: ErrorBody | None = None


class ClipEmbedded(BaseModel):
    clip_id: str
    space: EmbeddingSpace
    n_frames: int
    duration_s: float
    content_hash: str
    labels: list[str]
