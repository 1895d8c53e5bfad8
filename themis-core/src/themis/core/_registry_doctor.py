"""``themis plugins doctor``: load everything, import every target, check every contract."""

from __future__ import annotations

import inspect
from typing import Any

from themis.core._contracts import IDENTITY_KINDS, REQUIRED_METHODS, check_component
from themis.core._registry_entries import ComponentInfo, ComponentKind, PluginDetails
from themis.core._registry_targets import has_identity
from themis.core.errors import ThemisError
from themis.core.hookspecs import DoctorCheck
from themis.core.registry import Registry

__all__ = ["run_doctor"]


def run_doctor(registry: Registry) -> list[DoctorCheck]:
    """Every check of API §7.8, in order: plugins, duplicates, components, plugin checks."""
    details = registry.plugin_details()
    checks = [_plugin_check(detail) for detail in details]
    checks += [
        DoctorCheck(name="duplicates", status="fail", message=str(error))
        for error in registry.duplicates()
    ]
    for detail in details:
        checks += [_component_check(registry, info) for info in detail.components]
    for plugin, result in registry.call_doctor_checks():
        if isinstance(result, Exception):
            checks.append(
                DoctorCheck(
                    name=f"plugin {plugin}: doctor_checks",
                    status="fail",
                    message=f"the hook raised {type(result).__name__}: {result}",
                )
            )
            continue
        checks += [
            check.model_copy(update={"name": f"plugin {plugin}: {check.name}"}) for check in result
        ]
    return checks


def _plugin_check(detail: PluginDetails) -> DoctorCheck:
    name = f"plugin {detail.name}"
    dist = " ".join(p for p in (detail.distribution, detail.version) if p) or "in-process"
    if detail.status == "loaded":
        return DoctorCheck(
            name=name,
            status="ok",
            message=f"{dist}: loaded, {len(detail.components)} component(s)",
        )
    if detail.status == "failed":
        return DoctorCheck(
            name=name,
            status="fail",
            message=f"{dist}: {detail.error}; fix or uninstall {detail.distribution or 'it'}, "
            f"or skip it with --no-plugin {detail.name}",
        )
    return DoctorCheck(name=name, status="warn", message=f"{dist}: {detail.reason}")


def _component_check(registry: Registry, info: ComponentInfo) -> DoctorCheck:
    name = f"component {info.id}"
    try:
        target = registry.load_target(info.id)
    except ThemisError as exc:
        return DoctorCheck(name=name, status="fail", message=str(exc))
    if info.kind == ComponentKind.STORE:
        # A store may open or create files when built; doctor must not leave any behind,
        # so a store class is checked without being instantiated.
        return _store_check(name, target)
    if has_identity(target) and not isinstance(target, type):
        instances = [target, target]
    elif not _takes_no_arguments(target):
        return DoctorCheck(
            name=name, status="ok", message="imported; needs arguments, so not instantiated"
        )
    else:
        try:
            instances = [registry.create(info.kind, info.id), registry.create(info.kind, info.id)]
        except Exception as exc:
            return DoctorCheck(
                name=name,
                status="fail",
                message=f"instantiating it raised {type(exc).__name__}: {exc}",
            )
    try:
        check_component(instances[0], info.kind, info.id)
    except ThemisError as exc:
        return DoctorCheck(name=name, status="fail", message=str(exc))
    if info.kind not in IDENTITY_KINDS:
        return DoctorCheck(name=name, status="ok", message=f"{info.kind} contract met")
    try:
        first, second = (_fingerprint(obj) for obj in instances)
    except Exception as exc:
        return DoctorCheck(
            name=name, status="fail", message=f"fingerprint() raised {type(exc).__name__}: {exc}"
        )
    if first != second:
        return DoctorCheck(
            name=name,
            status="fail",
            message=f"fingerprint changes between two instances ({first} != {second}); "
            "derive it from the constructor parameters only",
        )
    return DoctorCheck(
        name=name, status="ok", message=f"{info.kind} contract met, fingerprint stable"
    )


def _store_check(name: str, target: object) -> DoctorCheck:
    if not isinstance(target, type):
        return DoctorCheck(name=name, status="ok", message="imported (a store factory)")
    missing = [m for m in REQUIRED_METHODS["store"] if not callable(getattr(target, m, None))]
    if missing:
        return DoctorCheck(
            name=name,
            status="fail",
            message=f"{target.__qualname__} lacks the RunStore method(s) {', '.join(missing)}",
        )
    return DoctorCheck(name=name, status="ok", message="imported; RunStore methods present")


def _takes_no_arguments(target: Any) -> bool:
    try:
        inspect.signature(target).bind()
    except TypeError:
        return False
    except ValueError:  # no signature available: try it
        return True
    return True


def _fingerprint(obj: object) -> str:
    value = getattr(obj, "fingerprint", None)
    return str(value() if callable(value) else value)
