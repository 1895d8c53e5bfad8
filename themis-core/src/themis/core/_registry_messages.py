"""The wording of registry errors: each names the thing, the plugins involved and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from themis.core._discovery import PluginRecord
from themis.core._registry_entries import Entry

__all__ = ["duplicate_message", "failed_plugin_note", "plugins_line", "unknown_message"]

# First-party namespaces and aliases whose distribution can be named in the fix.
_FIRST_PARTY = {
    "builtin": ("themis-builtins", 'pip install "themis-eval"'),
    "sqlite": ("themis-store-sqlite", 'pip install "themis-eval[sqlite]"'),
    "otel": ("themis-otel", 'pip install "themis-eval[otel]"'),
    "openai": ("themis-openai", 'pip install "themis-eval[openai]"'),
}


def plugins_line(records: Sequence[PluginRecord]) -> str:
    """``core (themis-core 0.1.0), acme (themis-acme 0.3.1, failed)``."""
    parts = []
    for record in records:
        detail = " ".join(p for p in (record.distribution, record.version) if p)
        if record.status not in ("loaded", "pending"):
            detail = f"{detail}, {record.status}" if detail else record.status
        parts.append(f"{record.name} ({detail})" if detail else record.name)
    return ", ".join(parts) if parts else "none"


def failed_plugin_note(record: PluginRecord) -> str:
    """Why the plugin owning a namespace contributed nothing, and what to do about it."""
    where = f", entry point `{record.entry_point_text}`" if record.entry_point_text else ""
    dist = f"{record.distribution} {record.version or '?'}" if record.distribution else "?"
    if record.status == "failed":
        return (
            f"note: the plugin `{record.name}` ({dist}{where}) owns this namespace but failed "
            f"to load: {record.error}. Fix or reinstall {record.distribution or 'it'}, or skip "
            f"it with --no-plugin {record.name}"
        )
    return (
        f"note: the plugin `{record.name}` ({dist}{where}) owns this namespace but is "
        f"{record.status}: {record.reason}"
    )


def unknown_message(
    kind: str | None,
    ref: str,
    candidates: Iterable[str],
    records: Sequence[PluginRecord],
    *,
    owners: Sequence[PluginRecord] = (),
    owned: bool = False,
) -> str:
    """The ``UnknownComponentError`` text of API §7.7.

    ``owners`` are the plugins of the ref's namespace that did not load; ``owned`` says
    whether any installed plugin claims that namespace at all.
    """
    what = f"{kind} " if kind else "component "
    lines = [f"unknown {what}`{ref}`"]
    pool = sorted(set(candidates))
    matches = difflib.get_close_matches(ref, pool, n=3, cutoff=0.6)
    if "/" not in ref:
        # A bare name may be the tail of an id: `exact_match` -> `builtin/exact_match`.
        tails = {c.partition("/")[2]: c for c in pool if "/" in c}
        for tail in difflib.get_close_matches(ref, list(tails), n=3, cutoff=0.6):
            if tails[tail] not in matches:
                matches.append(tails[tail])
        matches = matches[:3]
    if matches:
        lines.append("did you mean: " + ", ".join(f"`{m}`" for m in matches) + "?")
    lines.append(f"installed plugins: {plugins_line(records)}")
    lines.append(f"`{ref}` is either misspelled or its plugin is not installed")
    namespace = ref.partition("/")[0] if "/" in ref else ref
    for owner in owners:
        lines.append(failed_plugin_note(owner))
    if not owned and namespace in _FIRST_PARTY:
        distribution, command = _FIRST_PARTY[namespace]
        lines.append(f"`{namespace}` is provided by {distribution}: {command}")
    return "\n  ".join(lines)


def duplicate_message(what: str, name: str, first: Entry, second: Entry) -> str:
    """The ``DuplicateComponentError`` text: the id or alias and both owners with versions."""
    if first.distribution == second.distribution and first.plugin == second.plugin:
        return (
            f"{what} `{name}` is registered twice by {first.owner()}; "
            "register each id and alias once"
        )
    return (
        f"{what} `{name}` is registered by two plugins: {first.owner()} and {second.owner()}; "
        f"uninstall one of {first.distribution or first.plugin} and "
        f"{second.distribution or second.plugin}"
    )
