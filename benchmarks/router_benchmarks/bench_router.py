"""Routing overhead: perf_analyzer on `router` (max_tier=tier_small) and directly on `tier_small`, in one run.

Same prompts, same max_tokens. The router request carries `max_tier=tier_small`, so it classifies and routes but
cannot escalate; overhead = router p50 - direct p50 at the same concurrency. With the server on this host it also
prints the server's CPU milliseconds per request by process (tritonserver and each model's stubs): on a CPU-bound
host the routed path's extra CPU per request, times concurrency over cores, is what the overhead grows to.

    .venv/bin/python -m router_benchmarks.bench_router [--url HOST:PORT] [--concurrency 1 8 16]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from contextlib import nullcontext
from pathlib import Path

from router_launcher.procfs import pid_listening_on
from router_launcher.serve import LocalTritonServer, ServerOptions

from router_benchmarks.perf import CpuMeter, PerfPoint, points_table, run_perf_analyzer

PROMPTS = Path(__file__).parent / "data" / "bench_prompts.jsonl"


def write_input_data(path: Path, prompts: list[str], max_tokens: int) -> Path:
    """perf_analyzer input data valid for both models (router: dims [1]; tier: dims [1] plus the batch dim)."""
    data = [{"text_input": [p], "max_tokens": [max_tokens]} for p in prompts]
    path.write_text(json.dumps({"data": data}))
    return path


def measure(
    url: str,
    prompts: list[str],
    max_tokens: int,
    concurrency: list[int],
    measurement_ms: int,
    server_pid: int | None = None,
) -> str:
    rows: list[tuple[PerfPoint, PerfPoint]] = []
    meter = CpuMeter(url, server_pid) if server_pid else None
    with tempfile.TemporaryDirectory() as tmp:
        data = write_input_data(Path(tmp) / "inputs.json", prompts, max_tokens)
        for level in concurrency:  # interleaved per level, so both see the same machine state
            with meter.span("tier_small", f"tier_small c={level}") if meter else nullcontext():
                direct = run_perf_analyzer(
                    "tier_small", url, concurrency=[level], input_data=data, streaming=True,
                    measurement_ms=measurement_ms,
                )[0]  # fmt: skip
            with meter.span("router", f"router c={level}") if meter else nullcontext():
                routed = run_perf_analyzer(
                    "router", url, concurrency=[level], input_data=data, measurement_ms=measurement_ms,
                    extra_args=["--request-parameter", "max_tier:tier_small:string"],
                )[0]  # fmt: skip
            rows.append((direct, routed))
    lines = [points_table(point for pair in rows for point in pair), ""]
    lines.append(
        f"{'concurrency':>11} {'direct p50':>11} {'router p50':>11} {'overhead p50 ms':>16} {'overhead p99 ms':>16}"
    )
    for direct, routed in rows:
        lines.append(
            f"{direct.level:>11g} {direct.p50_ms:>11.2f} {routed.p50_ms:>11.2f} "
            f"{routed.p50_ms - direct.p50_ms:>16.2f} {routed.p99_ms - direct.p99_ms:>16.2f}"
        )
    if meter is not None:
        lines += ["", meter.table()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server's gRPC address; default: start one on free ports")
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=50, help="how many sample prompts to cycle through")
    parser.add_argument("--measurement-ms", type=int, default=5000)
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in PROMPTS.read_text().splitlines() if line.strip()]
    prompts = [r["prompt"].encode()[:400].decode(errors="ignore") for r in rows[: args.prompts]]
    if args.url:
        port = int(args.url.rsplit(":", 1)[1])
        pid = pid_listening_on(port)  # a server on this host: CPU per request is measured too
        print(measure(args.url, prompts, args.max_tokens, args.concurrency, args.measurement_ms, pid))
        return 0
    with LocalTritonServer(ServerOptions.on_free_ports(args.model_repository)) as server:
        print(f"server ready in {server.startup_seconds:.1f}s; {len(prompts)} prompts, max_tokens={args.max_tokens}")
        server_pid = server.process.pid if server.process else None
        print(measure(server.grpc_url, prompts, args.max_tokens, args.concurrency, args.measurement_ms, server_pid))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
