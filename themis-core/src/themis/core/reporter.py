"""Reports of a stored run: JSON, Markdown, CSV, LaTeX, HTML and plugin formats (API §9.1).

Corpus values (``metric_aggregates``, e.g. corpus BLEU) need the live metric, which a stored
projection does not have. The ``Reporter`` fills them, for each metric the stored
projection left out, from the first source that has one:

1. ``corpus_scorers={metric_id: callable(list[Score]) -> float | None}``;
2. ``metrics=[...]``: live metric objects with a ``corpus_score`` method, used only when
   their identity (id, version, fingerprint) equals the one recorded in the run;
3. the run's own provenance (``rebuild_metrics=True``, the default): each metric that
   came from a registry id or an import path is rebuilt from its recorded spec, and used
   when its class defines ``corpus_score`` and its identity matches the run.

The scores fed to a corpus scorer are rebuilt from the run's non-error benchmark rows,
whose ``details`` carry the metric's sufficient statistics.
"""

from __future__ import annotations

import csv
import html
import importlib
import io
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from themis.core.errors import ConfigError, RunNotFoundError, ThemisError
from themis.core.logs import get_logger
from themis.core.models import Score
from themis.core.stats import StatsEngine

if TYPE_CHECKING:
    from themis.core.protocols import RunStore
    from themis.core.snapshot import RunSnapshot

__all__ = ["Reporter", "snapshot_report"]

log = get_logger(__name__)

CorpusScorer = Callable[[list[Score]], float | None]

# The columns of the score table, in order (CSV, LaTeX, HTML and the Markdown cases).
SCORE_COLUMNS: tuple[str, ...] = (
    "case_id",
    "dataset_id",
    "case_key",
    "metric_id",
    "outcome",
    "value",
    "candidate_id",
    "error_category",
    "error_message",
    "details",
)
# The projections ``export_json`` bundles, in the order API §9.1 lists them.
REPORT_PROJECTIONS: tuple[str, ...] = (
    "snapshot",
    "execution_state",
    "run_result",
    "benchmark_result",
    "timeline_view",
    "trace_view",
)
BUILTIN_FORMATS: tuple[str, ...] = ("json", "markdown", "csv", "latex", "html")
_FORMAT_ALIASES = {"md": "markdown", "tex": "latex"}
MARKDOWN_CASE_LIMIT = 50

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
}

_HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1f2328; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { border: 1px solid #d0d7de; padding: 0.3rem 0.6rem; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.error td { background: #fff5f5; }
code { font-size: 0.85rem; }
""".strip()


def snapshot_report(
    snapshot: RunSnapshot | Mapping[str, Any], run_metadata: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``{run_id, identity, provenance, component_refs, run_metadata}`` of a snapshot."""
    from themis.core.snapshot import RunSnapshot

    model = snapshot if isinstance(snapshot, RunSnapshot) else RunSnapshot.model_validate(snapshot)
    data = model.model_dump(mode="json")
    return {
        "run_id": model.run_id,
        "identity": data["identity"],
        "provenance": data["provenance"],
        "component_refs": data["component_refs"],
        "run_metadata": dict(run_metadata or {}),
    }


def _cell(value: Any) -> str:
    """A score-table value as text: ``details`` as canonical JSON, None as empty."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def _markdown_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


class Reporter:
    """Reports of the runs in ``store``; an unknown run raises ``RunNotFoundError``."""

    def __init__(
        self,
        store: RunStore,
        *,
        stats: StatsEngine | None = None,
        metrics: Sequence[Any] | None = None,
        corpus_scorers: Mapping[str, CorpusScorer] | None = None,
        rebuild_metrics: bool = True,
    ) -> None:
        self.store = store
        self.stats = stats or StatsEngine()
        self.metrics = list(metrics or [])
        self.corpus_scorers = dict(corpus_scorers or {})
        self.rebuild_metrics = rebuild_metrics

    # ------------------------------------------------------------------ data
    def _projection(self, run_id: str, name: str) -> dict[str, Any]:
        payload = self.store.get_projection(run_id, name)
        if payload is None:
            raise RunNotFoundError(
                f"Unknown run_id: {run_id}; {type(self.store).__name__} holds no such run "
                "(check the run id and the store it was written to)"
            )
        if not isinstance(payload, dict):
            raise ThemisError(
                f"{type(self.store).__name__}.get_projection({run_id!r}, {name!r}) returned "
                f"a {type(payload).__name__}, not a JSON object; the store is broken"
            )
        return payload

    def payloads(self, run_id: str) -> dict[str, Any]:
        """The six projections a report is built from, corpus values filled in."""
        payloads = {name: self._projection(run_id, name) for name in REPORT_PROJECTIONS}
        payloads["benchmark_result"] = self._with_corpus_values(
            payloads["snapshot"], payloads["benchmark_result"]
        )
        return payloads

    def benchmark_result(self, run_id: str) -> dict[str, Any]:
        """The stored ``benchmark_result`` with ``metric_aggregates`` completed."""
        return self._with_corpus_values(
            self._projection(run_id, "snapshot"), self._projection(run_id, "benchmark_result")
        )

    def _with_corpus_values(
        self, snapshot: dict[str, Any], benchmark: dict[str, Any]
    ) -> dict[str, Any]:
        aggregates = dict(benchmark.get("metric_aggregates") or {})
        scores: dict[str, list[Score]] = {}
        for row in benchmark.get("score_rows", []):
            if row.get("outcome") != "error" and row.get("value") is not None:
                scores.setdefault(row["metric_id"], []).append(
                    Score(
                        metric_id=row["metric_id"],
                        value=row["value"],
                        details=row.get("details") or {},
                    )
                )
        missing = [m for m in scores if m not in aggregates]
        if not missing:
            return benchmark
        scorers = self._corpus_scorers_for(snapshot, missing)
        for metric_id, scorer in scorers.items():
            try:
                value = scorer(scores[metric_id])
            except Exception as exc:  # a corpus value is extra; it must not break a report
                log.warning("report.corpus_score_failed", metric_id=metric_id, error=str(exc))
                continue
            if value is not None:
                aggregates[metric_id] = float(value)
        return {**benchmark, "metric_aggregates": aggregates}

    def _corpus_scorers_for(
        self, snapshot: dict[str, Any], metric_ids: list[str]
    ) -> dict[str, CorpusScorer]:
        from themis.core._compile import component_ref
        from themis.core.snapshot import ComponentRef

        recorded = {
            ref["component_id"]: ComponentRef.model_validate(ref)
            for ref in snapshot.get("component_refs", {}).get("metrics", [])
        }
        found: dict[str, CorpusScorer] = {}
        for metric_id in metric_ids:
            if metric_id in self.corpus_scorers:
                found[metric_id] = self.corpus_scorers[metric_id]
        for metric in self.metrics:
            live_id = getattr(metric, "component_id", None)
            scorer = getattr(metric, "corpus_score", None)
            if live_id not in metric_ids or live_id in found or not callable(scorer):
                continue
            if component_ref(metric) != recorded.get(live_id):
                log.warning(
                    "report.metric_mismatch",
                    metric_id=live_id,
                    reason="its identity differs from the run's; corpus value left out",
                )
                continue
            found[str(live_id)] = scorer
        if self.rebuild_metrics:
            for metric_id, scorer in _rebuilt_scorers(snapshot, recorded).items():
                if metric_id in metric_ids:
                    found.setdefault(metric_id, scorer)
        return found

    # ------------------------------------------------------------------ formats
    def export_json(self, run_id: str) -> str:
        """The snapshot, execution state, results and views of the run as indented JSON."""
        return json.dumps(self.payloads(run_id), indent=2, sort_keys=True)

    def export_score_table(self, run_id: str) -> list[dict[str, Any]]:
        """One dict per benchmark row, with the ten report columns."""
        benchmark = self._projection(run_id, "benchmark_result")
        return [
            {column: row.get(column) for column in SCORE_COLUMNS}
            for row in benchmark.get("score_rows", [])
        ]

    def export_csv(self, run_id: str) -> str:
        """The score table as CSV; ``details`` is a JSON column."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(SCORE_COLUMNS)
        for row in self.export_score_table(run_id):
            writer.writerow([_cell(row[column]) for column in SCORE_COLUMNS])
        return buffer.getvalue()

    def export_latex(self, run_id: str) -> str:
        """The score table as a LaTeX ``tabular``, every cell escaped."""
        lines = [
            "\\begin{tabular}{" + "l" * len(SCORE_COLUMNS) + "}",
            "\\hline",
            " & ".join(latex_escape(c) for c in SCORE_COLUMNS) + " \\\\",
            "\\hline",
        ]
        for row in self.export_score_table(run_id):
            cells = [latex_escape(_cell(row[column])) for column in SCORE_COLUMNS]
            lines.append(" & ".join(cells) + " \\\\")
        lines += ["\\hline", "\\end{tabular}"]
        return "\n".join(lines) + "\n"

    def export_markdown(self, run_id: str) -> str:
        """``# Run Report``: summary, metrics, error counts and the first 50 rows."""
        report = self._summary(run_id)
        lines = ["# Run Report", ""]
        lines += [f"- {label}: {value}" for label, value in report["summary"]]
        lines += ["", "## Metrics", ""]
        header = ["Metric", "Mean", report["ci_label"], "n", "Errors", "Corpus value"]
        lines += [_md_row(header), _md_row(["---"] * len(header))]
        lines += [_md_row(_metric_cells(m, s)) for m, s in report["metrics"].items()]
        if not report["metrics"]:
            lines.append("_No metrics._")
        lines += ["", "## Errors", ""]
        if report["errors"]:
            lines += [_md_row(["Metric", "Category", "Count"]), _md_row(["---"] * 3)]
            lines += [_md_row([m, c, str(n)]) for m, c, n in report["errors"]]
        else:
            lines.append("No errors.")
        rows = report["rows"]
        lines += ["", "## Cases", ""]
        columns = [c for c in SCORE_COLUMNS if c != "details"]
        lines += [_md_row(columns), _md_row(["---"] * len(columns))]
        for row in rows[:MARKDOWN_CASE_LIMIT]:
            lines.append(_md_row([_cell(row[c]) for c in columns]))
        if len(rows) > MARKDOWN_CASE_LIMIT:
            lines += ["", f"Showing the first {MARKDOWN_CASE_LIMIT} of {len(rows)} rows."]
        return "\n".join(lines) + "\n"

    def export_html(self, run_id: str) -> str:
        """One self-contained HTML page (inline CSS, no JavaScript) with every row."""
        report = self._summary(run_id)
        esc = html.escape
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en">',
            '<head><meta charset="utf-8">',
            f"<title>Run Report {esc(run_id[:12])}</title>",
            f"<style>\n{_HTML_STYLE}\n</style>",
            "</head>",
            "<body>",
            "<h1>Run Report</h1>",
            "<ul>",
        ]
        parts += [f"<li>{esc(label)}: {esc(str(value))}</li>" for label, value in report["summary"]]
        parts += ["</ul>", "<h2>Metrics</h2>"]
        header = ["Metric", "Mean", report["ci_label"], "n", "Errors", "Corpus value"]
        parts.append(
            _html_table(header, [_metric_cells(m, s) for m, s in report["metrics"].items()])
        )
        parts.append("<h2>Errors</h2>")
        if report["errors"]:
            errors = [[m, c, str(n)] for m, c, n in report["errors"]]
            parts.append(_html_table(["Metric", "Category", "Count"], errors))
        else:
            parts.append("<p>No errors.</p>")
        parts.append("<h2>Cases</h2>")
        rows = report["rows"]
        cells = [[_cell(row[c]) for c in SCORE_COLUMNS] for row in rows]
        error_rows = [row["outcome"] == "error" for row in rows]
        parts.append(_html_table(list(SCORE_COLUMNS), cells, error_rows))
        parts += ["</body>", "</html>"]
        return "\n".join(parts) + "\n"

    def export(self, run_id: str, format: str) -> str | bytes:
        """Render ``format`` (json, markdown, csv, latex, html, or a report_format plugin)."""
        name = _FORMAT_ALIASES.get(format.lower(), format.lower())
        builtin: dict[str, Callable[[str], str]] = {
            "json": self.export_json,
            "markdown": self.export_markdown,
            "csv": self.export_csv,
            "latex": self.export_latex,
            "html": self.export_html,
        }
        if name in builtin:
            return builtin[name](run_id)
        renderer = _report_format(format)
        rendered: str | bytes = renderer.render(self.payloads(run_id))
        return rendered

    # ------------------------------------------------------------------ shared
    def _summary(self, run_id: str) -> dict[str, Any]:
        run_result = self._projection(run_id, "run_result")
        benchmark = self.benchmark_result(run_id)
        progress = run_result.get("progress") or {}
        aggregate = self.stats.aggregate(benchmark)
        summary: list[tuple[str, Any]] = [
            ("Run ID", run_id),
            ("Status", run_result.get("status")),
            (
                "Cases",
                f"{progress.get('total_cases', 0)} total, "
                f"{progress.get('completed_cases', 0)} completed, "
                f"{progress.get('failed_cases', 0)} failed",
            ),
            ("Datasets", ", ".join(benchmark.get("dataset_ids", [])) or "-"),
            ("Completed through stage", run_result.get("completed_through_stage") or "-"),
        ]
        errors = [
            (metric_id, category, count)
            for metric_id, categories in (benchmark.get("error_counts") or {}).items()
            for category, count in sorted(categories.items())
            if count
        ]
        confidence = self.stats.confidence
        return {
            "summary": summary,
            "metrics": aggregate["metrics"],
            "errors": errors,
            "rows": [
                {column: row.get(column) for column in SCORE_COLUMNS}
                for row in benchmark.get("score_rows", [])
            ],
            "ci_label": f"{confidence * 100:g}% CI",
        }


def _metric_cells(metric_id: str, stats: Mapping[str, Any]) -> list[str]:
    ci = f"[{_number(stats['ci_lower'])}, {_number(stats['ci_upper'])}]" if stats["count"] else "-"
    return [
        metric_id,
        _number(stats["mean"]),
        ci,
        str(stats["count"]),
        str(stats["errors"]),
        _number(stats.get("corpus_value")),
    ]


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_markdown_escape(c) for c in cells) + " |"


def _html_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], error_rows: Sequence[bool] = ()
) -> str:
    esc = html.escape
    out = [
        "<table>",
        "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead>",
    ]
    out.append("<tbody>")
    for i, row in enumerate(rows):
        css = ' class="error"' if i < len(error_rows) and error_rows[i] else ""
        out.append(f"<tr{css}>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


def _report_format(format: str) -> Any:
    from themis.core.errors import UnknownComponentError
    from themis.core.registry import get_registry

    try:
        return get_registry().resolve("report_format", format)
    except UnknownComponentError as exc:
        raise ConfigError(
            f"unknown report format {format!r}; use one of {', '.join(BUILTIN_FORMATS)} or "
            f"the id or alias of an installed report_format plugin ({exc})"
        ) from exc


def _rebuilt_scorers(
    snapshot: Mapping[str, Any], recorded: Mapping[str, Any]
) -> dict[str, CorpusScorer]:
    """Corpus scorers of the run's metrics, rebuilt from the specs in its provenance."""
    from themis.core._compile import component_ref
    from themis.core.registry import get_registry

    found: dict[str, CorpusScorer] = {}
    provenance = snapshot.get("provenance") or {}
    for entry in provenance.get("components") or []:
        slot, source, spec = entry.get("slot", ""), entry.get("source"), entry.get("spec")
        metric_id = entry.get("component_id")
        if not slot.startswith("metrics[") or source == "object" or spec is None:
            continue
        # Import the class first: instantiating a metric only to learn that it has no
        # corpus_score could be costly (a model-backed metric loads its model).
        cls = _import_class(entry.get("python_class") or "")
        if cls is None or not callable(getattr(cls, "corpus_score", None)):
            continue
        try:
            metric = get_registry().resolve("metric", spec)
        except Exception as exc:  # the plugin may be gone; the report still renders
            log.info("report.metric_not_rebuilt", metric_id=metric_id, error=str(exc))
            continue
        if component_ref(metric) != recorded.get(metric_id):
            log.warning(
                "report.metric_mismatch",
                metric_id=metric_id,
                reason="the installed metric differs from the run's; corpus value left out",
            )
            continue
        found[str(metric_id)] = metric.corpus_score
    return found


def _import_class(path: str) -> Any:
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname:
        return None
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return obj
