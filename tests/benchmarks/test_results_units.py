"""Pure parts of the benchmarks: statistics arithmetic, the settings choice, RESULTS.md sections."""

from __future__ import annotations

import math

import pytest

from facialattr.benchmarks import report
from facialattr.benchmarks.load import LoadResult, percentiles_ms
from facialattr.benchmarks.sweep import Aggregate, ServingSettings, TrialResult, choose


@pytest.mark.parametrize("latencies_s, expected_p50_ms", [([0.010] * 99 + [1.0], 10.0), ([0.002, 0.004], 3.0)])
def test_percentiles_are_in_milliseconds(latencies_s, expected_p50_ms):
    p50, p95, p99, mean = percentiles_ms(latencies_s)
    assert p50 == pytest.approx(expected_p50_ms) and p50 <= p95 <= p99


def test_percentiles_of_nothing_are_nan():
    assert all(math.isnan(v) for v in percentiles_ms([]))


def _result(images_per_s: float, p99_ms: float, errors: int = 0) -> LoadResult:
    return LoadResult(batch_size=1, concurrency=16, duration_s=5, requests=100, errors=errors,
                      images_per_s=images_per_s, p50_ms=p99_ms / 2, p95_ms=p99_ms, p99_ms=p99_ms,
                      mean_ms=p99_ms / 2, server=None)


@pytest.mark.parametrize("candidates, expected_delay", [
    # fastest within the budget wins
    ([(0, 300, 90), (2000, 330, 95), (8000, 350, 140)], 2000),
    # errors disqualify
    ([(0, 300, 90, 0), (2000, 330, 95, 3)], 0),
    # nothing within budget: lowest p99
    ([(0, 300, 150), (2000, 330, 120)], 2000),
])
def test_choose_prefers_user_throughput_within_the_latency_budget(candidates, expected_delay):
    trials = [TrialResult(ServingSettings(max_queue_delay_us=c[0]), Aggregate.of([_result(400, 500)]),
                          Aggregate.of([_result(c[1], c[2], *c[3:])]))
              for c in candidates]
    assert choose(trials, p99_budget_ms=100).settings.max_queue_delay_us == expected_delay


def test_soak_section_is_replaced_in_place_and_kept_by_a_rewrite(tmp_path):
    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmarks\n\n" + report.soak_section("") + "\n\n## After\n")
    report.replace_soak_section(md, "## Soak\n\nfirst")
    report.replace_soak_section(md, "## Soak\n\nsecond $1 \\1")
    text = md.read_text()
    assert "second $1 \\1" in text and "first" not in text and text.count(report.SOAK_BEGIN) == 1
    assert text.index("## After") > text.index(report.SOAK_END)
    assert "second" in report.soak_section(text)


def test_aggregate_averages_passes_and_sums_errors():
    a = Aggregate.of([_result(300, 80), _result(200, 120, errors=2)])
    assert (a.images_per_s, a.p99_ms, a.errors, len(a.passes)) == (250, 100, 2, 2)


@pytest.mark.parametrize("samples, expected", [
    ([(0, 500), (30, 550), (60, 560), (300, 565), (600, 570)], 10),
    ([(0, 500), (30, 550)], float("nan")),
])
def test_soak_growth_is_measured_after_the_first_minute(samples, expected):
    from facialattr.benchmarks.soak import steady_growth

    growth = steady_growth([{"elapsed_s": t, "rss_mib": m} for t, m in samples])
    assert growth == expected or (math.isnan(growth) and math.isnan(expected))


@pytest.mark.parametrize("name", sorted(report.KEPT_SECTIONS))
def test_each_kept_section_is_replaced_in_place_and_read_back_for_the_next_rewrite(tmp_path, name):
    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmarks\n\n" + report.kept_section("", name) + "\n\n## After\n")
    assert "Not run yet" in md.read_text()
    report.replace_kept_section(md, name, "## Measured\n\nfigures")
    text = md.read_text()
    assert "Not run yet" not in text and text.index("## After") > text.index("figures")
    assert report.kept_section(text, name).splitlines()[1:-1] == ["## Measured", "", "figures"]
