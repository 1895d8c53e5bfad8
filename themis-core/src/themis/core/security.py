"""The secret filter: refuse to persist a literal secret in a snapshot."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from themis.core.errors import SecretLeakError

__all__ = ["is_secret_reference", "sanitize_mapping"]

REDACTED = "<redacted>"

_SECRET_KEY = re.compile(
    r"(^|_)(api_?key|access_?key|private_?key|secret|password|passwd|token|dsn"
    r"|connection_?string)(_|$)"
)
_KEY_FORMATS = re.compile(
    r"(^sk-[A-Za-z0-9_\-]{8,}|^sk-ant-[A-Za-z0-9_\-]{8,}|^gh[pousr]_[A-Za-z0-9]{16,}"
    r"|^hf_[A-Za-z0-9]{16,}|^xox[baprs]-[A-Za-z0-9\-]{8,}|-----BEGIN [A-Z ]*PRIVATE KEY-----)"
)
_REFERENCE = re.compile(r"^(\$\{[A-Z_][A-Z0-9_]*\}|env:[A-Za-z_][A-Za-z0-9_]*|secret://.+)$")
_NON_ALNUM = re.compile(r"[^a-z0-9]")


def is_secret_reference(value: str) -> bool:
    """True for ``${UPPER_NAME}``, ``env:NAME`` and ``secret://…`` references."""
    return bool(_REFERENCE.match(value))


def _is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(_NON_ALNUM.sub("_", key.lower())))


def _redact_url_password(value: str) -> str | None:
    """The URL with its password redacted, or None when ``value`` holds no credentials."""
    if "://" not in value or "@" not in value:
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if not parts.password:
        return None
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:{REDACTED}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _leak(path: str) -> SecretLeakError:
    return SecretLeakError(
        f"{path}: refuse to persist a literal secret; use an env or secret reference "
        "such as '${API_KEY}', 'env:API_KEY' or 'secret://vault/key'"
    )


def _sanitize(value: Any, path: str, secret_context: bool) -> Any:
    if isinstance(value, Mapping):
        return {
            k: _sanitize(v, f"{path}.{k}", secret_context or _is_secret_key(str(k)))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_sanitize(v, f"{path}[{i}]", secret_context) for i, v in enumerate(value)]
    if not isinstance(value, str) or value in ("", REDACTED) or is_secret_reference(value):
        return value
    redacted = _redact_url_password(value)
    if redacted is not None:
        return redacted
    if secret_context or _KEY_FORMATS.search(value):
        raise _leak(path)
    return value


def sanitize_mapping(mapping: Mapping[str, Any], *, path: str) -> dict[str, Any]:
    """A copy of ``mapping`` with URL passwords redacted; a literal secret raises."""
    return dict(_sanitize(mapping, path, False))
