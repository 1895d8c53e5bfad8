"""``run_doctor``: what ``themis plugins doctor`` checks, on an isolated registry."""

from __future__ import annotations

import itertools

import themis
from themis.core._registry_doctor import run_doctor
from themis.core.hookspecs import DoctorCheck
from themis.core.registry import ComponentRegistrar, Registry

_counter = itertools.count()


class GoodParser:
    component_id = "doc/good"
    version = "1"

    def fingerprint(self) -> str:
        return "stable"

    def parse(self, candidate: object, ctx: object) -> None:
        return None


class NoFingerprint:
    component_id = "doc/nofp"
    version = "1"

    def parse(self, candidate: object, ctx: object) -> None:
        return None


class Unstable(GoodParser):
    def fingerprint(self) -> str:
        return str(next(_counter))


class NeedsArguments(GoodParser):
    def __init__(self, model: str) -> None:
        self.model = model


class ExplodingConstructor(GoodParser):
    def __init__(self) -> None:
        raise RuntimeError("no credentials")


class HalfStore:
    def initialize(self) -> None:
        return None


class DocPlugin:
    @themis.hookimpl
    def register_components(self, registry: ComponentRegistrar) -> None:
        registry.parser("doc/good", GoodParser)
        registry.parser("doc/nofp", NoFingerprint)
        registry.parser("doc/unstable", Unstable)
        registry.parser("doc/args", NeedsArguments)
        registry.parser("doc/explodes", ExplodingConstructor)
        registry.parser("doc/missing", "themis_no_such_module:Parser")
        registry.store("doc/halfstore", HalfStore)

    @themis.hookimpl
    def doctor_checks(self) -> list[DoctorCheck]:
        return [DoctorCheck(name="api-key", status="warn", message="DOC_API_KEY is not set")]


def doctor(themis_registry: Registry) -> dict[str, DoctorCheck]:
    themis_registry.add_plugin(DocPlugin(), name="doc", distribution="doc-dist", version="1.0")
    return {check.name: check for check in run_doctor(themis_registry)}


def test_a_loaded_plugin_is_ok(themis_registry: Registry) -> None:
    checks = doctor(themis_registry)
    assert checks["plugin doc"].status == "ok"
    assert checks["plugin doc"].message == "doc-dist 1.0: loaded, 7 component(s)"


def test_a_good_component_passes_contract_and_fingerprint(themis_registry: Registry) -> None:
    check = doctor(themis_registry)["component doc/good"]
    assert (check.status, check.message) == ("ok", "parser contract met, fingerprint stable")


def test_a_missing_identity_member_fails(themis_registry: Registry) -> None:
    check = doctor(themis_registry)["component doc/nofp"]
    assert check.status == "fail" and "has no fingerprint()" in check.message


def test_an_unstable_fingerprint_fails(themis_registry: Registry) -> None:
    check = doctor(themis_registry)["component doc/unstable"]
    assert check.status == "fail" and "fingerprint changes between two instances" in check.message


def test_a_component_that_needs_arguments_is_only_imported(themis_registry: Registry) -> None:
    check = doctor(themis_registry)["component doc/args"]
    assert (check.status, check.message) == ("ok", "imported; needs arguments, so not instantiated")


def test_a_raising_constructor_fails(themis_registry: Registry) -> None:
    check = doctor(themis_registry)["component doc/explodes"]
    assert check.status == "fail" and "RuntimeError: no credentials" in check.message


def test_an_unimportable_target_fails_naming_the_plugin(themis_registry: Registry) -> None:
    check = doctor(themis_registry)["component doc/missing"]
    assert check.status == "fail"
    assert "plugin `doc` (doc-dist 1.0)" in check.message


def test_a_store_is_checked_without_being_built(themis_registry: Registry) -> None:
    check = doctor(themis_registry)["component doc/halfstore"]
    assert check.status == "fail" and "lacks the RunStore method(s) close" in check.message


def test_plugin_doctor_checks_are_included_under_the_plugin_name(
    themis_registry: Registry,
) -> None:
    check = doctor(themis_registry)["plugin doc: api-key"]
    assert (check.status, check.message) == ("warn", "DOC_API_KEY is not set")


def test_disabled_plugins_are_warnings() -> None:
    registry = Registry(env={"THEMIS_LOAD_PLUGINS": ""})
    checks = {c.name: c for c in run_doctor(registry)}
    assert checks["plugin acme"].status == "warn"
    assert "not listed in THEMIS_LOAD_PLUGINS" in checks["plugin acme"].message
