"""Benchmark the intent classifier: perf_analyzer on `intent_classifier` (INT8) and `intent_classifier_fp32`.

Real prompts (benchmarks/router_benchmarks/data/bench_prompts.jsonl) are the input data; every model runs at each
concurrency in one run and the table prints throughput (prompts/s) and p50/p99 latency.

    .venv/bin/python -m router_benchmarks.bench_classifier                 # starts its own server on free ports
    .venv/bin/python -m router_benchmarks.bench_classifier --url localhost:8001
"""

from __future__ import annotations

import argparse
import json
import tempfile
from contextlib import ExitStack
from pathlib import Path

from router_benchmarks.perf import PerfPoint, points_table, run_perf_analyzer

PROMPTS = Path(__file__).resolve().parent / "data" / "bench_prompts.jsonl"
MODELS = ("intent_classifier", "intent_classifier_fp32")
ENCODERS = {"intent_classifier": "intent_encoder_int8", "intent_classifier_fp32": "intent_encoder"}


def read_prompts(path: Path = PROMPTS, limit: int | None = None) -> list[str]:
    prompts = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            prompts.append(json.loads(line)["prompt"])
    return prompts[:limit] if limit else prompts


def write_input_data(prompts: list[str], path: Path) -> Path:
    """perf_analyzer --input-data JSON: one `text` [1] per request (batch dimension added by perf_analyzer)."""
    data = {"data": [{"text": {"content": [p], "shape": [1]}} for p in prompts]}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def start_server(stack: ExitStack, repository: Path, models: list[str]) -> str:
    from router_launcher.serve import LocalTritonServer, ServerOptions

    options = ServerOptions.on_free_ports(repository, model_control_mode="explicit", load_models=models)
    server = stack.enter_context(LocalTritonServer(options))
    print(f"server ready in {server.startup_seconds:.1f} s on {server.grpc_url}")
    return server.grpc_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_classifier", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="gRPC url of a running server (default: start one)")
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--measurement-ms", type=int, default=4000)
    parser.add_argument("--prompts", type=Path, default=PROMPTS)
    args = parser.parse_args(argv)
    points: list[PerfPoint] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        url = args.url or start_server(stack, args.model_repository, args.models)
        input_data = write_input_data(read_prompts(args.prompts), Path(tmp) / "prompts.json")
        for model in args.models:
            points += run_perf_analyzer(
                model, url, concurrency=args.concurrency, input_data=input_data, measurement_ms=args.measurement_ms
            )
    print(points_table(points))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
