"""Queue and task names: the one place every service and the gateway take them from."""

from __future__ import annotations

EMBED = "embed"
SEARCH_MERGE = "search"
AVAILABILITY = "availability"
SHARD_PREFIX = "search.shard."

# Services by name, as `echovids worker <service>` knows them.
SERVICES = ("embedder", "search", "availability")


def shard_queue(shard: int) -> str:
    return f"{SHARD_PREFIX}{shard}"


class TaskName:
    """Tasks are sent by name, so a sender never imports the worker's code (or TensorFlow)."""

    EMBED_QUERY = "echovids.embedder.embed_query"
    EMBED_CLIP = "echovids.embedder.embed_clip"
    EMBED_TEXT = "echovids.embedder.embed_text"
    EMBED_CLIP_CLASSES = "echovids.embedder.embed_clip_classes"
    SEARCH_SHARD = "echovids.search.query_shard"
    SEARCH_MERGE = "echovids.search.merge"
    INDEX_CLIP = "echovids.search.index_clip"
    DELETE_CLIP = "echovids.search.delete_clip"
    CHECK_CLIP_CLASSES = "echovids.search.check_clip_classes"
    INDEX_CLIP_CLASSES = "echovids.search.index_clip_classes"
    COMPACT_SHARD = "echovids.search.compact_shard"
    RECONCILE_LIBRARY = "echovids.search.reconcile_library"
    CHECK_AVAILABILITY = "echovids.availability.check_results"
    CHECK_VIDEOS_LATER = "echovids.availability.check_later"
    REFRESH_AVAILABILITY = "echovids.availability.refresh_catalog"
