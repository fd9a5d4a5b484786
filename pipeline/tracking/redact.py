"""No secrets in params, tags, ``config.json`` or warnings; configs flattened into MLflow params."""

from __future__ import annotations

import re
from typing import Any

from pipeline.tracking.config import PARAM_VALUE_MAX, TRUNCATED_MARKER


_SECRET_KEY = re.compile(r"(pass(word)?|secret|token|api[_-]?key|access[_-]?key|credential)",
                         re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
REDACTED = "***"


def redact(key: str, value: str) -> str:
    """No secrets in params, tags or logs: values of secret-looking keys become ``***`` and the
    ``user:password@`` part of URLs is removed."""
    if _SECRET_KEY.search(key.rsplit(".", 1)[-1]):
        return REDACTED
    return _URL_USERINFO.sub(lambda m: m.group("scheme") + REDACTED + "@", value)


def redact_tree(d: Any, key: str = "") -> Any:
    """:func:`redact` applied to every leaf of a nested config (for ``config.json``)."""
    if isinstance(d, dict):
        return {k: redact_tree(v, str(k)) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [redact_tree(v, key) for v in d]
    if isinstance(d, str):
        return redact(key, d)
    if d is not None and _SECRET_KEY.search(key):
        return REDACTED
    return d


def flatten_params(d: dict, prefix: str = "") -> dict[str, str]:
    """``{"optim": {"g": {"lr": 1e-4}}}`` -> ``{"optim.g.lr": "0.0001"}``; values stringified,
    secrets redacted (:func:`redact`) and cut to PARAM_VALUE_MAX characters (ending with
    TRUNCATED_MARKER)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten_params(v, key + "."))
            continue
        text = redact(key, str(v))
        if len(text) > PARAM_VALUE_MAX:
            text = text[: PARAM_VALUE_MAX - len(TRUNCATED_MARKER)] + TRUNCATED_MARKER
        out[key] = text
    return out
