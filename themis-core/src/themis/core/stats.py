"""Statistics over benchmark rows: bootstrap intervals and paired significance tests."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from themis.core.logs import get_logger
from themis.core.read_models import BenchmarkResult, BenchmarkScoreRow

__all__ = ["StatsEngine"]

log = get_logger(__name__)

Test = Literal["permutation", "sign"]
_TESTS: tuple[str, ...] = ("permutation", "sign")

# Up to this many non-zero deltas, the permutation test enumerates all 2^m sign flips.
EXACT_PERMUTATION_LIMIT = 16


def _round(value: float) -> float:
    # ``+ 0.0`` turns a rounded ``-0.0`` into ``0.0`` so JSON never shows ``-0.0``.
    return round(value, 10) + 0.0


def _as_benchmark(value: BenchmarkResult | Mapping[str, Any], name: str) -> BenchmarkResult:
    if isinstance(value, BenchmarkResult):
        return value
    if isinstance(value, Mapping):
        return BenchmarkResult.model_validate(dict(value))
    raise TypeError(
        f"{name} must be a BenchmarkResult or its dict (store.get_projection(run_id, "
        f"'benchmark_result')), got {type(value).__name__}"
    )


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The linearly interpolated ``q`` quantile of already sorted values."""
    if not sorted_values:
        return 0.0
    position = (len(sorted_values) - 1) * q
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    fraction = position - lower
    low_value = sorted_values[lower]
    return low_value + fraction * (sorted_values[upper] - low_value)


def binomial_draw(rng: random.Random, n: int, p: float) -> int:
    """One Binomial(n, p) draw by inversion, walking outward from the mode.

    Any fixed order of the outcomes gives an exact inversion sampler; starting at the mode
    makes the expected walk about one standard deviation long instead of ``n`` steps.
    """
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    q = 1.0 - p
    mode = min(n, math.floor((n + 1) * p))
    log_pmf = (
        math.lgamma(n + 1)
        - math.lgamma(mode + 1)
        - math.lgamma(n - mode + 1)
        + mode * math.log(p)
        + (n - mode) * math.log1p(-p)
    )
    peak = math.exp(log_pmf)
    u = rng.random()
    total = peak
    if u < total:
        return mode
    low_k, low_p, high_k, high_p = mode, peak, mode, peak
    up_ratio, down_ratio = p / q, q / p
    while low_k > 0 or high_k < n:
        if low_k > 0:
            low_p *= low_k / (n - low_k + 1) * down_ratio
            low_k -= 1
            total += low_p
            if u < total:
                return low_k
        if high_k < n:
            high_p *= (n - high_k) / (high_k + 1) * up_ratio
            high_k += 1
            total += high_p
            if u < total:
                return high_k
        if low_p == 0.0 and high_p == 0.0:
            break  # both tails underflowed: the remaining mass is below float resolution
    return mode  # rounding left ``u`` above the summed mass (probability ~1e-15)


class _Resampler:
    """Draws the sum of ``n`` values picked with replacement, as cheaply as the data allows.

    When the values take few distinct levels, a resample is a multinomial draw of level
    counts (a chain of binomials, ~sqrt(n) work each); otherwise each case is drawn.
    """

    def __init__(self, values: Sequence[float]) -> None:
        self.values = list(values)
        self.n = len(self.values)
        counts: dict[float, int] = {}
        for value in self.values:
            counts[value] = counts.get(value, 0) + 1
        self.levels = sorted(counts.items())
        grouped_cost = len(self.levels) * (math.sqrt(self.n) + 10.0)
        self.grouped = grouped_cost < self.n

    def draw_sum(self, rng: random.Random) -> float:
        if not self.grouped:
            return math.fsum(rng.choices(self.values, k=self.n))
        remaining, rest = self.n, self.n
        parts: list[float] = []
        for level, count in self.levels[:-1]:
            if remaining == 0:
                break
            taken = binomial_draw(rng, remaining, count / rest)
            parts.append(level * taken)
            remaining -= taken
            rest -= count
        parts.append(self.levels[-1][0] * remaining)
        return math.fsum(parts)


def _binomial_two_sided(successes: int, trials: int) -> float:
    """P(|K - m/2| >= |k - m/2|) for K ~ Binomial(m, 1/2), computed exactly."""
    if trials == 0:
        return 1.0
    observed = abs(2 * successes - trials)
    extreme = sum(
        math.comb(trials, k) for k in range(trials + 1) if abs(2 * k - trials) >= observed
    )
    # int / int is correctly rounded even when both are huge.
    probability: float = extreme / 2**trials
    return min(1.0, probability)


class StatsEngine:
    """Percentile-bootstrap intervals and paired tests, deterministic for a seed (API §9.2)."""

    def __init__(
        self,
        *,
        resamples: int = 10_000,
        permutations: int = 10_000,
        confidence: float = 0.95,
        seed: int = 0,
    ) -> None:
        if resamples < 1:
            raise ValueError(f"resamples must be at least 1, got {resamples}")
        if permutations < 1:
            raise ValueError(f"permutations must be at least 1, got {permutations}")
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
        self.resamples = resamples
        self.permutations = permutations
        self.confidence = confidence
        self.seed = seed

    # ------------------------------------------------------------------ primitives
    def bootstrap_ci(self, values: Sequence[float]) -> tuple[float, float]:
        """Percentile-bootstrap CI of the mean; ``(v, v)`` for one value, ``(0, 0)`` for none."""
        if not values:
            return 0.0, 0.0
        if len(values) == 1:
            return _round(values[0]), _round(values[0])
        rng = random.Random(self.seed)
        resampler = _Resampler(values)
        n = len(values)
        means = sorted(resampler.draw_sum(rng) / n for _ in range(self.resamples))
        alpha = 1.0 - self.confidence
        return _round(quantile(means, alpha / 2)), _round(quantile(means, 1 - alpha / 2))

    def sign_test(self, deltas: Iterable[float]) -> float:
        """Exact two-sided binomial test on the signs of the non-zero deltas (1.0 if none)."""
        nonzero = [d for d in deltas if d != 0.0]
        wins = sum(1 for d in nonzero if d > 0)
        return _round(_binomial_two_sided(wins, len(nonzero)))

    def permutation_test(self, deltas: Iterable[float]) -> float:
        """Two-sided paired sign-flip test on the sum of the non-zero deltas."""
        nonzero = [d for d in deltas if d != 0.0]
        if not nonzero:
            return 1.0
        magnitudes = [abs(d) for d in nonzero]
        if all(math.isclose(m, magnitudes[0], rel_tol=1e-9) for m in magnitudes):
            # Equal magnitudes: the flip sum is a scaled binomial, so the exact test is the
            # sign test (exact McNemar for 0/1 metrics), whatever the number of deltas.
            return self.sign_test(nonzero)
        observed = abs(math.fsum(nonzero))
        total = math.fsum(magnitudes)
        # Sums of the same floats in another order may differ in the last bits; an
        # arrangement as extreme as the observed one must not be lost to that.
        tolerance = 1e-12 * max(1.0, total)
        if len(nonzero) <= EXACT_PERMUTATION_LIMIT:
            return _round(_exact_flip_p(magnitudes, total, observed - tolerance))
        rng = random.Random(self.seed)
        resampler = _FlipSampler(magnitudes)
        extreme = sum(
            1
            for _ in range(self.permutations)
            if abs(total - 2.0 * resampler.draw_negated(rng)) >= observed - tolerance
        )
        return _round((1 + extreme) / (1 + self.permutations))

    # ------------------------------------------------------------------ reports
    def aggregate(self, benchmark_result: BenchmarkResult | Mapping[str, Any]) -> dict[str, Any]:
        """Per-metric count, mean, range, bootstrap CI, error count and corpus value."""
        result = _as_benchmark(benchmark_result, "benchmark_result")
        values: dict[str, list[float]] = {m: [] for m in result.metric_ids}
        errors: dict[str, int] = {m: 0 for m in result.metric_ids}
        for row in result.score_rows:
            values.setdefault(row.metric_id, [])
            errors.setdefault(row.metric_id, 0)
            if row.outcome == "error" or row.value is None:
                errors[row.metric_id] += 1
            else:
                values[row.metric_id].append(row.value)
        metrics: dict[str, dict[str, Any]] = {}
        for metric_id, scored in values.items():
            lower, upper = self.bootstrap_ci(scored)
            entry: dict[str, Any] = {
                "count": len(scored),
                "mean": _round(math.fsum(scored) / len(scored)) if scored else None,
                "min": _round(min(scored)) if scored else None,
                "max": _round(max(scored)) if scored else None,
                "ci_lower": lower,
                "ci_upper": upper,
                "errors": errors[metric_id],
            }
            if metric_id in result.metric_aggregates:
                entry["corpus_value"] = _round(result.metric_aggregates[metric_id])
            metrics[metric_id] = entry
        return {
            "run_id": result.run_id,
            "total_cases": result.total_cases,
            "completed_cases": result.completed_cases,
            "failed_cases": result.failed_cases,
            "metrics": metrics,
        }

    def paired_compare(
        self,
        baseline: BenchmarkResult | Mapping[str, Any],
        candidate: BenchmarkResult | Mapping[str, Any],
        *,
        metric_ids: Sequence[str] | None = None,
        test: Test = "permutation",
    ) -> dict[str, Any]:
        """Pair rows on ``(case_key, metric_id)`` and test candidate - baseline per metric."""
        if test not in _TESTS:
            raise ValueError(f"test must be one of {list(_TESTS)}, got {test!r}")
        base = _as_benchmark(baseline, "baseline")
        cand = _as_benchmark(candidate, "candidate")
        known = _metric_order(base, cand)
        if metric_ids is None:
            chosen = known
        else:
            unknown = [m for m in metric_ids if m not in known]
            if unknown:
                raise ValueError(
                    f"metric ids {unknown} are in neither run "
                    f"({base.run_id} nor {cand.run_id}); choose from {known}"
                )
            chosen = list(dict.fromkeys(metric_ids))
        base_rows, cand_rows = _rows_by_metric(base), _rows_by_metric(cand)
        metrics = {
            metric_id: self._compare_metric(
                base_rows.get(metric_id, {}), cand_rows.get(metric_id, {}), test
            )
            for metric_id in chosen
        }
        log.debug(
            "stats.paired_compare",
            baseline_run_id=base.run_id,
            candidate_run_id=cand.run_id,
            metrics=len(metrics),
            test=test,
        )
        return {
            "baseline_run_id": base.run_id,
            "candidate_run_id": cand.run_id,
            "test": test,
            "confidence": self.confidence,
            "resamples": self.resamples,
            "seed": self.seed,
            "metrics": metrics,
        }

    def _compare_metric(
        self,
        base: Mapping[str, BenchmarkScoreRow],
        cand: Mapping[str, BenchmarkScoreRow],
        test: Test,
    ) -> dict[str, Any]:
        shared = sorted(base.keys() & cand.keys())
        pairs: list[tuple[float, float]] = []
        excluded = 0
        for key in shared:
            b, c = base[key], cand[key]
            if _is_error(b) or _is_error(c):
                excluded += 1
                continue
            assert b.value is not None and c.value is not None
            pairs.append((b.value, c.value))
        deltas = [c - b for b, c in pairs]
        lower, upper = self.bootstrap_ci(deltas)
        count = len(pairs)
        p_value = self.permutation_test(deltas) if test == "permutation" else self.sign_test(deltas)
        return {
            "pairs": count,
            "wins": sum(1 for d in deltas if d > 0),
            "losses": sum(1 for d in deltas if d < 0),
            "ties": sum(1 for d in deltas if d == 0),
            "baseline_mean": _round(math.fsum(b for b, _ in pairs) / count) if count else 0.0,
            "candidate_mean": _round(math.fsum(c for _, c in pairs) / count) if count else 0.0,
            "mean_delta": _round(math.fsum(deltas) / count) if count else 0.0,
            "ci_lower": lower,
            "ci_upper": upper,
            "p_value": p_value,
            "unpaired_baseline": len(base.keys() - cand.keys()),
            "unpaired_candidate": len(cand.keys() - base.keys()),
            "excluded_errors": excluded,
        }


def _is_error(row: BenchmarkScoreRow) -> bool:
    return row.outcome == "error" or row.value is None


def _metric_order(*results: BenchmarkResult) -> list[str]:
    order: dict[str, None] = {}
    for result in results:
        order.update(dict.fromkeys(result.metric_ids))
        order.update(dict.fromkeys(row.metric_id for row in result.score_rows))
    return list(order)


def _rows_by_metric(result: BenchmarkResult) -> dict[str, dict[str, BenchmarkScoreRow]]:
    rows: dict[str, dict[str, BenchmarkScoreRow]] = {}
    for row in result.score_rows:
        rows.setdefault(row.metric_id, {})[row.case_key] = row
    return rows


def _exact_flip_p(magnitudes: Sequence[float], total: float, threshold: float) -> float:
    """Share of all 2^m sign arrangements whose |sum| reaches ``threshold``."""
    # Each arrangement's sum is total - 2 * (sum of the negated magnitudes); building the
    # subset sums by doubling costs 2^m additions in all.
    subset_sums = [0.0]
    for magnitude in magnitudes:
        subset_sums += [s + magnitude for s in subset_sums]
    extreme = sum(1 for s in subset_sums if abs(total - 2.0 * s) >= threshold)
    return extreme / len(subset_sums)


class _FlipSampler:
    """Draws the sum of the magnitudes whose sign a random flip negates."""

    def __init__(self, magnitudes: Sequence[float]) -> None:
        self.magnitudes = list(magnitudes)
        counts: dict[float, int] = {}
        for magnitude in self.magnitudes:
            counts[magnitude] = counts.get(magnitude, 0) + 1
        self.levels = sorted(counts.items())
        n = len(self.magnitudes)
        self.grouped = len(self.levels) * (math.sqrt(n) + 10.0) < n

    def draw_negated(self, rng: random.Random) -> float:
        if self.grouped:
            return math.fsum(level * binomial_draw(rng, count, 0.5) for level, count in self.levels)
        bits = rng.getrandbits(len(self.magnitudes))
        return math.fsum(m for i, m in enumerate(self.magnitudes) if bits >> i & 1)
