"""router_benchmarks.capacity: replicas per pool from router-bench's summary.csv and a traffic mix."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from router_benchmarks.bench import write_summary_csv
from router_benchmarks.capacity import CapacityError, main, plan, read_capacities, tier_loads
from router_benchmarks.perf import PerfPoint

TIERS = ["tier_small", "tier_medium", "tier_large"]


@pytest.fixture
def summary(tmp_path: Path) -> Path:
    """A summary.csv as router-bench writes it (write_summary_csv), with a failed, a skipped and a slow level."""
    points = [
        PerfPoint("router", "concurrency", 1, throughput=9.0, p99_ms=300.0),
        PerfPoint("router", "concurrency", 4, throughput=30.0, p99_ms=400.0),
        PerfPoint("tier_small", "concurrency", 1, throughput=80.0, p99_ms=25.0),
        PerfPoint("tier_small", "concurrency", 4, throughput=110.0, p99_ms=80.0),
        PerfPoint("tier_small", "concurrency", 8, status="failed: timeout"),
        PerfPoint("tier_medium", "concurrency", 1, throughput=50.0, p99_ms=45.0),
        PerfPoint("tier_medium", "concurrency", 4, throughput=70.0, p99_ms=600.0),
        PerfPoint("tier_large", "concurrency", 1, throughput=14.0, p99_ms=140.0),
        PerfPoint("tier_large", "rate", 10, throughput=9.0, p99_ms=170.0),
        PerfPoint("tier_large", "concurrency", 8, status="skipped: time budget"),
    ]
    path = tmp_path / "summary.csv"
    write_summary_csv(points, path)
    return path


def test_capacity_is_the_best_throughput_within_the_slo(summary: Path) -> None:
    assert read_capacities(summary) == {"router": 30.0, "tier_small": 110.0, "tier_medium": 70.0, "tier_large": 14.0}
    assert read_capacities(summary, p99_ms=500.0)["tier_medium"] == 50.0
    assert read_capacities(summary, p99_ms=20.0)["tier_small"] == 0.0  # measured, but no level meets the SLO


def test_escalations_add_to_the_next_tier() -> None:
    loads = tier_loads(
        100.0,
        {"tier_small": 0.6, "tier_medium": 0.3, "tier_large": 0.1},
        {"tier_small": 0.5, "tier_medium": 0.2},
        TIERS,
    )
    assert loads == pytest.approx([60.0, 30.0 + 30.0, 10.0 + 12.0])


def test_replicas_round_up_at_the_target_utilization(summary: Path) -> None:
    capacities = read_capacities(summary, p99_ms=500.0)
    plans = plan(
        capacities, 40.0, {"tier_small": 0.5, "tier_medium": 0.5}, {"tier_small": 0.5, "tier_medium": 0.25}, TIERS, 0.7
    )
    got = {p.pool: p for p in plans}
    assert [p.pool for p in plans] == ["router", *TIERS]
    assert got["router"].replicas == math.ceil(40 / (30 * 0.7)) == 2
    assert got["tier_small"].load_rps == pytest.approx(20.0) and got["tier_small"].replicas == 1
    assert got["tier_medium"].load_rps == pytest.approx(30.0) and got["tier_medium"].replicas == 1  # 30/35
    assert got["tier_large"].load_rps == pytest.approx(7.5) and got["tier_large"].replicas == 1  # 7.5/9.8
    for p in plans:
        assert p.utilization <= 0.7 + 1e-9
    bigger = {p.pool: p.replicas for p in plan(capacities, 400.0, {"tier_small": 1.0}, {"tier_small": 0.5}, TIERS)}
    assert bigger == {"router": 20, "tier_small": 6, "tier_medium": 6, "tier_large": 1}  # 200 / (50 * 0.7) = 5.7


def test_bad_inputs_are_refused(summary: Path) -> None:
    capacities = read_capacities(summary)
    with pytest.raises(CapacityError, match="add up to 1"):
        plan(capacities, 10.0, {"tier_small": 0.5}, {}, TIERS)
    with pytest.raises(CapacityError, match="unknown tier"):
        plan(capacities, 10.0, {"tier_xl": 1.0}, {}, TIERS)
    with pytest.raises(CapacityError, match="no router-bench result"):
        plan({"router": 1.0}, 10.0, {"tier_small": 1.0}, {}, TIERS)
    with pytest.raises(CapacityError, match="met the SLO"):
        plan(read_capacities(summary, p99_ms=20.0), 10.0, {"tier_small": 1.0}, {}, TIERS)


def test_cli_prints_the_plan(summary: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(summary), "--rps", "40", "--start", "tier_small=0.5,tier_medium=0.5", "--escalation", "0.5"]
    assert main([*argv, "--p99-ms", "500"]) == 0
    out = capsys.readouterr().out
    assert "| router | 40.0 | 30.00 | 2 | 67% |" in out
    # tier_medium gets 20 starters + 10 escalations; half of its 30 escalate: 15 req/s over 14 per replica
    assert "| tier_large | 15.0 | 14.00 | 2 | 54% |" in out
    with pytest.raises(SystemExit) as refused:
        main([str(summary), "--rps", "40", "--start", "tier_small=0.7"])
    assert refused.value.code == 2
