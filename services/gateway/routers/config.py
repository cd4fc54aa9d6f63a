"""GET /v1/config: the public settings a client needs (the web page reads its limits here)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from services.gateway.deps import SettingsDep

router = APIRouter(prefix="/v1", tags=["config"])


class PublicConfig(BaseModel):
    max_query_s: float
    max_upload_mb: float
    default_k: int
    max_k: int
    max_text_chars: int
    library_writes_need_key: bool


@router.get("/config", response_model=PublicConfig)
def get_config(settings: SettingsDep) -> PublicConfig:
    """Limits for queries and uploads; never a secret."""
    return PublicConfig(
        max_query_s=settings.max_query_s,
        max_upload_mb=settings.max_upload_mb,
        default_k=settings.default_k,
        max_k=settings.max_k,
        max_text_chars=settings.max_text_chars,
        library_writes_need_key=bool(settings.api_key),
    )
