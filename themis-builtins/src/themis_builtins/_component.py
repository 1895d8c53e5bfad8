"""The identity triple shared by every builtin component."""

from __future__ import annotations

from typing import Any

from themis.core.base import content_hash

__all__ = ["BuiltinComponent"]


class BuiltinComponent:
    """Gives ``fingerprint()`` = the content hash of the id, the version and ``params()``."""

    component_id: str = ""
    version: str = "1.0"

    def params(self) -> dict[str, Any]:
        """Every constructor parameter that changes behaviour, as JSON."""
        return {}

    def fingerprint(self) -> str:
        """The content hash of ``{component_id, version, params}``."""
        return content_hash(
            {"component_id": self.component_id, "version": self.version, "params": self.params()}
        )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"
