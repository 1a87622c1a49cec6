"""`router-bench`: perf_analyzer sweeps on the router, the streaming router, the classifier and each tier.

    router-bench --quick          # starts its own server on model_repository/; under 3 minutes on 2 cores
    router-bench --url localhost:8001 --metrics-url http://localhost:8002/metrics --concurrency 1 2 4 8
    router-bench --models router tier_small --request-rate 1 2 4

For every model: a concurrency sweep, then a request-rate sweep (`--request-rate`, or fractions of the highest
throughput the concurrency sweep measured). Decoupled models (`router_stream`, the tiers) are driven with
`perf_analyzer --streaming`. Requests are real prompts of mixed intents (`router_benchmarks.inputs`). Triton's
/metrics is read before and after each model's sweeps.

Writes into `--output-dir` (default artifacts/bench/): summary.md and summary.csv (one row per measured
point), server_metrics.json (per model: request counts, queue/compute time, batching and, for the router, the
tier mix and escalations), latency_throughput.png (all models) and latency_throughput_<model>.png,
perf/<model>.csv (perf_analyzer's own CSV), inputs/ (the input-data files) and, when it started the server,
triton.log.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from llm_router.core.jsonsafe import json_safe
from prometheus_client.parser import text_string_to_metric_families

from router_benchmarks.inputs import DEFAULT_DATA_DIR, load_prompts, write_input_files
from router_benchmarks.perf import Measurement, PerfPoint, run_level

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BENCH_MODELS = ("router", "router_stream", "intent_classifier", "tier_small", "tier_medium", "tier_large")
LAYOUT_OF = {"router": "router", "router_stream": "router", "intent_classifier": "classifier"}
FULL = {
    "concurrency": [1, 2, 4, 8],
    "rate_fractions": [0.25, 0.5, 0.75],
    "window_requests": 16,
    "stability": 50.0,
    "max_trials": 6,
    "max_tokens": 32,
    "per_intent": 8,
    "time_budget": None,
    "ttft_requests": 18,
    "level_timeout": 300.0,
}
QUICK = {
    "concurrency": [1, 4],
    "rate_fractions": [0.5],
    "window_requests": 4,
    "stability": 1000.0,
    "max_trials": 3,
    "max_tokens": 16,
    "per_intent": 2,
    "time_budget": 140.0,
    "ttft_requests": 6,
    "level_timeout": 30.0,
}


@dataclass
class ModelPlan:
    name: str
    layout: str
    streaming: bool
    points: list[PerfPoint] = field(default_factory=list)


def rate_levels(max_throughput: float, fractions: Sequence[float]) -> list[float]:
    """Request rates as fractions of the best measured throughput (2 significant digits, > 0)."""
    if not max_throughput or math.isnan(max_throughput) or max_throughput <= 0:
        return []
    levels = []
    for fraction in fractions:
        rate = max_throughput * fraction
        digits = 1 - int(math.floor(math.log10(rate)))
        rounded = round(rate, digits)
        if rounded > 0 and rounded not in levels:
            levels.append(rounded)
    return levels


def estimated_seconds(mode: str, level: float, measurement: Measurement, last_avg_ms: float | None) -> float:
    """A rough duration of one perf_analyzer run, from the model's last average latency (0 when unknown)."""
    latency_s = 0.0 if last_avg_ms is None or math.isnan(last_avg_ms) else last_avg_ms / 1000
    if measurement.request_count:
        windows, count = 1, measurement.request_count
    else:
        windows, count = 3, measurement.window_requests
    if mode == "rate":
        per_window = count / level
    elif latency_s == 0.0:
        return 0.0
    else:
        per_window = count * latency_s / max(level, 1)
    return windows * max(1.0, per_window) + latency_s + 0.5


# -- server metrics ----

MetricKey = tuple[str, tuple[tuple[str, str], ...]]


def scrape(text: str) -> dict[MetricKey, float]:
    """Prometheus text (prometheus_client's parser) -> {(sample name, sorted labels): value}.

    The parser names every counter's sample `<name>_total`, also Triton's (`nv_inference_count` is printed without
    the suffix but declared a counter): the counters below are looked up by those names.
    """
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def fetch_metrics(metrics_url: str | None) -> dict[MetricKey, float]:
    """Triton's /metrics now ({} without a URL, or when it cannot be read)."""
    if not metrics_url:
        return {}
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as resp:
            return scrape(resp.read().decode("utf-8", errors="replace"))
    except (OSError, ValueError):  # unreachable, or not Prometheus text
        return {}


def metrics_delta(before: dict[MetricKey, float], after: dict[MetricKey, float]) -> dict[MetricKey, float]:
    """after - before for every sample in `after` (counters; a sample new in `after` counts from 0)."""
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def _sum(delta: dict[MetricKey, float], name: str, **labels: str) -> float:
    return math.fsum(
        v for (n, lbl), v in delta.items() if n == name and all((k, val) in lbl for k, val in labels.items())
    )


def _by_label(delta: dict[MetricKey, float], name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, labels), value in delta.items():
        if n == name and value:
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + value
    return out


def server_summary(delta: dict[MetricKey, float], model: str) -> dict[str, Any]:
    """What Triton's metrics say about one model over a sweep (and, for the router, which tiers answered)."""
    success = _sum(delta, "nv_inference_request_success_total", model=model)
    executions = _sum(delta, "nv_inference_exec_count_total", model=model)
    inferences = _sum(delta, "nv_inference_count_total", model=model)

    def avg_ms(name: str) -> float | None:
        return round(_sum(delta, name, model=model) / success / 1000, 3) if success else None

    summary: dict[str, Any] = {
        "requests_ok": int(success),
        "requests_failed": int(_sum(delta, "nv_inference_request_failure_total", model=model)),
        "avg_request_ms": avg_ms("nv_inference_request_duration_us_total"),
        "avg_queue_ms": avg_ms("nv_inference_queue_duration_us_total"),
        "avg_compute_infer_ms": avg_ms("nv_inference_compute_infer_duration_us_total"),
        "inferences_per_execution": round(inferences / executions, 3) if executions else None,
    }
    called = {
        m: int(v)
        for m, v in _by_label(delta, "nv_inference_request_success_total", "model").items()
        if m != model and v > 0
    }
    if called:
        summary["other_models_requests"] = called
    answered = _by_label(delta, "router_requests_total", "tier")
    if answered:
        summary["router_answered_by_tier"] = {k: int(v) for k, v in sorted(answered.items())}
        summary["router_by_intent"] = {
            k: int(v) for k, v in sorted(_by_label(delta, "router_requests_total", "intent").items())
        }
        summary["router_escalations"] = int(_sum(delta, "router_escalations_total"))
        summary["router_fallbacks"] = int(_sum(delta, "router_fallbacks_total"))
        summary["router_cost_usd"] = round(_sum(delta, "router_cost_usd_total"), 6)
        summary["router_cost_saved_usd"] = round(_sum(delta, "router_cost_saved_usd_total"), 6)
    return summary


# -- outputs ----

CSV_FIELDS = [f for f in PerfPoint.__dataclass_fields__]
RATE_REACHED_SHARE = 0.9  # a request rate counts as reached when the measured throughput is at least this share


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def summary_markdown(points: Sequence[PerfPoint], header_lines: Sequence[str] = ()) -> str:
    """The summary table (markdown); latencies in ms, throughput in requests/s."""
    lines = list(header_lines)
    lines += [
        "| model | load | infer/s | responses/s | p50 ms | p90 ms | p99 ms | queue ms | compute ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        load = f"concurrency {p.level:g}" if p.mode == "concurrency" else f"{p.level:g} req/s"
        if not p.ok:
            lines.append(f"| {p.model} | {load} | {p.status} | | | | | | |")
            continue
        lines.append(
            f"| {p.model} | {load} | {_fmt(p.throughput, 2)} | {_fmt(p.response_throughput, 1)} "
            f"| {_fmt(p.p50_ms)} | {_fmt(p.p90_ms)} | {_fmt(p.p99_ms)} "
            f"| {_fmt(p.server_queue_ms)} | {_fmt(p.server_compute_ms)} |"
        )
    missed = [p for p in points if rate_not_reached(p)]
    if missed:
        lines.append("")
        lines += [
            f"Not reached: {p.model} at {p.level:g} req/s ran at {p.throughput:.2f} req/s "
            f"({100 * p.throughput / p.level:.0f}%); the server could not keep up, so that row is not the latency "
            f"at {p.level:g} req/s."
            for p in missed
        ]
    return "\n".join(lines) + "\n"


def rate_not_reached(point: PerfPoint, share: float = RATE_REACHED_SHARE) -> bool:
    """A request-rate point whose measured throughput stayed below `share` of the rate asked for."""
    return point.ok and point.mode == "rate" and point.throughput < share * point.level


def server_markdown(server: dict[str, dict[str, Any]]) -> str:
    """Triton's /metrics deltas over each model's runs as markdown tables (server_metrics.json has them as JSON)."""
    lines = [
        "| model | requests ok | failed | avg request ms | avg queue ms | avg compute ms | inferences/execution |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, s in server.items():
        cells = [s.get(k) for k in ("avg_request_ms", "avg_queue_ms", "avg_compute_infer_ms")]
        lines.append(
            f"| {model} | {s.get('requests_ok', 0)} | {s.get('requests_failed', 0)} | "
            + " | ".join(_fmt(c, 2) for c in cells)
            + f" | {_fmt(s.get('inferences_per_execution'), 2)} |"
        )
    routers = {m: s for m, s in server.items() if "router_answered_by_tier" in s}
    if routers:
        lines += [
            "",
            "| model | answered by tier | escalations | fallbacks | cost USD | saved vs largest tier USD | by intent |",
            "|---|---|---|---|---|---|---|",
        ]
        for model, s in routers.items():
            tiers = ", ".join(f"{t} {n}" for t, n in s["router_answered_by_tier"].items())
            intents = ", ".join(f"{i} {n}" for i, n in s.get("router_by_intent", {}).items())
            lines.append(
                f"| {model} | {tiers} | {s['router_escalations']} | {s['router_fallbacks']} | "
                f"{s['router_cost_usd']:.6f} | {s['router_cost_saved_usd']:.6f} | {intents} |"
            )
    return "\n".join(lines) + "\n"


def write_summary_csv(points: Sequence[PerfPoint], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for point in points:
            writer.writerow(
                {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(point).items()}
            )


def plot_latency_throughput(points: Sequence[PerfPoint], path: Path, title: str) -> bool:
    """p50 (solid) and p99 (dashed) latency against throughput per model and sweep; False if no point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [p for p in points if p.ok and not math.isnan(p.p50_ms)]
    if not measured:
        return False
    fig, ax = plt.subplots(figsize=(8, 5.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    models = list(dict.fromkeys(p.model for p in measured))
    for index, model in enumerate(models):
        color = colors[index % len(colors)]
        for mode, marker in (("concurrency", "o"), ("rate", "s")):
            series = sorted((p for p in measured if p.model == model and p.mode == mode), key=lambda p: p.level)
            if not series:
                continue
            xs = [p.throughput for p in series]
            label = f"{model} ({'concurrency' if mode == 'concurrency' else 'request rate'})"
            ax.plot(xs, [p.p50_ms for p in series], marker=marker, color=color, label=f"{label} p50")
            ax.plot(xs, [p.p99_ms for p in series], marker=marker, color=color, linestyle="--", alpha=0.6)
            for p in series:
                point_label = f"c={p.level:g}" if mode == "concurrency" else f"{p.level:g} req/s"
                ax.annotate(
                    point_label, (p.throughput, p.p50_ms), textcoords="offset points", xytext=(4, 4),
                    fontsize=7, color=color,
                )  # fmt: skip
    if len(models) > 1:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("latency (ms): p50 solid, p99 dashed")
    ax.text(
        0.01, 0.99, "point labels: c=N concurrency, N req/s request rate", transform=ax.transAxes, fontsize=7,
        va="top", alpha=0.7,
    )  # fmt: skip
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# -- the run ----


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="router-bench",
        description="perf_analyzer sweeps on the router, router_stream, intent_classifier and the tiers.",
    )
    parser.add_argument("--url", help="Triton gRPC endpoint; default: start a server on --model-repository")
    parser.add_argument("--metrics-url", help="Triton metrics URL (default: the started server's; none with --url)")
    parser.add_argument("--model-repository", type=Path, default=PROJECT_ROOT / "model_repository")
    parser.add_argument("--models", nargs="+", default=list(BENCH_MODELS), help="models to sweep (if loaded)")
    parser.add_argument("--concurrency", type=int, nargs="+", help="concurrency levels (default 1 2 4 8)")
    parser.add_argument("--request-rate", type=float, nargs="+", help="request rates (req/s) for every model")
    parser.add_argument(
        "--rate-fractions", type=float, nargs="+",
        help="without --request-rate: fractions of the best measured throughput (default 0.25 0.5 0.75)",
    )  # fmt: skip
    parser.add_argument("--window-requests", type=int, help="requests per measurement window (default 16)")
    parser.add_argument("--stability", type=float, help="percent three windows must agree within (default 50)")
    parser.add_argument("--max-trials", type=int, help="windows per level at most (default 6)")
    parser.add_argument("--request-count", type=int, help="instead of windows: exactly N requests per level")
    parser.add_argument("--max-tokens", type=int, help="max_tokens of every request (default 32)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="prompt data (../shared/data)")
    parser.add_argument("--per-intent", type=int, help="prompts per intent (default 8)")
    parser.add_argument(
        "--max-prompt-tokens", type=int, default=400,
        help="skip longer prompts (tiers refuse prompts beyond their context; 0 = no limit)",
    )  # fmt: skip
    parser.add_argument(
        "--tokenizer", type=Path,
        help="tokenizer.json for --max-prompt-tokens (default: the smallest tier's in --model-repository)",
    )  # fmt: skip
    parser.add_argument("--output-dir", type=Path, default=PROJECT_ROOT / "artifacts" / "bench")
    parser.add_argument("--time-budget", type=float, help="seconds for the whole run; later levels are skipped")
    parser.add_argument("--level-timeout", type=float, help="seconds per perf_analyzer run (default 300; quick 30)")
    parser.add_argument(
        "--ttft-requests", type=int, help="router_stream requests timed for first token (default 18; quick 6)"
    )
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--quick", action="store_true",
        help="concurrency 1 4, one rate (0.5 x best), windows of 4 requests, 16 tokens, 2 prompts/intent, "
        "140 s budget for the sweeps",
    )  # fmt: skip
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for name in defaults:
        if getattr(args, name, None) is None:
            setattr(args, name, defaults[name])
    args.measurement = Measurement(args.window_requests, args.stability, args.max_trials, args.request_count)
    unknown = [m for m in args.models if m not in BENCH_MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(BENCH_MODELS)}")
    if any(c < 1 for c in args.concurrency) or any(r <= 0 for r in args.request_rate or []):
        parser.error("concurrency levels and request rates must be positive")
    return args


def plan_models(url: str, wanted: Sequence[str]) -> tuple[list[ModelPlan], list[str]]:
    """Which of the wanted models are loaded (and decoupled); the others are returned as skipped."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    plans, missing = [], []
    try:
        for name in wanted:
            try:
                ready = client.is_model_ready(name)
            except Exception:  # noqa: BLE001 - any failure means not ready
                ready = False
            if not ready:
                missing.append(name)
                continue
            config = client.get_model_config(name, as_json=True).get("config", {})
            decoupled = bool(config.get("model_transaction_policy", {}).get("decoupled", False))
            plans.append(ModelPlan(name, LAYOUT_OF.get(name, "tier"), decoupled))
    finally:
        client.close()
    return plans, missing


class Budget:
    """Seconds left for the sweeps (unlimited when None)."""

    def __init__(self, seconds: float | None) -> None:
        self.deadline = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.monotonic()


class Sweeper:
    """Runs the levels; accumulates each model's server-metric deltas over its own perf_analyzer runs."""

    def __init__(
        self,
        args: argparse.Namespace,
        url: str,
        metrics_url: str | None,
        inputs: dict[str, Path],
        server_alive: Any = None,
    ):
        self.args, self.url, self.metrics_url, self.inputs = args, url, metrics_url, inputs
        self.server_alive = server_alive  # callable: False once the server this run started has exited
        self.server_down = False
        self.budget = Budget(None if args.time_budget is None else args.time_budget - (time.monotonic() - args.t0))
        self.deltas: dict[str, dict[MetricKey, float]] = {}

    def measure(self, plan: ModelPlan, mode: str, level: float) -> PerfPoint:
        left = self.budget.left()
        ok_points = [p for p in plan.points if p.ok]
        last_avg = None
        if ok_points:
            last = ok_points[-1]
            last_avg = last.p50_ms if math.isnan(last.avg_ms) else last.avg_ms
        needed = estimated_seconds(mode, level, self.args.measurement, last_avg)
        if self.server_down or (self.server_alive is not None and not self.server_alive()):
            self.server_down = True
            point = PerfPoint(plan.name, mode, level, status="skipped: the server exited (see triton.log)")
        elif any(p.status.startswith("failed: no result") for p in plan.points):
            point = PerfPoint(plan.name, mode, level, status="skipped: an earlier level timed out")
        elif left < 3 or needed > left:
            point = PerfPoint(plan.name, mode, level, status="skipped: time budget")
        else:
            before = fetch_metrics(self.metrics_url)
            point = run_level(
                plan.name, self.url, mode, level,
                input_data=self.inputs[plan.layout], streaming=plan.streaming, measurement=self.args.measurement,
                timeout_s=min(self.args.level_timeout, max(left, 5)),
                csv_out=self.args.output_dir / "perf" / f"{plan.name}.csv",
            )  # fmt: skip
            after = fetch_metrics(self.metrics_url)
            if "failed to connect" in point.status:
                self.server_down = True
            total = self.deltas.setdefault(plan.name, {})
            for key, value in metrics_delta(before, after).items():
                total[key] = total.get(key, 0.0) + value
        plan.points.append(point)
        shown = _point_line(point) if point.ok else point.status
        print(f"  {plan.name:<18} {mode:<11} {level:>7g}  {shown}", flush=True)
        return point

    def sweep(self, plans: Sequence[ModelPlan]) -> None:
        """Concurrency levels breadth-first (every model at the lowest level first), then request rates."""
        for level in self.args.concurrency:
            for plan in plans:
                self.measure(plan, "concurrency", level)
        for plan in plans:
            best = max((p.throughput for p in plan.points if p.ok), default=math.nan)
            for rate in self.args.request_rate or rate_levels(best, self.args.rate_fractions):
                self.measure(plan, "rate", rate)


def find_tier_tokenizer(model_repository: Path) -> Path | None:
    """The tokenizer.json of the smallest tier in a repository built by `make models` (None if absent)."""
    for tier in ("tier_small", "tier_medium", "tier_large"):
        candidate = model_repository / tier / "1" / "model" / "tokenizer.json"
        if candidate.is_file():
            return candidate
    return None


def token_length_filter(tokenizer: Path | None, max_prompt_tokens: int) -> tuple[Any, str]:
    """A prompt filter that keeps prompts of at most `max_prompt_tokens` tokens, and a note about it."""
    if tokenizer is None or max_prompt_tokens <= 0:
        return None, "no token-length filter"
    from tokenizers import Tokenizer

    encoder = Tokenizer.from_file(str(tokenizer))

    def accept(text: str) -> bool:
        return len(encoder.encode(text).ids) <= max_prompt_tokens

    return accept, f"prompts of at most {max_prompt_tokens} tokens ({tokenizer.parent.parent.parent.name} tokenizer)"


def measure_time_to_first_token(
    url: str, prompts: Sequence[str], max_tokens: int, budget: Budget | None = None, timeout_s: float = 60.0
) -> dict[str, Any]:
    """router_stream one request at a time with the client: time to the first text delta and to the result.

    Stops sending new requests when the budget runs out; `requests` says how many were sent.
    """
    import asyncio

    from router_client.client import AsyncRouterClient, RouterError, RouterResult, StreamDelta

    async def measure() -> dict[str, Any]:
        first, total, errors, sent = [], [], 0, 0
        async with AsyncRouterClient(url, timeout_s=timeout_s) as client:
            for prompt in prompts:
                if budget is not None and budget.left() < 5:
                    break
                if budget is not None:
                    client.timeout_s = min(timeout_s, max(5.0, budget.left()))
                sent += 1
                started = time.perf_counter()
                seen_first = None
                try:
                    async for event in client.stream(prompt, max_tokens=max_tokens):
                        if isinstance(event, StreamDelta) and seen_first is None:
                            seen_first = time.perf_counter() - started
                        elif isinstance(event, RouterResult):
                            total.append((time.perf_counter() - started) * 1000)
                except RouterError:
                    errors += 1
                    continue
                if seen_first is not None:
                    first.append(seen_first * 1000)
        first_p50, first_p90 = np.percentile(first, [50, 90]) if first else (math.nan, math.nan)
        return {
            "requests": sent,
            "errors": errors,
            "first_token_p50_ms": round(float(first_p50), 1),
            "first_token_p90_ms": round(float(first_p90), 1),
            "complete_p50_ms": round(float(np.percentile(total, 50)), 1) if total else math.nan,
        }

    return asyncio.run(measure())


def _point_line(p: PerfPoint) -> str:
    return f"{p.throughput:8.2f} req/s  p50 {p.p50_ms:9.1f} ms  p99 {p.p99_ms:9.1f} ms  ({p.seconds:.0f}s)"


def describe_run(args: argparse.Namespace, url: str, n_prompts: int, origin: str) -> str:
    m = args.measurement
    how = (
        f"{m.request_count} requests per level"
        if m.request_count
        else f"count windows of {m.window_requests} requests, stable within {m.stability:g}% "
        f"(at most {m.max_trials} windows)"
        if m.stability < 100
        else f"count windows of {m.window_requests} requests, no stability requirement (--quick takes the first "
        f"windows perf_analyzer measures, at most {m.max_trials})"
    )
    return (
        f"perf_analyzer over gRPC ({url}); {n_prompts} real prompts of mixed intents ({origin}); "
        f"max_tokens {args.max_tokens}; {how}; decoupled models with --streaming "
        "(their latency is until the last response)."
    )


def run(args: argparse.Namespace, url: str, metrics_url: str | None, server_alive: Any = None) -> int:
    out = args.output_dir
    (out / "perf").mkdir(parents=True, exist_ok=True)
    for old in (out / "perf").glob("*.csv"):
        old.unlink()
    plans, missing = plan_models(url, args.models)
    if not plans:
        print(f"router-bench: none of {', '.join(args.models)} is loaded on {url}", file=sys.stderr)
        return 1
    tokenizer = args.tokenizer or find_tier_tokenizer(args.model_repository)
    accept, length_note = token_length_filter(tokenizer, args.max_prompt_tokens)
    prompts, origin = load_prompts(args.data_dir, per_intent=args.per_intent, accept=accept)
    origin = f"{origin}; {length_note}"
    inputs = write_input_files(out / "inputs", prompts, args.max_tokens)
    print(f"router-bench: {len(prompts)} prompts from {origin}; models: {', '.join(p.name for p in plans)}")
    if missing:
        print(f"router-bench: not loaded, skipped: {', '.join(missing)}")
    sweeper = Sweeper(args, url, metrics_url, inputs, server_alive)
    sweeper.sweep(plans)
    server = {name: server_summary(delta, name) for name, delta in sweeper.deltas.items() if delta}
    ttft = None
    stream_plan = next((plan for plan in plans if plan.name == "router_stream"), None)
    if stream_plan is not None and args.ttft_requests > 0 and not sweeper.server_down:
        if any(p.status.startswith("failed") for p in stream_plan.points):
            print("router-bench: router_stream time to first token skipped (its perf_analyzer runs failed)")
        elif sweeper.budget.left() > 20:
            texts = [p.text for p in prompts[: args.ttft_requests]]
            ttft = measure_time_to_first_token(url, texts, args.max_tokens, sweeper.budget, args.level_timeout)
            print(f"router-bench: router_stream time to first token (client, one at a time): {ttft}")
        else:
            print("router-bench: router_stream time to first token skipped (time budget)")
    points = [p for plan in plans for p in plan.points]
    header = [describe_run(args, url, len(prompts), origin), ""]
    if missing:
        header += [f"Not loaded (skipped): {', '.join(missing)}", ""]
    markdown = summary_markdown(points, header)
    if ttft is not None:
        markdown += (
            f"\nrouter_stream, one request at a time from the Python client ({ttft['requests']} prompts, "
            f"{ttft['errors']} errors): time to first token p50 {ttft['first_token_p50_ms']} ms, "
            f"p90 {ttft['first_token_p90_ms']} ms; complete answer p50 {ttft['complete_p50_ms']} ms.\n"
        )
    if server:
        markdown += "\nServer metrics over each model's runs (Triton /metrics deltas):\n\n" + server_markdown(server)
    (out / "summary.md").write_text(markdown)
    write_summary_csv(points, out / "summary.csv")
    metrics = json_safe({**server, "router_stream_ttft": ttft})  # a nan p50 (no first token) is null, not NaN
    (out / "server_metrics.json").write_text(json.dumps(metrics, indent=1, allow_nan=False))
    if not args.no_plots:
        plot_latency_throughput(points, out / "latency_throughput.png", "latency vs throughput (all models)")
        for plan in plans:
            plot_latency_throughput(plan.points, out / f"latency_throughput_{plan.name}.png", plan.name)
    print()
    print(summary_markdown(points))
    elapsed = time.monotonic() - args.t0
    print(f"router-bench: wrote summary.md, summary.csv, server_metrics.json, plots to {out} in {elapsed:.0f}s")
    measured = [p for p in points if p.ok]
    return 0 if measured else 1


def main(argv: Sequence[str] | None = None) -> int:
    t0 = time.monotonic()
    args = parse_args(argv)
    args.t0 = t0
    if args.url:
        return run(args, args.url, args.metrics_url)
    from router_launcher.serve import LocalTritonServer, ServeError, ServerOptions

    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "triton.log").unlink(missing_ok=True)
    options = ServerOptions.on_free_ports(args.model_repository, log_file=args.output_dir / "triton.log")
    try:
        with LocalTritonServer(options) as server:
            print(f"router-bench: server ready in {server.startup_seconds:.1f}s (gRPC {server.grpc_url})")
            alive = lambda: server.process is not None and server.process.poll() is None  # noqa: E731
            return run(args, server.grpc_url, args.metrics_url or server.metrics_url, alive)
    except ServeError as exc:
        print(f"router-bench: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
