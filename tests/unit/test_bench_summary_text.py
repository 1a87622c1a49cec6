"""router-bench's summary says what it measured: unreached request rates, --quick's windows, server tables."""

from __future__ import annotations

import argparse

from router_benchmarks.bench import FULL, QUICK, describe_run, server_markdown, summary_markdown
from router_benchmarks.perf import Measurement, PerfPoint


def _args(settings: dict) -> argparse.Namespace:
    measurement = Measurement(
        window_requests=settings["window_requests"], stability=settings["stability"], max_trials=settings["max_trials"]
    )
    return argparse.Namespace(measurement=measurement, max_tokens=settings["max_tokens"])


def test_quick_runs_do_not_claim_a_stability_bound() -> None:
    quick = describe_run(_args(QUICK), "localhost:8001", 18, "demo")
    assert "stable within" not in quick and "no stability requirement (--quick" in quick
    assert "stable within 50% (at most 6 windows)" in describe_run(_args(FULL), "localhost:8001", 72, "demo")


def test_a_request_rate_that_was_not_reached_is_flagged() -> None:
    points = [
        PerfPoint("router", "rate", 20, throughput=15.0, p50_ms=5, p90_ms=6, p99_ms=7),
        PerfPoint("router", "rate", 10, throughput=9.95, p50_ms=5, p90_ms=6, p99_ms=7),
    ]
    table = summary_markdown(points)
    assert "Not reached: router at 20 req/s ran at 15.00 req/s (75%)" in table
    assert "at 10 req/s ran" not in table


def test_server_metrics_are_tables() -> None:
    server = {
        "router": {
            "requests_ok": 20, "requests_failed": 1, "avg_request_ms": 2.0, "avg_queue_ms": 0.1,
            "avg_compute_infer_ms": 1.5, "inferences_per_execution": 1.0,
            "router_answered_by_tier": {"tier_large": 3, "tier_small": 12}, "router_by_intent": {"coding": 15},
            "router_escalations": 3, "router_fallbacks": 0, "router_cost_usd": 0.0125, "router_cost_saved_usd": 0.02,
        },
        "intent_classifier": {"requests_ok": 0, "requests_failed": 0, "avg_request_ms": None},
    }  # fmt: skip
    text = server_markdown(server)
    assert "| router | 20 | 1 | 2.00 | 0.10 | 1.50 | 1.00 |" in text
    assert "| intent_classifier | 0 | 0 | - | - | - | - |" in text
    assert "| router | tier_large 3, tier_small 12 | 3 | 0 | 0.012500 | 0.020000 | coding 15 |" in text
    assert "{" not in text
