"""Telling an outage (spool and retry) from a rejection (set aside): how a failed call is classified."""

from __future__ import annotations

from mlflow.exceptions import MlflowException

from pipeline.core.errors import PipelineError
from pipeline.tracking.config import REJECTION_CODES


class TrackingUnavailableError(PipelineError, RuntimeError):
    """The tracking store could not be reached; ``sent`` entries went out before it failed."""

    def __init__(self, message: str, sent: int = 0):
        super().__init__(message)
        self.sent = sent


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` means the store could not be reached or could not serve the call now
    (connection refused, timeout, 5xx, 429, database locked): the call is spooled and retried.
    Anything else is a rejection: the store refused this call (invalid or changed value, missing
    file, ...), and sending it again cannot help."""
    if isinstance(exc, MlflowException):
        return exc.error_code not in REJECTION_CODES
    if isinstance(exc, FileNotFoundError):
        return False
    if isinstance(exc, OSError):              # includes requests' ConnectionError and Timeout
        return True
    try:
        import requests
        import sqlalchemy.exc
    except ImportError:  # pragma: no cover - both are MLflow dependencies
        return False
    return isinstance(exc, (requests.RequestException, sqlalchemy.exc.OperationalError))


def is_rejection(exc: BaseException) -> bool:
    return not is_outage(exc)


def short_error(exc: BaseException | None, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + " [...]"
