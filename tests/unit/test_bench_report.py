"""router-bench without a server: perf_analyzer command and CSV, rate levels, /metrics deltas, table and plots."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from router_benchmarks import bench
from router_benchmarks.bench import (
    estimated_seconds,
    metrics_delta,
    plot_latency_throughput,
    rate_levels,
    scrape,
    server_summary,
    summary_markdown,
    write_summary_csv,
)
from router_benchmarks.perf import Measurement, PerfPoint, perf_command
from router_benchmarks.perf import parse_csv as parse_perf_csv

# Reports written by perf_analyzer 2.51 (-f ... --verbose-csv) against the local tritonserver.
CONCURRENCY_CSV = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
    "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,"
    "Avg latency,request/response,response wait\n"
    "2,2733.38,3,171,202,25,217,101,1,715,884,937,1114,723,4,706\n"
)
DECOUPLED_CSV = (
    "Concurrency,Inferences/Second,Response Throughput,Client Send,Network+Server Send/Recv,Server Queue,"
    "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,"
    "p95 latency,p99 latency,Avg latency,request/response,response wait\n"
    "2,5.82928,52.4635,0,130,157788,38,165725,16,0,331340,332696,333753,334101,323698,0,0\n"
)
RATE_CSV = (
    "Request Rate,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
    "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,"
    "Avg latency,request/response,response wait\n"
    "20,14.9962,18,514,33,52,497,140,3,1231,1501,1552,1603,1260,21,1205\n"
)


def test_parse_concurrency_report() -> None:
    (point,) = parse_perf_csv(CONCURRENCY_CSV, "router", "concurrency")
    assert (point.model, point.mode, point.level) == ("router", "concurrency", 2.0)
    assert point.throughput == pytest.approx(2733.38)
    assert (point.p50_ms, point.p90_ms, point.p99_ms, point.avg_ms) == pytest.approx((0.715, 0.884, 1.114, 0.723))
    assert point.server_queue_ms == pytest.approx(0.202)
    assert point.server_compute_ms == pytest.approx(0.025 + 0.217 + 0.101)
    assert math.isnan(point.response_throughput)


def test_parse_decoupled_and_rate_reports() -> None:
    (stream,) = parse_perf_csv(DECOUPLED_CSV, "router_stream", "concurrency")
    assert stream.response_throughput == pytest.approx(52.4635)
    assert stream.p99_ms == pytest.approx(334.101)
    (rate,) = parse_perf_csv(RATE_CSV, "router", "rate")
    assert (rate.mode, rate.level, rate.throughput) == ("rate", 20.0, pytest.approx(14.9962))


def test_perf_command_flags() -> None:
    data, report = Path("in.json"), Path("r.csv")
    cmd = perf_command(
        "tier_small", "h:1", "concurrency", 8, report, input_data=data, streaming=True, measurement=Measurement()
    )
    joined = " ".join(cmd)
    assert "-m tier_small -u h:1 -i grpc --concurrency-range 8" in joined
    assert "--measurement-mode count_windows --measurement-request-count 16" in joined
    assert "--stability-percentage 50 --max-trials 6" in joined
    assert "--input-data in.json" in joined and "-f r.csv --verbose-csv" in joined
    assert cmd[-1] == "--streaming" and "--max-threads 8" in joined
    cmd = perf_command(
        "router",
        "h:1",
        "rate",
        2.5,
        report,
        input_data=data,
        streaming=False,
        measurement=Measurement(request_count=10),
    )
    joined = " ".join(cmd)
    assert "--request-rate-range 2.5" in joined and "--request-count 10" in joined
    assert "--streaming" not in cmd and "count_windows" not in joined
    # the smaller tools' form: time windows, no input data, extra flags before --streaming
    cmd = perf_command(
        "router", "h:1", "concurrency", 1, report, streaming=True, measurement=Measurement(interval_ms=4000),
        extra_args=["--request-parameter", "max_tier:tier_small:string"],
    )  # fmt: skip
    joined = " ".join(cmd)
    assert "--measurement-interval 4000 --stability-percentage 50 --max-trials 6" in joined
    assert "--input-data" not in cmd and "count_windows" not in joined and "--max-threads" not in cmd
    assert cmd[-3:] == ["--request-parameter", "max_tier:tier_small:string", "--streaming"]


def test_rate_levels_are_fractions_of_the_best_throughput() -> None:
    assert rate_levels(2648.9, [0.25, 0.5]) == [660.0, 1300.0]
    assert rate_levels(3.0, [0.5]) == [1.5]
    assert rate_levels(0.37, [0.25, 0.5, 0.75]) == [0.092, 0.18, 0.28]
    assert rate_levels(math.nan, [0.5]) == [] and rate_levels(0.0, [0.5]) == []


def test_estimated_seconds() -> None:
    windows = Measurement(window_requests=4)
    assert estimated_seconds("concurrency", 1, windows, None) == 0.0  # unknown: let it run
    # 3 windows of 4 requests at 2 s each, one at a time
    assert estimated_seconds("concurrency", 1, windows, 2000.0) == pytest.approx(3 * 8 + 2 + 0.5)
    assert estimated_seconds("concurrency", 4, windows, 2000.0) == pytest.approx(3 * 2 + 2 + 0.5)
    assert estimated_seconds("rate", 0.5, windows, 1000.0) == pytest.approx(3 * 8 + 1 + 0.5)
    assert estimated_seconds("concurrency", 1, windows, 1.0) == pytest.approx(3 * 1 + 0.001 + 0.5)  # >= 1 s windows


def _counters(samples: str) -> str:
    """Prometheus text as Triton writes it: a `# TYPE <name> counter` line before each metric's samples."""
    lines: list[str] = []
    for line in samples.strip().splitlines():
        name = line.split("{", 1)[0]
        if f"# TYPE {name} counter" not in lines:
            lines.append(f"# TYPE {name} counter")
        lines.append(line)
    return "\n".join(lines) + "\n"


METRICS_BEFORE = _counters("""
nv_inference_request_success{model="router",version="1"} 10
nv_inference_request_success{model="tier_small",version="1"} 8
nv_inference_count{model="router",version="1"} 10
nv_inference_exec_count{model="router",version="1"} 10
nv_inference_request_duration_us{model="router",version="1"} 1000
nv_inference_queue_duration_us{model="router",version="1"} 100
router_requests_total{intent="coding",model="router",tier="tier_small"} 6
""")
METRICS_AFTER = _counters("""
nv_inference_request_success{model="router",version="1"} 30
nv_inference_request_success{model="tier_small",version="1"} 20
nv_inference_request_success{model="tier_large",version="1"} 5
nv_inference_request_failure{model="router",reason="BACKEND",version="1"} 1
nv_inference_count{model="router",version="1"} 30
nv_inference_exec_count{model="router",version="1"} 30
nv_inference_request_duration_us{model="router",version="1"} 41000
nv_inference_queue_duration_us{model="router",version="1"} 2100
nv_inference_compute_infer_duration_us{model="router",version="1"} 30000
router_requests_total{intent="coding",model="router",tier="tier_small"} 18
router_requests_total{intent="summarization",model="router",tier="tier_large"} 3
router_escalations_total{from_tier="tier_small",model="router",to_tier="tier_large"} 3
router_cost_usd_total{model="router"} 0.0125
""")


def test_server_summary_of_a_router_sweep() -> None:
    before = scrape(METRICS_BEFORE)
    assert before[("nv_inference_request_success_total", (("model", "router"), ("version", "1")))] == 10
    delta = metrics_delta(before, scrape(METRICS_AFTER))
    summary = server_summary(delta, "router")
    assert summary["requests_ok"] == 20 and summary["requests_failed"] == 1
    assert summary["avg_request_ms"] == pytest.approx(2.0)  # 40000 us / 20
    assert summary["avg_queue_ms"] == pytest.approx(0.1)
    assert summary["avg_compute_infer_ms"] == pytest.approx(1.5)
    assert summary["inferences_per_execution"] == 1.0
    assert summary["other_models_requests"] == {"tier_small": 12, "tier_large": 5}
    assert summary["router_answered_by_tier"] == {"tier_large": 3, "tier_small": 12}
    assert summary["router_by_intent"] == {"coding": 12, "summarization": 3}
    assert summary["router_escalations"] == 3
    assert summary["router_cost_usd"] == pytest.approx(0.0125)


def test_server_summary_without_requests() -> None:
    summary = server_summary({}, "intent_classifier")
    assert summary["requests_ok"] == 0 and summary["avg_request_ms"] is None
    assert "router_answered_by_tier" not in summary


def _points() -> list[PerfPoint]:
    points = parse_perf_csv(CONCURRENCY_CSV, "router", "concurrency") + parse_perf_csv(RATE_CSV, "router", "rate")
    points += parse_perf_csv(DECOUPLED_CSV, "router_stream", "concurrency")
    points.append(PerfPoint("tier_large", "concurrency", 4, status="skipped: time budget"))
    return points


def test_summary_table_and_csv(tmp_path: Path) -> None:
    table = summary_markdown(_points(), ["header line", ""])
    lines = table.splitlines()
    assert lines[0] == "header line"
    assert "| router | concurrency 2 | 2733.38 | - | 0.7 | 0.9 | 1.1 | 0.2 | 0.3 |" in lines
    assert "| router | 20 req/s | 15.00 |" in table
    assert "| router_stream | concurrency 2 | 5.83 | 52.5 | 331.3 |" in table
    assert "| tier_large | concurrency 4 | skipped: time budget |" in table
    write_summary_csv(_points(), tmp_path / "s.csv")
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert rows[0].split(",")[:4] == ["model", "mode", "level", "status"]
    assert len(rows) == 5 and ",skipped: time budget," in rows[-1]


def test_plots_are_written(tmp_path: Path) -> None:
    assert plot_latency_throughput(_points(), tmp_path / "all.png", "all")
    assert (tmp_path / "all.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plot_latency_throughput([PerfPoint("x", "concurrency", 1, status="failed: x")], tmp_path / "n.png", "")
    assert not (tmp_path / "n.png").exists()


def test_quick_defaults_and_overrides() -> None:
    args = bench.parse_args(["--quick"])
    assert args.concurrency == [1, 4] and args.rate_fractions == [0.5]
    assert args.measurement == Measurement(window_requests=4, stability=1000.0, max_trials=3)
    assert args.time_budget == bench.QUICK["time_budget"] and args.max_tokens == 16 and args.level_timeout == 30
    args = bench.parse_args(["--quick", "--concurrency", "2", "--max-tokens", "8", "--request-count", "5"])
    assert args.concurrency == [2] and args.max_tokens == 8 and args.measurement.request_count == 5
    full = bench.parse_args([])
    assert full.concurrency == [1, 2, 4, 8] and full.time_budget is None


def test_unknown_model_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "router", "gpt4"])
    assert "unknown model(s) gpt4" in capsys.readouterr().err


def test_token_length_filter_uses_the_tokenizer(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tier_small" / "1" / "model" / "tokenizer.json"
    path.parent.mkdir(parents=True)
    tokenizer.save(str(path))
    assert bench.find_tier_tokenizer(tmp_path) == path
    assert bench.find_tier_tokenizer(tmp_path / "empty") is None
    accept, note = bench.token_length_filter(path, 3)
    assert accept("one two three") and not accept("one two three four")
    assert "at most 3 tokens" in note and "tier_small" in note
    assert bench.token_length_filter(None, 3)[0] is None
