"""Entry-point discovery: which plugins are installed, which may load, and who owns a module."""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from themis.core._registry_entries import RESERVED_NAMESPACES
from themis.core.errors import NamespaceError
from themis.core.snapshot import PluginInfo

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginRecord",
    "PluginSettings",
    "check_reserved",
    "distribution_of_module",
    "distribution_version",
    "namespace_of",
    "normalize_distribution",
    "scan_entry_points",
]

ENTRY_POINT_GROUP = "themis"

RecordStatus = Literal["pending", "loaded", "failed", "blocked", "disabled"]

_TRUE = frozenset({"1", "true", "yes", "on"})


def namespace_of(entry_point_name: str) -> str:
    """The namespace a plugin owns: its entry-point name lower-cased, ``-`` turned into ``_``."""
    return entry_point_name.strip().lower().replace("-", "_")


def normalize_distribution(name: str) -> str:
    """PEP 503 normalisation, so ``Themis_Builtins`` and ``themis-builtins`` compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(value: str | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset(namespace_of(part) for part in value.split(",") if part.strip())


@dataclasses.dataclass(frozen=True)
class PluginSettings:
    """What may load, read from the ``THEMIS_*`` environment variables (API §7.6)."""

    autoload: bool = True
    allow: frozenset[str] | None = None  # None: every plugin; empty: none
    block: frozenset[str] = frozenset()
    strict: bool = False
    trace: bool = False

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        autoload: bool | None = None,
        block: Iterable[str] = (),
    ) -> PluginSettings:
        """Settings from ``env`` (default ``os.environ``); arguments override or add to it."""
        env = os.environ if env is None else env
        disabled = env.get("THEMIS_DISABLE_PLUGIN_AUTOLOAD", "").strip().lower() in _TRUE
        blocked = (_names(env.get("THEMIS_BLOCK_PLUGINS")) or frozenset()) | {
            namespace_of(name) for name in block
        }
        return cls(
            autoload=(not disabled) if autoload is None else autoload,
            allow=_names(env.get("THEMIS_LOAD_PLUGINS")),
            block=frozenset(blocked),
            strict=env.get("THEMIS_STRICT_PLUGINS", "").strip().lower() in _TRUE,
            trace=env.get("THEMIS_TRACE_PLUGINS", "").strip().lower() in _TRUE,
        )

    def verdict(self, name: str) -> tuple[RecordStatus, str | None]:
        """``pending`` when the plugin ``name`` may load, else its status and the reason."""
        if name in self.block:
            return "blocked", "blocked by THEMIS_BLOCK_PLUGINS or --no-plugin"
        if self.allow is not None and name in self.allow:
            return "pending", None
        if not self.autoload:
            return "disabled", "autoload disabled (THEMIS_DISABLE_PLUGIN_AUTOLOAD)"
        if self.allow is not None:
            return "disabled", "not listed in THEMIS_LOAD_PLUGINS"
        return "pending", None


@dataclasses.dataclass(eq=False)
class PluginRecord:
    """One plugin (an entry point, the core, or an in-process plugin) and its load state."""

    name: str
    namespace: str
    distribution: str | None
    version: str | None
    entry_point: importlib.metadata.EntryPoint | None = None
    status: RecordStatus = "pending"
    reason: str | None = None
    error: str | None = None
    exception: BaseException | None = None
    plugin: object | None = None
    pm_name: str = ""

    @property
    def entry_point_text(self) -> str | None:
        if self.entry_point is None:
            return None
        return f"{self.entry_point.name} = {self.entry_point.value}"

    def label(self) -> str:
        """``acme (themis-acme 0.3.1)``: how errors name a plugin."""
        if self.distribution is None:
            return f"`{self.name}`"
        return f"`{self.name}` ({self.distribution} {self.version or '?'})"

    def info(self) -> PluginInfo:
        status = "disabled" if self.status == "pending" else self.status
        return PluginInfo(
            name=self.name,
            distribution=self.distribution,
            version=self.version,
            entry_point=self.entry_point_text,
            status=status,
            error=self.error,
        )


def scan_entry_points(settings: PluginSettings) -> list[PluginRecord]:
    """Every entry point of the group ``themis``, with the status the settings give it."""
    records: list[PluginRecord] = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        name = namespace_of(ep.name)
        status, reason = settings.verdict(name)
        records.append(
            PluginRecord(
                name=name,
                namespace=name,
                distribution=dist.name if dist is not None else None,
                version=dist.version if dist is not None else None,
                entry_point=ep,
                status=status,
                reason=reason,
            )
        )
    # Stable order (by name, then distribution) so tables and duplicate errors are repeatable.
    records.sort(key=lambda r: (r.name, normalize_distribution(r.distribution or "")))
    return records


@functools.cache
def _packages_distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.cache
def distribution_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or ``None``."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def distribution_of_module(module: str) -> tuple[str | None, str | None]:
    """``(distribution, version)`` that installed the top-level package of ``module``."""
    top = module.partition(".")[0]
    names = _packages_distributions().get(top)
    # A top-level name shared by several distributions is ambiguous; the first one listed
    # is the best guess.
    name = names[0] if names else _editable_distribution_of(module)
    if name is None:
        return None, None
    return name, distribution_version(name)


@functools.cache
def _editable_roots() -> tuple[tuple[Path, str], ...]:
    # An editable install records a .pth file instead of the package's files, so
    # packages_distributions() cannot see it; the .pth names the source root instead.
    roots: list[tuple[Path, str]] = []
    for dist in importlib.metadata.distributions():
        for file in dist.files or ():
            if file.suffix != ".pth":
                continue
            try:
                text = file.read_text()
            except OSError:
                continue
            for line in text.splitlines():
                line = line.strip()
                if line and not line.startswith(("#", "import ")):
                    roots.append((Path(line).resolve(), dist.name))
    # Longest root first, so a nested source root wins over its parent.
    roots.sort(key=lambda item: len(item[0].parts), reverse=True)
    return tuple(roots)


def _editable_distribution_of(module: str) -> str | None:
    loaded = sys.modules.get(module)
    filename = getattr(loaded, "__file__", None)
    if not filename:
        return None
    path = Path(filename).resolve()
    for root, name in _editable_roots():
        if path.is_relative_to(root):
            return name
    return None


_RESERVED_FOR = {
    "core": "themis-core",
    "builtin": "the distribution themis-builtins",
    "local": "in-process registration with get_registry().register(...)",
    "themis": "future use by Themis",
}


def check_reserved(record: PluginRecord) -> None:
    """Raise ``NamespaceError`` if ``record`` claims a reserved namespace it does not own."""
    if record.namespace not in RESERVED_NAMESPACES:
        return
    owner = RESERVED_NAMESPACES[record.namespace]
    dist = normalize_distribution(record.distribution or "")
    if owner is not None and dist == owner:
        return
    raise NamespaceError(
        f"plugin {record.label()} cannot own the namespace `{record.namespace}/`: it is "
        f"reserved for {_RESERVED_FOR[record.namespace]}; rename the entry point"
    )
