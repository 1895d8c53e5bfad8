"""The Themis exception hierarchy: every error a user sees derives from ``ThemisError``."""

from __future__ import annotations

__all__ = [
    "ComponentContractError",
    "ComponentKindError",
    "ConfigError",
    "DuplicateComponentError",
    "FingerprintMismatchError",
    "MissingPluginError",
    "NamespaceError",
    "NonRetryableError",
    "PluginLoadError",
    "RetryableError",
    "RunExistsError",
    "RunNotFoundError",
    "SecretLeakError",
    "StoreConflictError",
    "StoreError",
    "ThemisError",
    "TransientStoreError",
    "UnknownComponentError",
    "WorkflowBuildError",
]


class ThemisError(Exception):
    """Base class of every exception Themis raises on purpose."""


class ConfigError(ThemisError, ValueError):
    """The experiment definition is invalid; raised before anything is written."""


class UnknownComponentError(ConfigError):
    """No installed plugin registered the requested component id."""


class ComponentKindError(ConfigError):
    """A component id exists but is of another kind than the slot needs."""


class DuplicateComponentError(ThemisError):
    """Two plugins registered the same id or alias."""


class NamespaceError(ThemisError):
    """A plugin tried to register an id outside the namespace it owns."""


class PluginLoadError(ThemisError, ImportError):
    """A plugin (or a target it registered) could not be imported."""


class MissingPluginError(ThemisError, ImportError):
    """A name needs a plugin distribution that is not installed."""

    def __init__(self, name: str, distribution: str, extra: str) -> None:
        self.distribution = distribution
        self.extra = extra
        super().__init__(
            f"themis.{name} needs the {distribution} plugin, which is not installed; "
            f'install it with: pip install "themis-eval[{extra}]"',
            name=name,
        )


class ComponentContractError(ThemisError, TypeError):
    """A component does not meet the protocol of the slot it is used in."""


class FingerprintMismatchError(ThemisError, RuntimeError):
    """A component resolved at run start differs from the one in the compiled snapshot."""


class SecretLeakError(ConfigError):
    """A literal secret was about to be persisted in a snapshot."""


class RunExistsError(ThemisError, ValueError):
    """The run is already stored and ``existing_run_policy="error"`` forbids running it."""


class RunNotFoundError(ThemisError, LookupError, ValueError):
    """No run with this id is stored."""


class StoreError(ThemisError):
    """A run store operation failed."""


class TransientStoreError(StoreError):
    """A store operation failed in a way that may succeed when retried."""


class StoreConflictError(StoreError):
    """A write contradicts what the store already holds."""


class WorkflowBuildError(ThemisError, ValueError):
    """A judge workflow could not be built or planned."""


class RetryableError(ThemisError):
    """Raised by a component to say that the call may succeed when retried."""

    retryable = True

    def __init__(self, message: str = "", *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NonRetryableError(ThemisError):
    """Raised by a component to say that retrying the call is pointless."""

    retryable = False
