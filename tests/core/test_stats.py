"""StatsEngine against hand-computed values: bootstrap, sign and permutation tests (§9.2)."""

from __future__ import annotations

import itertools
import math
import random
import statistics
from typing import Any

import pytest
from themis.core.read_models import BenchmarkResult
from themis.core.stats import StatsEngine, binomial_draw, quantile


def row(
    case_id: str,
    metric_id: str,
    value: float | None,
    *,
    dataset_id: str = "ds",
    category: str | None = None,
) -> dict[str, Any]:
    """One benchmark row as the stored projection spells it."""
    return {
        "case_id": case_id,
        "dataset_id": dataset_id,
        "case_key": f"{len(dataset_id)}:{dataset_id}:{case_id}",
        "metric_id": metric_id,
        "value": value,
        "candidate_id": f"{case_id}-reduced",
        "outcome": "error" if value is None else ("correct" if value >= 1.0 else "incorrect"),
        "error_category": category if value is None else None,
        "error_message": "boom" if value is None else None,
        "details": {},
    }


def bench(run_id: str, rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    metric_ids = list(dict.fromkeys(r["metric_id"] for r in rows))
    return {"run_id": run_id, "metric_ids": metric_ids, "score_rows": rows, **extra}


# ---------------------------------------------------------------- primitives


def test_quantile_interpolates_linearly_between_order_statistics() -> None:
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.25) == pytest.approx(1.75)
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == pytest.approx(2.5)
    assert quantile([1.0, 2.0, 3.0, 4.0], 1.0) == 4.0
    assert quantile([5.0], 0.9) == 5.0


def test_bootstrap_ci_of_a_single_value_is_that_value() -> None:
    assert StatsEngine().bootstrap_ci([0.7]) == (0.7, 0.7)


def test_bootstrap_ci_of_no_value_is_zero_zero() -> None:
    assert StatsEngine().bootstrap_ci([]) == (0.0, 0.0)


def test_bootstrap_ci_of_identical_values_collapses() -> None:
    assert StatsEngine(resamples=200).bootstrap_ci([0.25] * 40) == (0.25, 0.25)


def test_bootstrap_is_deterministic_for_a_seed_and_moves_with_it() -> None:
    rng = random.Random(3)
    values = [rng.random() for _ in range(30)]
    first = StatsEngine(resamples=500, seed=5).bootstrap_ci(values)
    again = StatsEngine(resamples=500, seed=5).bootstrap_ci(values)
    other = StatsEngine(resamples=500, seed=6).bootstrap_ci(values)
    assert first == again
    assert first != other


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_confidence() -> None:
    values = [float(i % 3 == 0) for i in range(300)]
    wide = StatsEngine(resamples=2000, confidence=0.99).bootstrap_ci(values)
    narrow = StatsEngine(resamples=2000, confidence=0.80).bootstrap_ci(values)
    mean = statistics.fmean(values)
    assert wide[0] < narrow[0] < mean < narrow[1] < wide[1]


def test_bootstrap_matches_the_normal_interval_on_a_large_binary_sample() -> None:
    """For 0/1 data with n=2000 the 95 % interval is close to mean +/- 1.96·se."""
    values = [float(i % 4 == 0) for i in range(2000)]
    lower, upper = StatsEngine(resamples=4000).bootstrap_ci(values)
    se = math.sqrt(0.25 * 0.75 / 2000)
    assert lower == pytest.approx(0.25 - 1.96 * se, abs=0.004)
    assert upper == pytest.approx(0.25 + 1.96 * se, abs=0.004)


def test_grouped_and_per_case_resampling_agree_in_distribution() -> None:
    """Few distinct levels use multinomial draws; the interval must match plain resampling."""
    levels = [float(i % 5) / 4 for i in range(5000)]  # 5 levels: grouped path
    jitter = [v + i * 1e-9 for i, v in enumerate(levels)]  # all distinct: per-case path
    grouped = StatsEngine(resamples=600).bootstrap_ci(levels)
    per_case = StatsEngine(resamples=600).bootstrap_ci(jitter)
    assert grouped[0] == pytest.approx(per_case[0], abs=0.004)
    assert grouped[1] == pytest.approx(per_case[1], abs=0.004)


@pytest.mark.parametrize(("n", "p"), [(12, 0.3), (900, 0.5), (50_000, 0.02), (9, 0.95)])
def test_binomial_draw_has_the_binomial_mean_and_variance(n: int, p: float) -> None:
    rng = random.Random(11)
    draws = [binomial_draw(rng, n, p) for _ in range(20_000)]
    assert all(0 <= d <= n for d in draws)
    assert statistics.fmean(draws) == pytest.approx(n * p, rel=0.02)
    assert statistics.pvariance(draws) == pytest.approx(n * p * (1 - p), rel=0.06)


def test_binomial_draw_edges() -> None:
    rng = random.Random(0)
    assert binomial_draw(rng, 0, 0.5) == 0
    assert binomial_draw(rng, 10, 0.0) == 0
    assert binomial_draw(rng, 10, 1.0) == 10


def test_sign_test_equals_the_exact_binomial_test() -> None:
    """8 wins, 2 losses: p = 2·(C(10,0)+C(10,1)+C(10,2))/2^10 = 112/1024."""
    deltas = [1.0] * 8 + [-0.5] * 2 + [0.0] * 3
    assert StatsEngine().sign_test(deltas) == pytest.approx(112 / 1024, abs=1e-10)


def test_sign_test_with_no_nonzero_delta_is_one() -> None:
    assert StatsEngine().sign_test([0.0, 0.0]) == 1.0
    assert StatsEngine().sign_test([]) == 1.0


def test_sign_test_balanced_signs_is_one() -> None:
    assert StatsEngine().sign_test([1.0, -1.0, 2.0, -3.0]) == 1.0


def test_exact_permutation_p_value_on_three_deltas() -> None:
    """Deltas 1, 2, 3: of the 8 sign flips only +/-6 reach |6|, so p = 2/8."""
    assert StatsEngine().permutation_test([1.0, 2.0, 3.0]) == 0.25


def test_exact_permutation_ignores_zero_deltas() -> None:
    assert StatsEngine().permutation_test([0.0, 1.0, 0.0, 2.0, 3.0]) == 0.25


def test_exact_permutation_p_value_with_mixed_signs() -> None:
    """Deltas .5, 1, 1, -.25 (sum 2.25): 4 of the 16 flips reach |2.25|."""
    assert StatsEngine().permutation_test([0.5, 1.0, 1.0, -0.25]) == 0.25


def test_exact_permutation_of_a_zero_sum_is_one() -> None:
    assert StatsEngine().permutation_test([1.0, 2.0, -3.0]) == 1.0


def test_permutation_with_no_nonzero_delta_is_one() -> None:
    assert StatsEngine().permutation_test([0.0, 0.0, 0.0]) == 1.0


def test_permutation_with_equal_magnitudes_is_the_exact_sign_test() -> None:
    """20 deltas of +/-1 (17 up, 3 down): exact binomial, 2·Σ_{k≤3} C(20,k)/2^20."""
    deltas = [1.0] * 17 + [-1.0] * 3
    expected = 2 * sum(math.comb(20, k) for k in range(4)) / 2**20
    engine = StatsEngine(permutations=10)  # a Monte Carlo test could not reach this value
    assert engine.permutation_test(deltas) == pytest.approx(expected, abs=1e-10)
    assert engine.permutation_test(deltas) == engine.sign_test(deltas)


def test_exact_permutation_matches_brute_force_enumeration() -> None:
    rng = random.Random(2)
    deltas = [round(rng.uniform(-1, 1), 3) for _ in range(12)]
    observed = abs(sum(deltas))
    extreme = sum(
        1
        for signs in itertools.product((1, -1), repeat=12)
        if abs(sum(s * abs(d) for s, d in zip(signs, deltas, strict=True))) >= observed - 1e-9
    )
    assert StatsEngine().permutation_test(deltas) == pytest.approx(extreme / 2**12, abs=1e-10)


def test_monte_carlo_permutation_uses_add_one_and_approaches_the_exact_value() -> None:
    rng = random.Random(4)
    deltas = [rng.uniform(-1, 1) + 0.15 for _ in range(18)]
    magnitudes = [abs(d) for d in deltas]
    total, observed = sum(magnitudes), abs(sum(deltas))
    subset = [0.0]
    for m in magnitudes:
        subset += [s + m for s in subset]
    exact = sum(1 for s in subset if abs(total - 2 * s) >= observed - 1e-9) / len(subset)
    engine = StatsEngine(permutations=20_000, seed=1)
    p = engine.permutation_test(deltas)
    assert p == pytest.approx(exact, abs=0.015)
    k = round(p * 20_001) - 1
    assert p == pytest.approx((1 + k) / 20_001, abs=1e-10)
    assert p == StatsEngine(permutations=20_000, seed=1).permutation_test(deltas)


def test_monte_carlo_p_value_is_never_zero() -> None:
    deltas = [1.0 + i / 100 for i in range(40)]  # every delta positive: observed is the max
    p = StatsEngine(permutations=99).permutation_test(deltas)
    assert p == pytest.approx(1 / 100)


def test_engine_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="confidence"):
        StatsEngine(confidence=1.0)
    with pytest.raises(ValueError, match="resamples"):
        StatsEngine(resamples=0)
    with pytest.raises(ValueError, match="permutations"):
        StatsEngine(permutations=0)


# ---------------------------------------------------------------- aggregate


def test_aggregate_summarises_each_metric_and_counts_errors() -> None:
    result = bench(
        "run-a",
        [
            row("c1", "m/exact", 1.0),
            row("c2", "m/exact", 0.0),
            row("c3", "m/exact", None, category="parse_failure"),
            row("c1", "m/bleu", 0.5),
        ],
        total_cases=3,
        completed_cases=2,
        failed_cases=1,
        metric_aggregates={"m/bleu": 0.41234567891234},
    )
    summary = StatsEngine(resamples=300).aggregate(result)
    assert summary["run_id"] == "run-a"
    assert (summary["total_cases"], summary["completed_cases"], summary["failed_cases"]) == (
        3,
        2,
        1,
    )
    exact = summary["metrics"]["m/exact"]
    assert exact["count"] == 2
    assert exact["mean"] == 0.5
    assert (exact["min"], exact["max"]) == (0.0, 1.0)
    assert exact["errors"] == 1
    assert 0.0 <= exact["ci_lower"] <= exact["ci_upper"] <= 1.0
    assert "corpus_value" not in exact
    bleu = summary["metrics"]["m/bleu"]
    assert (bleu["ci_lower"], bleu["ci_upper"]) == (0.5, 0.5)
    assert bleu["corpus_value"] == 0.4123456789


def test_aggregate_of_a_metric_without_scored_rows() -> None:
    result = bench("run-a", [row("c1", "m/x", None, category="generation_failure")])
    metric = StatsEngine().aggregate(result)["metrics"]["m/x"]
    assert metric["count"] == 0
    assert metric["mean"] is None
    assert (metric["ci_lower"], metric["ci_upper"]) == (0.0, 0.0)
    assert metric["errors"] == 1


def test_aggregate_accepts_the_model_and_its_dict_alike() -> None:
    data = bench("r", [row("c1", "m/x", 1.0), row("c2", "m/x", 0.0)])
    engine = StatsEngine(resamples=100)
    assert engine.aggregate(data) == engine.aggregate(BenchmarkResult.model_validate(data))


def test_aggregate_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="BenchmarkResult"):
        StatsEngine().aggregate([1, 2])  # type: ignore[arg-type]


# ---------------------------------------------------------------- paired_compare


def test_paired_compare_pairs_on_case_key_and_counts_exclusions() -> None:
    baseline = bench(
        "base",
        [
            row("c1", "m", 0.0),
            row("c2", "m", 1.0),
            row("c3", "m", 0.0),
            row("c4", "m", None, category="parse_failure"),
            row("c5", "m", 1.0),  # only in the baseline
            row("c1", "m", 1.0, dataset_id="other"),  # same case_id, another dataset
        ],
    )
    candidate = bench(
        "cand",
        [
            row("c1", "m", 1.0),
            row("c2", "m", 1.0),
            row("c3", "m", 0.5),
            row("c4", "m", 1.0),
            row("c6", "m", 1.0),  # only in the candidate
        ],
    )
    out = StatsEngine(resamples=200).paired_compare(baseline, candidate)
    assert out["baseline_run_id"] == "base"
    assert out["candidate_run_id"] == "cand"
    assert (out["test"], out["confidence"], out["resamples"], out["seed"]) == (
        "permutation",
        0.95,
        200,
        0,
    )
    m = out["metrics"]["m"]
    assert m["pairs"] == 3
    assert (m["wins"], m["losses"], m["ties"]) == (2, 0, 1)
    assert m["excluded_errors"] == 1
    assert m["unpaired_baseline"] == 2  # c5 and other:c1
    assert m["unpaired_candidate"] == 1
    assert m["baseline_mean"] == pytest.approx(1 / 3, abs=1e-10)
    assert m["candidate_mean"] == pytest.approx(2.5 / 3, abs=1e-10)
    assert m["mean_delta"] == 0.5
    # Non-zero deltas 1.0 and 0.5: flips give |1.5| twice and |0.5| twice, so p = 2/4.
    assert m["p_value"] == 0.5
    assert m["ci_lower"] <= m["mean_delta"] <= m["ci_upper"]
    assert set(m) == {
        "pairs",
        "wins",
        "losses",
        "ties",
        "baseline_mean",
        "candidate_mean",
        "mean_delta",
        "ci_lower",
        "ci_upper",
        "p_value",
        "unpaired_baseline",
        "unpaired_candidate",
        "excluded_errors",
    }


def test_paired_compare_sign_test_is_the_exact_binomial() -> None:
    baseline = bench("b", [row(f"c{i}", "m", 0.0) for i in range(10)])
    candidate = bench("c", [row(f"c{i}", "m", 1.0 if i < 8 else -1.0) for i in range(10)])
    out = StatsEngine(resamples=50).paired_compare(baseline, candidate, test="sign")
    assert out["metrics"]["m"]["p_value"] == pytest.approx(112 / 1024, abs=1e-10)


def test_paired_compare_rounds_floats_to_ten_decimals() -> None:
    baseline = bench("b", [row("c1", "m", 0.1), row("c2", "m", 0.2), row("c3", "m", 0.3)])
    candidate = bench("c", [row("c1", "m", 0.3), row("c2", "m", 0.3), row("c3", "m", 0.3)])
    metric = StatsEngine(resamples=50).paired_compare(baseline, candidate)["metrics"]["m"]
    for key in ("baseline_mean", "candidate_mean", "mean_delta", "ci_lower", "ci_upper"):
        assert metric[key] == round(metric[key], 10)
    assert metric["baseline_mean"] == 0.2


def test_paired_compare_is_deterministic_for_a_seed() -> None:
    rng = random.Random(9)
    baseline = bench("b", [row(f"c{i}", "m", rng.random()) for i in range(40)])
    candidate = bench("c", [row(f"c{i}", "m", rng.random()) for i in range(40)])
    first = StatsEngine(resamples=300, permutations=300, seed=3).paired_compare(baseline, candidate)
    second = StatsEngine(resamples=300, permutations=300, seed=3).paired_compare(
        baseline, candidate
    )
    assert first == second


def test_paired_compare_without_pairs_reports_neutral_values() -> None:
    out = StatsEngine().paired_compare(bench("b", [row("c1", "m", 1.0)]), bench("c", []))
    metric = out["metrics"]["m"]
    assert metric["pairs"] == 0
    assert (metric["ci_lower"], metric["ci_upper"], metric["p_value"]) == (0.0, 0.0, 1.0)
    assert metric["unpaired_baseline"] == 1


def test_paired_compare_restricts_to_named_metrics() -> None:
    baseline = bench("b", [row("c1", "m1", 1.0), row("c1", "m2", 1.0)])
    candidate = bench("c", [row("c1", "m1", 0.0), row("c1", "m2", 1.0)])
    out = StatsEngine().paired_compare(baseline, candidate, metric_ids=["m2"])
    assert list(out["metrics"]) == ["m2"]


def test_paired_compare_names_an_unknown_metric() -> None:
    with pytest.raises(ValueError, match=r"\['nope'\].*choose from \['m'\]"):
        StatsEngine().paired_compare(
            bench("b", [row("c1", "m", 1.0)]), bench("c", []), metric_ids=["nope"]
        )


def test_paired_compare_rejects_an_unknown_test() -> None:
    with pytest.raises(ValueError, match="permutation"):
        StatsEngine().paired_compare(bench("b", []), bench("c", []), test="t")  # type: ignore[arg-type]


def test_monte_carlo_with_few_magnitude_levels_matches_the_exact_convolution() -> None:
    """30 deltas of size 0.5 and 30 of size 1 (grouped draws): p near the exact value."""
    deltas = [0.5] * 18 + [-0.5] * 12 + [1.0] * 19 + [-1.0] * 11
    observed = abs(sum(deltas))
    total = 30 * 0.5 + 30 * 1.0
    exact = (
        sum(
            math.comb(30, x1) * math.comb(30, x2)
            for x1 in range(31)
            for x2 in range(31)
            if abs(total - 2 * (0.5 * x1 + 1.0 * x2)) >= observed - 1e-9
        )
        / 2**60
    )
    p = StatsEngine(permutations=20_000, seed=2).permutation_test(deltas)
    assert p == pytest.approx(exact, abs=0.01)
