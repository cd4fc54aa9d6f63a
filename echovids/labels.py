"""AudioSet class labels: ontology ids <-> display names, for library clips and search results alike."""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

from echovids.settings import get_settings

log = logging.getLogger(__name__)


@lru_cache(maxsize=2)
def _ontology(path: Path) -> dict[str, str]:
    try:
        return {entry["id"]: entry["name"] for entry in json.loads(path.read_text())}
    except (OSError, ValueError, KeyError) as exc:
        log.warning("AudioSet ontology not readable at %s (%s); labels stay ids", path, exc)
        return {}


def label_names() -> dict[str, str]:
    """AudioSet id -> display name (the names YAMNet's class map uses too)."""
    return _ontology(get_settings().ontology_path)


def label_name(label: str) -> str:
    return label_names().get(label, label)


@lru_cache(maxsize=2)
def _ids_by_name(path: Path) -> dict[str, str]:
    return {name: label_id for label_id, name in _ontology(path).items()}


def resolve_label(label: str) -> str | None:
    """An AudioSet class given by name or ontology id, as its name (what results and segments show); None if none."""
    names = label_names()
    if label in names:
        return names[label]
    return label if label in _ids_by_name(get_settings().ontology_path) else None


def label_ids(labels: list[str]) -> list[str]:
    """The AudioSet ontology ids of those labels that name (or are) an AudioSet class; others are left out."""
    ids = _ids_by_name(get_settings().ontology_path)
    known = label_names()
    return [label if label in known else ids[label] for label in labels if label in known or label in ids]


def check_metadata(title: str | None, labels: list[str]) -> None:
    """Refuse a title or labels past the settings' limits (a 100 KB label, 5000 labels): validation_error."""
    from echovids.errors import InvalidRequest

    settings = get_settings()
    if title is not None and len(title) > settings.max_title_length:
        raise InvalidRequest(f"title: at most {settings.max_title_length} characters (ECHOVIDS_MAX_TITLE_LENGTH)")
    if len(labels) > settings.max_labels:
        raise InvalidRequest(f"labels: at most {settings.max_labels} labels (ECHOVIDS_MAX_LABELS)")
    long = next((label for label in labels if len(label) > settings.max_label_length), None)
    if long is not None:
        raise InvalidRequest(
            f"labels: a label is at most {settings.max_label_length} characters (ECHOVIDS_MAX_LABEL_LENGTH)"
        )
