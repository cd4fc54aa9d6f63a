"""The domain's one exception hierarchy; the gateway maps each class to an HTTP status."""

from __future__ import annotations


class EchovidsError(Exception):
    """Base class: a machine-readable ``code``, an HTTP ``status`` and a human sentence."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(EchovidsError):
    """A value the request's schema cannot check by itself (it depends on a setting, e.g. ECHOVIDS_MAX_K)."""

    code = "validation_error"
    status = 422


class UndecodableAudio(EchovidsError):
    code = "undecodable_audio"
    status = 422


class AudioTooShort(EchovidsError):
    code = "audio_too_short"
    status = 422


class AudioTooLong(EchovidsError):
    code = "audio_too_long"
    status = 422


class SilentAudio(EchovidsError):
    code = "silent_audio"
    status = 422


class PayloadTooLarge(EchovidsError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(EchovidsError):
    code = "unsupported_media_type"
    status = 415


class NotFound(EchovidsError):
    code = "not_found"
    status = 404


class SpaceMismatch(EchovidsError):
    """A query embedded in one model's space against a library in another."""

    code = "embedding_space_mismatch"
    status = 409


class Unauthorized(EchovidsError):
    code = "unauthorized"
    status = 401


class Forbidden(EchovidsError):
    code = "forbidden"
    status = 403


class TextSearchUnavailable(EchovidsError):
    """The library has no class scores to search by description (a VGGish library, or one not re-indexed)."""

    status = 409
    code = "text_search_unavailable"


class ServiceUnavailable(EchovidsError):
    """Redis (queue and job store) down or full; ``retry_after_s`` says when to try again."""

    code = "service_unavailable"
    status = 503

    def __init__(self, message: str, retry_after_s: float = 2.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestTimeout(EchovidsError):
    """A request body that did not arrive within ECHOVIDS_BODY_TIMEOUT_S."""

    code = "request_timeout"
    status = 408


class RateLimited(EchovidsError):
    """Past the client's request rate (ECHOVIDS_RATE_LIMIT_*); ``retry_after_s`` says when to try again."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SearchUnavailable(EchovidsError):
    """A search that no shard answered in time (or that outlived its whole deadline): a job error, not results."""

    code = "search_unavailable"
    status = 503


class ProcessingFailed(EchovidsError):
    """A library clip whose processing started too often without finishing (it crashed its worker each time)."""

    code = "processing_failed"
    status = 500


class IndexDamaged(EchovidsError):
    """A clip's indexed frames were found damaged on disk, and no stored audio is left to index it again from."""

    code = "index_damaged"
    status = 500


ERRORS_BY_CODE: dict[str, type[EchovidsError]] = {
    cls.code: cls
    for cls in (
        EchovidsError,
        InvalidRequest,
        UndecodableAudio,
        AudioTooShort,
        AudioTooLong,
        SilentAudio,
        PayloadTooLarge,
        UnsupportedMediaType,
        NotFound,
        SpaceMismatch,
        TextSearchUnavailable,
        Unauthorized,
        Forbidden,
        ServiceUnavailable,
        RequestTimeout,
        RateLimited,
        SearchUnavailable,
        ProcessingFailed,
        IndexDamaged,
    )
}
