"""The component registry: plugins register ids lazily, the registry resolves references."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

import pluggy
from pydantic import ValidationError

import themis.core.hookspecs as hookspecs
from themis.core._discovery import (
    PluginRecord,
    PluginSettings,
    check_reserved,
    distribution_of_module,
    distribution_version,
    namespace_of,
    normalize_distribution,
    scan_entry_points,
)
from themis.core._registry_entries import (
    ALIAS_KINDS,
    ALIAS_RE,
    ID_RE,
    IMPORT_PATH_RE,
    ComponentInfo,
    ComponentKind,
    ComponentRegistrar,
    Entry,
    PluginDetails,
    as_kind,
)
from themis.core._registry_messages import duplicate_message, unknown_message
from themis.core._registry_targets import (
    import_object,
    import_user_path,
    instantiate,
    trace_after,
    trace_before,
)
from themis.core.config import ComponentSpec
from themis.core.errors import (
    ComponentKindError,
    ConfigError,
    DuplicateComponentError,
    PluginLoadError,
    ThemisError,
    UnknownComponentError,
)
from themis.core.hookspecs import DoctorCheck, hookimpl
from themis.core.logs import get_logger
from themis.core.snapshot import ComponentProvenance, PluginInfo

__all__ = [
    "ComponentInfo",
    "ComponentKind",
    "ComponentRegistrar",
    "PluginDetails",
    "Registry",
    "get_registry",
    "load_component",
    "use_registry",
]

log = get_logger(__name__)

Source = Literal["registry", "import_path", "object"]


class _CorePlugin:
    """The core's own components, registered through the same hook as any plugin."""

    @hookimpl
    def register_components(self, registry: ComponentRegistrar) -> None:
        registry.store(
            "core/memory",
            "themis.core.stores:InMemoryRunStore",
            summary="in-memory run store; a run lives as long as the store object",
            aliases=("memory",),
        )
        registry.tracing_provider(
            "core/noop",
            "themis.core.tracing:NoOpTracingProvider",
            summary="tracing provider that records nothing",
            aliases=("noop",),
        )


@dataclasses.dataclass(frozen=True)
class _Resolved:
    obj: object
    source: Source
    spec: str | dict[str, Any] | None
    entry: Entry | None


class Registry:
    """Every component id known to this process, loading plugins only when an id needs them.

    ``autoload=None`` follows ``THEMIS_DISABLE_PLUGIN_AUTOLOAD``; ``block`` adds to
    ``THEMIS_BLOCK_PLUGINS``; ``env`` replaces ``os.environ`` as the source of settings.
    """

    def __init__(
        self,
        *,
        autoload: bool | None = None,
        block: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._settings = PluginSettings.from_env(env, autoload=autoload, block=block)
        self._lock = threading.RLock()
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        if self._settings.trace:
            self._pm.add_hookcall_monitoring(trace_before, trace_after)
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, Entry] = {}
        self._conflicts: dict[str, DuplicateComponentError] = {}
        self._records: list[PluginRecord] = []
        self._scanned = False
        self._local: ComponentRegistrar | None = None
        core = PluginRecord(
            name="core",
            namespace="core",
            distribution="themis-core",
            version=distribution_version("themis-core") or "0+unknown",
        )
        self._records.append(core)
        self._activate(core, _CorePlugin(), internal=True, raise_errors=True)

    # -- registration ------------------------------------------------------------------

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
        """Register an in-process component; its id must be in the ``local/`` namespace."""
        with self._lock:
            if self._local is None:
                record = PluginRecord(
                    name="local", namespace="local", distribution=None, version=None
                )
                record.status = "loaded"
                self._records.insert(1, record)
                self._local = ComponentRegistrar(
                    "local",
                    lambda entry: self._commit([entry]),
                    plugin="local",
                    distribution=None,
                    version=None,
                )
            self._local.register(
                kind, component_id, target, version=version, summary=summary, aliases=aliases
            )

    def add_plugin(
        self,
        plugin: object,
        *,
        name: str,
        distribution: str | None = None,
        version: str | None = None,
    ) -> PluginInfo:
        """Load a plugin object (a module or instance with hookimpls) as if found by entry point.

        Errors are raised, not recorded: the caller asked for this plugin explicitly.
        """
        namespace = namespace_of(name)
        record = PluginRecord(
            name=namespace, namespace=namespace, distribution=distribution, version=version
        )
        with self._lock:
            self._records.append(record)
            self._activate(record, plugin, internal=False, raise_errors=True)
        return record.info()

    # -- queries -----------------------------------------------------------------------

    def ids(self, kind: ComponentKind | str | None = None) -> list[str]:
        """Every registered id (of ``kind`` when given), sorted; loads every plugin."""
        wanted = None if kind is None else as_kind(kind)
        with self._lock:
            self._load_all()
            return sorted(e.id for e in self._entries.values() if wanted in (None, e.kind))

    def describe(self, component_id: str) -> ComponentInfo:
        """What is registered under ``component_id`` (an id, or an alias)."""
        with self._lock:
            entry = self._find(component_id) if "/" in component_id else None
            if entry is None and ALIAS_RE.match(component_id):
                entry = self._find_alias(component_id)
            if entry is None:
                raise self._unknown(None, component_id)
            return entry.info()

    def plugins(self, *, loaded_only: bool = False) -> list[PluginInfo]:
        """Every discovered plugin with its status; loads them all unless ``loaded_only``."""
        with self._lock:
            if not loaded_only:
                self._load_all()
            return [r.info() for r in self._records if r.status != "pending"]

    def plugin_details(self) -> list[PluginDetails]:
        """``plugins()`` plus each plugin's components and implemented hooks."""
        with self._lock:
            self._load_all()
            details = []
            for record in self._records:
                components = [
                    entry.info()
                    for entry in self._entries.values()
                    if entry.plugin == record.name and entry.distribution == record.distribution
                ]
                hooks: list[str] = []
                if record.plugin is not None and self._pm.is_registered(record.plugin):
                    hooks = sorted(h.name for h in self._pm.get_hookcallers(record.plugin) or ())
                details.append(
                    PluginDetails(
                        **record.info().model_dump(),
                        components=components,
                        hooks=hooks,
                        reason=record.reason,
                    )
                )
            return details

    def duplicates(self) -> list[DuplicateComponentError]:
        """The ids and aliases that two plugins registered (each unusable until one goes)."""
        with self._lock:
            self._load_all()
            return list(self._conflicts.values())

    def call_doctor_checks(self) -> list[tuple[str, list[DoctorCheck] | Exception]]:
        """Each loaded plugin's ``doctor_checks`` result, or the exception it raised."""
        with self._lock:
            self._load_all()
            records = [r for r in self._records if r.status == "loaded" and r.plugin is not None]
        results: list[tuple[str, list[DoctorCheck] | Exception]] = []
        for record in records:
            others = [p for p in self._pm.get_plugins() if p is not record.plugin]
            caller = self._pm.subset_hook_caller("doctor_checks", remove_plugins=others)
            if not caller.get_hookimpls():
                continue
            try:
                checks = [c for batch in caller() for c in (batch or [])]
            except Exception as exc:  # a plugin's own check must not stop the others
                results.append((record.name, exc))
                continue
            results.append((record.name, checks))
        return results

    # -- creation and resolution -------------------------------------------------------

    def create(self, kind: ComponentKind | str, component_id: str, /, **params: Any) -> Any:
        """Import (once) and instantiate the component registered as ``component_id``."""
        kind = as_kind(kind)
        entry = self._entry_for(kind, component_id)
        return instantiate(self._load_target(entry), params, f"`{entry.id}`")

    def load_target(self, component_id: str) -> object:
        """Import (once) and return what ``component_id`` was registered with, uncreated."""
        with self._lock:
            entry = self._find(component_id)
            if entry is None:
                raise self._unknown(None, component_id)
        return self._load_target(entry)

    def resolve(self, kind: ComponentKind | str, ref: Any) -> Any:
        """A component from any reference form of API §4.1 (object, id, alias, path, spec)."""
        return self._resolve(as_kind(kind), ref).obj

    def resolve_with_provenance(
        self, kind: ComponentKind | str, ref: Any, *, slot: str
    ) -> tuple[Any, ComponentProvenance]:
        """``resolve`` plus where the component came from, for ``RunProvenance.components``."""
        resolved = self._resolve(as_kind(kind), ref)
        obj, entry = resolved.obj, resolved.entry
        cls = type(obj)
        python_class = f"{cls.__module__}:{cls.__qualname__}"
        plugin: str | None
        if entry is not None:
            plugin, distribution, version = entry.plugin, entry.distribution, entry.version
        else:
            distribution, version = distribution_of_module(cls.__module__)
            plugin = self._plugin_of_distribution(distribution)
        component_id = getattr(obj, "component_id", None)
        if not isinstance(component_id, str) or not component_id:
            component_id = entry.id if entry is not None else python_class
        return obj, ComponentProvenance(
            slot=slot,
            component_id=component_id,
            source=resolved.source,
            spec=resolved.spec,
            python_class=python_class,
            plugin=plugin,
            distribution=distribution,
            distribution_version=version,
        )

    def _resolve(self, kind: ComponentKind, ref: Any) -> _Resolved:
        if isinstance(ref, str):
            return self._resolve_text(kind, ref, {}, ref)
        if isinstance(ref, ComponentSpec):
            spec = ref.model_dump(mode="json", exclude_none=True)
            return self._resolve_text(kind, ref.id or ref.target or "", dict(ref.params), spec)
        if isinstance(ref, Mapping):
            try:
                parsed = ComponentSpec.model_validate(dict(ref))
            except ValidationError as exc:
                raise ConfigError(
                    f"invalid {kind} spec {dict(ref)!r}: write it as "
                    "{'id': 'namespace/name', 'params': {...}} or "
                    "{'target': 'package.module:Name', 'params': {...}} "
                    f"({exc.errors()[0]['msg']})"
                ) from exc
            text = parsed.id or parsed.target or ""
            return self._resolve_text(kind, text, dict(parsed.params), dict(ref))
        if ref is None:
            raise ConfigError(f"no {kind} given: pass a component, a registry id or an import path")
        return _Resolved(ref, "object", None, None)

    def _resolve_text(
        self, kind: ComponentKind, text: str, params: dict[str, Any], spec: str | dict[str, Any]
    ) -> _Resolved:
        if IMPORT_PATH_RE.match(text):
            target = import_user_path(text, kind)
            return _Resolved(instantiate(target, params, f"`{text}`"), "import_path", spec, None)
        entry = self._entry_for(kind, text)
        obj = instantiate(self._load_target(entry), params, f"`{entry.id}`")
        return _Resolved(obj, "registry", spec, entry)

    def _entry_for(self, kind: ComponentKind, text: str) -> Entry:
        with self._lock:
            if ID_RE.match(text):
                entry = self._find(text)
            elif kind in ALIAS_KINDS and ALIAS_RE.match(text):
                entry = self._find_alias(text)
            else:
                entry = None
            if entry is None:
                raise self._unknown(kind, text)
            if entry.kind != kind:
                self._load_all()
                others = sorted(e.id for e in self._entries.values() if e.kind == kind)
                hint = (
                    f"; the {kind} ids are: {', '.join(others[:8])}"
                    + (", ..." if len(others) > 8 else "")
                    if others
                    else f"; no installed plugin registers a {kind}"
                )
                raise ComponentKindError(f"`{text}` is a {entry.kind}, not a {kind}{hint}")
            return entry

    def _load_target(self, entry: Entry) -> object:
        with self._lock:
            if entry.loaded is not None:
                return entry.loaded
            if not isinstance(entry.target, str):
                entry.loaded = entry.target
                return entry.loaded
            try:
                entry.loaded = import_object(entry.target)
            except Exception as exc:
                record = self._record_of(entry)
                ep = record.entry_point_text if record is not None else None
                where = f", entry point `{ep}`" if ep else ""
                raise PluginLoadError(
                    f"cannot import `{entry.target}`, registered as `{entry.id}` by "
                    f"{entry.owner()}{where}: {type(exc).__name__}: {exc}; "
                    f"reinstall {entry.distribution or 'the plugin'} or report it to its authors",
                    name=entry.plugin,
                ) from exc
            return entry.loaded

    # -- discovery and loading ---------------------------------------------------------

    def _scan(self) -> None:
        if not self._scanned:
            self._scanned = True
            self._records.extend(scan_entry_points(self._settings))

    def _load_all(self) -> None:
        self._scan()
        for record in list(self._records):
            if record.status == "pending":
                self._load_record(record)

    def _load_namespace(self, namespace: str) -> None:
        self._scan()
        for record in list(self._records):
            if record.namespace == namespace and record.status == "pending":
                self._load_record(record)

    def _load_record(self, record: PluginRecord) -> None:
        assert record.entry_point is not None
        try:
            plugin = record.entry_point.load()
        except Exception as exc:
            self._fail(record, exc)
            if self._settings.strict:
                raise PluginLoadError(
                    f"cannot load the plugin {record.label()} from entry point "
                    f"`{record.entry_point_text}`: {record.error}; fix or uninstall "
                    f"{record.distribution}, or skip it with --no-plugin {record.name} "
                    "(THEMIS_STRICT_PLUGINS is set, so this is fatal)",
                    name=record.name,
                ) from exc
            return
        self._activate(record, plugin, internal=False, raise_errors=self._settings.strict)

    def _activate(
        self, record: PluginRecord, plugin: object, *, internal: bool, raise_errors: bool
    ) -> None:
        """Register ``plugin`` with pluggy and commit what its hook registers, all or nothing."""
        registered = False
        try:
            if not internal:
                check_reserved(record)
            record.pm_name = self._pm_name(record)
            self._pm.register(plugin, name=record.pm_name)
            registered = True
            staged: list[Entry] = []
            registrar = ComponentRegistrar(
                record.namespace,
                staged.append,
                plugin=record.name,
                distribution=record.distribution,
                version=record.version,
            )
            others = [p for p in self._pm.get_plugins() if p is not plugin]
            self._pm.subset_hook_caller("register_components", remove_plugins=others)(
                registry=registrar
            )
            self._commit(staged)
        except Exception as exc:
            if registered:
                self._pm.unregister(plugin)
            self._fail(record, exc)
            if not raise_errors:
                return
            if isinstance(exc, ThemisError):
                raise
            raise PluginLoadError(
                f"the plugin {record.label()} failed while registering its components: "
                f"{record.error}; fix or uninstall {record.distribution or 'it'}",
                name=record.name,
            ) from exc
        record.status, record.plugin = "loaded", plugin

    def _pm_name(self, record: PluginRecord) -> str:
        base = (
            record.name if record.distribution is None else f"{record.name}@{record.distribution}"
        )
        name, n = base, 1
        while self._pm.has_plugin(name):
            n += 1
            name = f"{base}#{n}"
        return name

    def _commit(self, staged: list[Entry]) -> None:
        """Add ``staged`` entries, or none of them if any id or alias is taken."""
        seen: dict[str, Entry] = {}
        seen_alias: dict[str, Entry] = {}
        for entry in staged:
            for key, table, what, own in (
                (entry.id, self._entries, "component id", seen),
                *((a, self._aliases, "alias", seen_alias) for a in entry.aliases),
            ):
                existing = table.get(key) or own.get(key)
                if existing is not None:
                    error = DuplicateComponentError(duplicate_message(what, key, existing, entry))
                    if existing is table.get(key):
                        # The id stays registered but unusable: silently picking one of two
                        # plugins would make runs depend on installation order.
                        self._conflicts[key] = error
                    raise error
                own[key] = entry
        for entry in staged:
            self._entries[entry.id] = entry
            for alias in entry.aliases:
                self._aliases[alias] = entry

    def _fail(self, record: PluginRecord, exc: BaseException) -> None:
        record.status = "failed"
        record.exception = exc
        record.error = f"{type(exc).__name__}: {exc}"
        log.warning(
            "plugin.load_failed",
            plugin=record.name,
            distribution=record.distribution,
            version=record.version,
            entry_point=record.entry_point_text,
            error=record.error,
        )

    def _find(self, component_id: str) -> Entry | None:
        namespace = component_id.partition("/")[0]
        if component_id not in self._entries:
            self._load_namespace(namespace)
        if component_id in self._conflicts:
            raise self._conflicts[component_id]
        return self._entries.get(component_id)

    def _find_alias(self, alias: str) -> Entry | None:
        # The plugin named like the alias is the likely owner ("sqlite"), so try it first.
        for step in ("named", "all", "done"):
            if alias in self._conflicts:
                raise self._conflicts[alias]
            if alias in self._aliases or step == "done":
                break
            if step == "named":
                self._load_namespace(alias)
            else:
                self._load_all()
        return self._aliases.get(alias)

    def _unknown(self, kind: ComponentKind | None, ref: str) -> UnknownComponentError:
        self._load_all()
        pool = [e.id for e in self._entries.values() if kind in (None, e.kind)]
        if kind is None or kind in ALIAS_KINDS:
            pool += [a for a, e in self._aliases.items() if kind in (None, e.kind)]
        namespace = ref.partition("/")[0]
        owners = [r for r in self._records if r.namespace == namespace and r.status != "loaded"]
        error = UnknownComponentError(
            unknown_message(kind, ref, pool, self._records, owners=owners)
        )
        cause = next((r.exception for r in owners if r.exception is not None), None)
        error.__cause__ = cause
        return error

    def _record_of(self, entry: Entry) -> PluginRecord | None:
        for record in self._records:
            if record.name == entry.plugin and record.distribution == entry.distribution:
                return record
        return None

    def _plugin_of_distribution(self, distribution: str | None) -> str | None:
        if distribution is None:
            return None
        wanted = normalize_distribution(distribution)
        with self._lock:
            self._scan()  # reads metadata only; loads no plugin
        for record in self._records:
            if record.distribution and normalize_distribution(record.distribution) == wanted:
                return record.name
        return None


_default: Registry | None = None
_default_lock = threading.Lock()
_current: contextvars.ContextVar[Registry | None] = contextvars.ContextVar(
    "themis_registry", default=None
)


def get_registry() -> Registry:
    """The registry in use: the one set by ``use_registry``, else the process-wide default."""
    current = _current.get()
    if current is not None:
        return current
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Registry()
    return _default


@contextlib.contextmanager
def use_registry(registry: Registry) -> Iterator[Registry]:
    """Make ``registry`` the one ``get_registry()`` returns inside the ``with`` block."""
    token = _current.set(registry)
    try:
        yield registry
    finally:
        try:
            _current.reset(token)
        except ValueError:  # exited in another context (async fixtures): restore by value
            _current.set(token.old_value if token.old_value is not token.MISSING else None)


def load_component(ref: Any, *, kind: ComponentKind | str) -> Any:
    """Resolve ``ref`` (any form of API §4.1) as a ``kind`` through the current registry."""
    return get_registry().resolve(kind, ref)
