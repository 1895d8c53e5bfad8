"""Reporter formats, corpus values, quickcheck and snapshot_report on real runs (§9.1)."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import pytest
from themis.core.config import EvaluationConfig, GenerationConfig
from themis.core.errors import ConfigError, RunNotFoundError
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset, Score
from themis.core.quickcheck import quickcheck
from themis.core.registry import Registry, use_registry
from themis.core.reporter import SCORE_COLUMNS, Reporter, latex_escape, snapshot_report
from themis.core.stats import StatsEngine
from themis.core.stores import InMemoryRunStore
from themis_builtins.bleu import Bleu

CAT = "the cat sat on the mat"
FOX = "a quick brown fox jumps"
NASTY_ID = "x_&%$#{}~^\\|<script>alert(1)</script>"


def experiment(cases: list[Case], metrics: list[Any] | None = None) -> Experiment:
    return Experiment(
        generation=GenerationConfig(generator="builtin/demo_generator"),
        evaluation=EvaluationConfig(
            metrics=metrics or ["builtin/exact_match", {"id": "builtin/bleu"}],
            parsers=["builtin/json_identity"],
        ),
        datasets=[Dataset(dataset_id="sample", cases=cases)],
    )


@pytest.fixture(scope="module")
def stored() -> tuple[InMemoryRunStore, str]:
    """A finished run: two correct rows, one wrong, one BLEU error, one nasty case id."""
    cases = [
        Case(
            case_id="c1", input="the cat sat on the mat", expected_output="the cat sat on the mat"
        ),
        Case(case_id="c2", input="a b c d e", expected_output=None),
        Case(
            case_id=NASTY_ID,
            input="a quick brown fox jumps",
            expected_output="a quick brown fox jumps",
        ),
    ]
    store = InMemoryRunStore()
    result = experiment(cases).run(store=store)
    return store, result.run_id


@pytest.fixture(scope="module")
def reporter(stored: tuple[InMemoryRunStore, str]) -> Reporter:
    return Reporter(stored[0], stats=StatsEngine(resamples=500))


# ---------------------------------------------------------------- Markdown


def test_markdown_first_line_is_exactly_run_report(
    reporter: Reporter, stored: tuple[Any, str]
) -> None:
    text = reporter.export_markdown(stored[1])
    assert text.splitlines()[0] == "# Run Report"


def test_markdown_has_summary_metrics_errors_and_cases(
    reporter: Reporter, stored: tuple[Any, str]
) -> None:
    run_id = stored[1]
    text = reporter.export_markdown(run_id)
    assert f"- Run ID: {run_id}" in text
    assert "- Status: partial_failure" in text
    assert "- Cases: 3 total, 2 completed, 1 failed" in text
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections == ["## Metrics", "## Errors", "## Cases"]
    assert "| Metric | Mean | 95% CI | n | Errors | Corpus value |" in text
    exact = next(line for line in text.splitlines() if line.startswith("| builtin/exact_match"))
    assert exact.split(" | ")[1:5] == ["0.6667", exact.split(" | ")[2], "3", "0"]
    assert "| builtin/bleu | score_failure | 1 |" in text


def test_markdown_shows_the_corpus_value_rebuilt_from_the_run(
    reporter: Reporter, stored: tuple[InMemoryRunStore, str]
) -> None:
    store, run_id = stored
    rows = store.get_projection(run_id, "benchmark_result")["score_rows"]
    scores = [
        Score(metric_id=r["metric_id"], value=r["value"], details=r["details"])
        for r in rows
        if r["metric_id"] == "builtin/bleu" and r["outcome"] != "error"
    ]
    expected = Bleu().corpus_score(scores)
    assert expected is not None and expected > 0
    bleu = next(
        line for line in reporter.export_markdown(run_id).splitlines() if "| builtin/bleu |" in line
    )
    assert bleu.rstrip(" |").endswith(f"{expected:.4f}")


def test_markdown_escapes_pipes_in_cells(reporter: Reporter, stored: tuple[Any, str]) -> None:
    text = reporter.export_markdown(stored[1])
    assert "x_&%$#{}~^\\\\\\|<script>" in text


def test_markdown_lists_only_the_first_50_rows() -> None:
    cases = [Case(case_id=f"c{i:02d}", input=i, expected_output=i) for i in range(60)]
    store = InMemoryRunStore()
    run_id = experiment(cases, metrics=["builtin/exact_match"]).run(store=store).run_id
    text = Reporter(store, stats=StatsEngine(resamples=50)).export_markdown(run_id)
    case_lines = [line for line in text.splitlines() if re.match(r"\| c\d\d ", line)]
    assert len(case_lines) == 50
    assert "Showing the first 50 of 60 rows." in text
    html = Reporter(store, stats=StatsEngine(resamples=50)).export_html(run_id)
    assert html.count("<tr><td>c") == 60  # HTML keeps every row


# ---------------------------------------------------------------- CSV, LaTeX, HTML, JSON


def test_csv_has_the_ten_columns_and_one_line_per_row(
    reporter: Reporter, stored: tuple[InMemoryRunStore, str]
) -> None:
    store, run_id = stored
    rows = list(csv.reader(io.StringIO(reporter.export_csv(run_id))))
    assert rows[0] == [
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
    ]
    stored_rows = store.get_projection(run_id, "benchmark_result")["score_rows"]
    assert len(rows) - 1 == len(stored_rows) == 6
    by_case = {(r[0], r[3]): r for r in rows[1:]}
    assert by_case[(NASTY_ID, "builtin/exact_match")][4] == "correct"
    error = by_case[("c2", "builtin/bleu")]
    assert (error[4], error[5], error[7]) == ("error", "", "score_failure")
    assert json.loads(by_case[("c1", "builtin/bleu")][9])["hyp_len"] == 6


def test_score_table_is_one_dict_per_row(reporter: Reporter, stored: tuple[Any, str]) -> None:
    table = reporter.export_score_table(stored[1])
    assert len(table) == 6
    assert all(tuple(row) == SCORE_COLUMNS for row in table)
    assert isinstance(table[0]["details"], dict)


def test_latex_escapes_every_special_character() -> None:
    assert latex_escape("a_b&c%d$e#f{g}h~i^j\\k<l>m|n") == (
        r"a\_b\&c\%d\$e\#f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"
        r"\textless{}l\textgreater{}m\textbar{}n"
    )


def test_latex_is_a_ten_column_tabular(reporter: Reporter, stored: tuple[Any, str]) -> None:
    text = reporter.export_latex(stored[1])
    lines = text.splitlines()
    assert lines[0] == "\\begin{tabular}{llllllllll}"
    assert lines[-1] == "\\end{tabular}"
    body = [line for line in lines if line.endswith("\\\\")]
    assert len(body) == 7  # header + 6 rows
    assert all(line.count(" & ") == 9 for line in body)
    nasty = next(line for line in body if line.startswith("x"))
    assert nasty.startswith(r"x\_\&\%\$\#\{\}\textasciitilde{}\textasciicircum{}\textbackslash{}")
    # No special character is left unescaped outside the escapes themselves.
    stripped = re.sub(
        r"\\(textbackslash|textasciitilde|textasciicircum|textless|textgreater"
        r"|textbar)\{\}|\\[&%$#_{}]",
        "",
        "\n".join(body),
    )
    stripped = stripped.replace(" & ", " ").replace("\\\\", "")
    assert not set(stripped) & set("&%$#_{}~^\\<>|")


def test_html_is_self_contained_escaped_and_has_no_script(
    reporter: Reporter, stored: tuple[Any, str]
) -> None:
    page = reporter.export_html(stored[1])
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<style>" in page
    assert not re.search(r"""(src|href)=|@import|url\(""", page)
    for heading in ("<h1>Run Report</h1>", "<h2>Metrics</h2>", "<h2>Errors</h2>", "<h2>Cases</h2>"):
        assert heading in page
    assert page.count('<tr class="error">') == 1


def test_json_bundles_the_six_projections(
    reporter: Reporter, stored: tuple[InMemoryRunStore, str]
) -> None:
    store, run_id = stored
    payload = json.loads(reporter.export_json(run_id))
    assert set(payload) == {
        "snapshot",
        "execution_state",
        "run_result",
        "benchmark_result",
        "timeline_view",
        "trace_view",
    }
    assert payload["run_result"] == store.get_projection(run_id, "run_result")
    assert "builtin/bleu" in payload["benchmark_result"]["metric_aggregates"]


# ---------------------------------------------------------------- corpus value sources


def test_explicit_corpus_scorers_fill_missing_aggregates(stored: tuple[Any, str]) -> None:
    store, run_id = stored
    seen: list[int] = []

    def scorer(scores: list[Score]) -> float:
        seen.append(len(scores))
        return 0.125

    reporter = Reporter(store, corpus_scorers={"builtin/bleu": scorer}, rebuild_metrics=False)
    assert reporter.benchmark_result(run_id)["metric_aggregates"] == {"builtin/bleu": 0.125}
    assert seen == [2]  # the two non-error BLEU rows


def test_without_any_source_no_corpus_value_is_invented(stored: tuple[Any, str]) -> None:
    store, run_id = stored
    reporter = Reporter(store, rebuild_metrics=False)
    assert reporter.benchmark_result(run_id)["metric_aggregates"] == {}


def test_a_live_metric_with_another_identity_is_not_used(stored: tuple[Any, str]) -> None:
    store, run_id = stored
    other = Reporter(store, metrics=[Bleu(max_order=2)], rebuild_metrics=False)
    assert other.benchmark_result(run_id)["metric_aggregates"] == {}
    same = Reporter(store, metrics=[Bleu()], rebuild_metrics=False)
    assert set(same.benchmark_result(run_id)["metric_aggregates"]) == {"builtin/bleu"}


# ---------------------------------------------------------------- dispatch and errors


def test_export_dispatches_to_each_builtin_format(
    reporter: Reporter, stored: tuple[Any, str]
) -> None:
    run_id = stored[1]
    assert reporter.export(run_id, "markdown") == reporter.export_markdown(run_id)
    assert reporter.export(run_id, "csv") == reporter.export_csv(run_id)
    assert reporter.export(run_id, "latex") == reporter.export_latex(run_id)
    assert reporter.export(run_id, "html") == reporter.export_html(run_id)
    assert reporter.export(run_id, "json") == reporter.export_json(run_id)


class UpperFormat:
    """A report_format plugin: the run id and status, upper-cased."""

    format_id = "local/upper"
    media_type = "text/plain"
    file_extension = "txt"

    def render(self, payloads: dict[str, Any]) -> str:
        return f"{payloads['run_result']['run_id']} {payloads['run_result']['status']}".upper()


def test_export_uses_a_report_format_plugin(stored: tuple[InMemoryRunStore, str]) -> None:
    store, run_id = stored
    registry = Registry(autoload=False, env={})
    registry.register("report_format", "local/upper", UpperFormat, aliases=("upper",))
    with use_registry(registry):
        assert Reporter(store).export(run_id, "upper") == f"{run_id} PARTIAL_FAILURE".upper()


def test_export_of_an_unknown_format_names_the_choices(stored: tuple[Any, str]) -> None:
    store, run_id = stored
    with pytest.raises(ConfigError, match=r"unknown report format 'pdf'.*json, markdown"):
        Reporter(store).export(run_id, "pdf")


@pytest.mark.parametrize(
    "method",
    [
        "export_json",
        "export_markdown",
        "export_csv",
        "export_latex",
        "export_html",
        "export_score_table",
    ],
)
def test_unknown_run_raises_run_not_found(method: str) -> None:
    with pytest.raises(RunNotFoundError, match="Unknown run_id: nope"):
        getattr(Reporter(InMemoryRunStore()), method)("nope")


# ---------------------------------------------------------------- quickcheck, snapshot_report


def test_quickcheck_summarises_the_run(stored: tuple[InMemoryRunStore, str]) -> None:
    store, run_id = stored
    check = quickcheck(store, run_id)
    assert check == {
        "run_id": run_id,
        "status": "partial_failure",
        "total_cases": 3,
        "completed_cases": 2,
        "failed_cases": 1,
        "metric_means": store.get_projection(run_id, "benchmark_result")["metric_means"],
        "score_rows": 6,
    }
    assert check["metric_means"]["builtin/exact_match"] == pytest.approx(2 / 3)


def test_quickcheck_of_an_unknown_run() -> None:
    with pytest.raises(RunNotFoundError, match="Unknown run_id: missing"):
        quickcheck(InMemoryRunStore(), "missing")


def test_snapshot_report_has_the_five_keys(stored: tuple[InMemoryRunStore, str]) -> None:
    store, run_id = stored
    snapshot = store.load_snapshot(run_id)
    assert snapshot is not None
    report = snapshot_report(snapshot, {"owner": "qa"})
    assert set(report) == {"run_id", "identity", "provenance", "component_refs", "run_metadata"}
    assert report["run_id"] == run_id
    assert report["run_metadata"] == {"owner": "qa"}
    assert snapshot_report(snapshot.model_dump(mode="json")) == {**report, "run_metadata": {}}
