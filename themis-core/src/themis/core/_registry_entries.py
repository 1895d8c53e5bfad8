"""Registry building blocks: component kinds, reference syntax, entries and the registrar."""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Iterable
from typing import Any

from themis.core.base import FrozenModel
from themis.core.errors import NamespaceError
from themis.core.snapshot import PluginInfo

__all__ = [
    "ALIAS_KINDS",
    "ALIAS_RE",
    "ID_RE",
    "IMPORT_PATH_RE",
    "RESERVED_NAMESPACES",
    "ComponentInfo",
    "ComponentKind",
    "ComponentRegistrar",
    "Entry",
    "PluginDetails",
    "target_text",
]

# The three reference syntaxes of API §4.1; a string that is neither path nor id is an alias.
IMPORT_PATH_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
ID_RE = re.compile(r"^[a-z][a-z0-9_]*/[a-z0-9][a-z0-9_.\-]*$")
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_.\-]*$")

# Namespace -> the only distribution allowed to own it (None: no entry point may own it).
RESERVED_NAMESPACES: dict[str, str | None] = {
    "core": None,  # themis-core registers it itself, without an entry point
    "builtin": "themis-builtins",
    "local": None,  # in-process get_registry().register(...)
    "themis": None,  # reserved for the future
}


class ComponentKind(enum.StrEnum):
    """The kinds of component a plugin can register."""

    GENERATOR = "generator"
    SELECTOR = "selector"
    REDUCER = "reducer"
    PARSER = "parser"
    METRIC = "metric"
    JUDGE_MODEL = "judge_model"
    STORE = "store"
    TRACING_PROVIDER = "tracing_provider"
    SUBSCRIBER = "subscriber"
    REPORT_FORMAT = "report_format"


# Only these kinds resolve bare aliases such as "memory", "sqlite" or "otel".
ALIAS_KINDS = frozenset(
    {ComponentKind.STORE, ComponentKind.TRACING_PROVIDER, ComponentKind.REPORT_FORMAT}
)


def as_kind(kind: ComponentKind | str) -> ComponentKind:
    """``kind`` as a ``ComponentKind``; an unknown name raises ``ValueError`` listing them."""
    try:
        return ComponentKind(kind)
    except ValueError:
        valid = ", ".join(k.value for k in ComponentKind)
        raise ValueError(f"unknown component kind {kind!r}; the kinds are: {valid}") from None


class ComponentInfo(FrozenModel):
    """What ``Registry.describe`` says about a registered component."""

    id: str
    kind: ComponentKind
    target: str
    summary: str = ""
    plugin: str | None = None
    distribution: str | None = None
    version: str | None = None  # of the distribution that registered it
    aliases: list[str] = []
    declared_version: str | None = None  # informational, as the plugin passed it


class PluginDetails(PluginInfo):
    """A ``PluginInfo`` plus what the plugin registered and which hooks it implements."""

    components: list[ComponentInfo] = []
    hooks: list[str] = []
    reason: str | None = None  # why a plugin is blocked or disabled


def target_text(target: object) -> str:
    """An import path string as is; a class or callable as ``module:QualName``."""
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None) or type(target).__module__
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{module}:{qualname}"


@dataclasses.dataclass(eq=False)
class Entry:
    """One registered component. ``target`` is imported (if a string) on first create."""

    id: str
    kind: ComponentKind
    target: object
    summary: str
    plugin: str
    distribution: str | None
    version: str | None
    aliases: tuple[str, ...]
    declared_version: str | None
    loaded: object | None = None

    def info(self) -> ComponentInfo:
        return ComponentInfo(
            id=self.id,
            kind=self.kind,
            target=target_text(self.target),
            summary=self.summary,
            plugin=self.plugin,
            distribution=self.distribution,
            version=self.version,
            aliases=list(self.aliases),
            declared_version=self.declared_version,
        )

    def owner(self) -> str:
        """``acme (themis-acme 0.3.1)``: who registered this entry, for error messages."""
        if self.distribution is None:
            return f"plugin `{self.plugin}` (registered in-process)"
        return f"plugin `{self.plugin}` ({self.distribution} {self.version or '?'})"


class ComponentRegistrar:
    """What ``register_components`` receives: registers ids in one plugin's namespace."""

    def __init__(
        self,
        namespace: str,
        sink: Callable[[Entry], None],
        *,
        plugin: str,
        distribution: str | None,
        version: str | None,
    ) -> None:
        self.namespace = namespace
        self._sink = sink
        self._plugin = plugin
        self._distribution = distribution
        self._version = version

    def __repr__(self) -> str:
        return f"ComponentRegistrar(namespace={self.namespace!r})"

    def register(
        self,
        kind: ComponentKind | str,
        component_id: str,
        target: object,
        *,
        version: str | None = None,
        summary: str = "",
        aliases: Iterable[str] = (),
    ) -> None:
        """Register ``target`` (a class, a factory or a ``"pkg.mod:Name"`` string) by id."""
        kind = as_kind(kind)
        if not isinstance(component_id, str) or not ID_RE.match(component_id):
            raise ValueError(
                f"invalid component id {component_id!r}: ids look like 'namespace/name' "
                "(namespace [a-z][a-z0-9_]*, name [a-z0-9][a-z0-9_.-]*)"
            )
        namespace = component_id.partition("/")[0]
        if namespace != self.namespace:
            source = (
                f"{self._distribution} {self._version or '?'}"
                if self._distribution
                else "registered in-process"
            )
            raise NamespaceError(
                f"plugin `{self._plugin}` ({source}) owns the namespace `{self.namespace}/` "
                f"and cannot register `{component_id}`; rename it to "
                f"`{self.namespace}/{component_id.partition('/')[2]}`"
            )
        if isinstance(target, str):
            if not IMPORT_PATH_RE.match(target):
                raise ValueError(
                    f"{component_id}: invalid import path {target!r}; "
                    "write it as 'package.module:Name'"
                )
        elif not callable(target) and not _has_identity(target):
            raise TypeError(
                f"{component_id}: the target must be a class, a factory callable, a component "
                f"or an import-path string, not {type(target).__name__}"
            )
        alias_list = tuple(aliases)
        for alias in alias_list:
            if not isinstance(alias, str) or not ALIAS_RE.match(alias):
                raise ValueError(
                    f"{component_id}: invalid alias {alias!r}; an alias is a bare lower-case "
                    "name such as 'sqlite'"
                )
        if alias_list and kind not in ALIAS_KINDS:
            raise ValueError(
                f"{component_id}: aliases are only resolved for the kinds "
                f"{', '.join(sorted(ALIAS_KINDS))}, not for {kind}; drop the alias"
            )
        self._sink(
            Entry(
                id=component_id,
                kind=kind,
                target=target,
                summary=summary,
                plugin=self._plugin,
                distribution=self._distribution,
                version=self._version,
                aliases=alias_list,
                declared_version=version,
            )
        )

    def generator(
        self,
        component_id: str,
        target: object,
        *,
        version: str | None = None,
        summary: str = "",
        aliases: Iterable[str] = (),
    ) -> None:
        """Register a generator: ``register("generator", ...)``."""
        self.register(
            "generator", component_id, target, version=version, summary=summary, aliases=aliases
        )

    def selector(
        self,
        component_id: str,
        target: object,
        *,
        version: str | None = None,
        summary: str = "",
        aliases: Iterable[str] = (),
    ) -> None:
        """Register a selector: ``register("selector", ...)``."""
        self.register(
            "selector", component_id, target, version=version, summary=summary, aliases=aliases
        )

    def reducer(
        self,
        component_id: str,
        target: object,
        *,
        version: str | None = None,
        summary: str = "",
        aliases: Iterable[str] = (),
    ) -> None:
        """Register a reducer: ``register("reducer", ...)``."""
        self.register(
            "reducer", component_id, target, version=version, summary=summary, aliases=aliases
        )

    def parser(
        self,
        component_id: str,
        target: object,
        *,
        version: str | None = None,
        summary: str = "",
        aliases: Iterable[str] = (),
    ) -> None:
        """Register a parser: ``register("parser", ...)``."""
        self.register(
            "parser", component_id, target, version=version, summary=summary, aliases=aliases
        )

    def metric(
        self,
        component_id: str,
        target: object,
        *,
        version: str | None = None,
        summary: str = "",
        aliases: Iterable[str] = (),
    ) -> None:
        """Register a metric: ``register("metric", ...)``."""
        self.register(
            "metric", component_id, target, version=version, summary=summary, aliases=aliases
        )

    def judge_model(
        self,
        component_id: str,
        target: object,
        *,
        version: str | None = None,
        summary: str = "",
        aliases: Iterable[str] = (),
    ) -> None:
        """Register a judge_model: ``register("judge_model", ...)``."""
        self.register(
            "judge_model", component_id, target, version=version, summary=summary, aliases=aliases
        )

    def store(
        self,
        component_id: str,
        target: object,
        *,
        version: str | None = None,
        summary: str = "",
        aliases: Iterable[str] = (),
    ) -> None:
        """Register a store: ``register("store", ...)``."""
        self.register(
            "store", component_id, target, version=version, summary=summary, aliases=aliases
        )

    def tracing_provider(
        self,
        component_id: str,
        target: object,
        *,
        version: str | None = None,
        summary: str = "",
        aliases: Iterable[str] = (),
    ) -> None:
        """Register a tracing_provider: ``register("tracing_provider", ...)``."""
        self.register(
            "tracing_provider",
            component_id,
            target,
            version=version,
            summary=summary,
            aliases=aliases,
        )

    def subscriber(
        self,
        component_id: str,
        target: object,
        *,
        version: str | None = None,
        summary: str = "",
        aliases: Iterable[str] = (),
    ) -> None:
        """Register a subscriber: ``register("subscriber", ...)``."""
        self.register(
            "subscriber", component_id, target, version=version, summary=summary, aliases=aliases
        )

    def report_format(
        self,
        component_id: str,
        target: object,
        *,
        version: str | None = None,
        summary: str = "",
        aliases: Iterable[str] = (),
    ) -> None:
        """Register a report_format: ``register("report_format", ...)``."""
        self.register(
            "report_format", component_id, target, version=version, summary=summary, aliases=aliases
        )


def _has_identity(value: Any) -> bool:
    return all(hasattr(value, name) for name in ("component_id", "version", "fingerprint"))
