"""Benchmark the tier models: generated tokens/s per tier at several concurrencies (gRPC streaming API).

Starts its own tritonserver on free ports with the tiers of `--model-repository` (or measures a running one with
`--url`). Each concurrent client sends one prompt after another for `--seconds` and counts the `output_tokens` the
tier reports. `--instances`, `--threads` and `--batching` serve a copy of the tier configs with those settings, to
compare dynamic batching with several instances or generation threads. `--perf-analyzer` also runs perf_analyzer
(`--streaming`) at the same concurrencies and prints its inferences/s.

    router-bench-tiers            (python -m router_benchmarks.bench_tiers)
    python -m router_benchmarks.bench_tiers --batching false --threads 1 --instances 4
"""

from __future__ import annotations

import argparse
import json
import queue
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROMPTS = (
    "Summarise the plot of a detective story in two sentences.",
    "Explain how a hash map handles collisions.",
    "Write a short poem about the sea at night.",
    "What are the trade-offs of microservices?",
)


@dataclass
class TierFigures:
    tier: str
    concurrency: int
    requests: int
    tokens: int
    seconds: float
    latencies_ms: list[float]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def row(self) -> str:
        p50 = float(np.percentile(self.latencies_ms, 50)) if self.latencies_ms else float("nan")
        p90 = float(np.percentile(self.latencies_ms, 90)) if self.latencies_ms else float("nan")
        return (
            f"{self.tier:<12} {self.concurrency:>4} {self.requests:>7} {self.requests / self.seconds:>8.1f} "
            f"{self.tokens_per_s:>9.0f} {p50:>8.1f} {p90:>8.1f}"
        )


HEADER = f"{'tier':<12} {'conc':>4} {'reqs':>7} {'req/s':>8} {'tokens/s':>9} {'p50 ms':>8} {'p90 ms':>8}"


def _inputs(text: str, max_tokens: int):
    import tritonclient.grpc as grpcclient

    values = {
        "text_input": (np.array([[text.encode()]], dtype=np.object_), "BYTES"),
        "max_tokens": (np.array([[max_tokens]], dtype=np.int32), "INT32"),
        "return_log_probs": (np.array([[True]]), "BOOL"),
    }
    inputs = []
    for name, (array, datatype) in values.items():
        item = grpcclient.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def _client_loop(url: str, tier: str, max_tokens: int, until: float, out: list, errors: list) -> None:
    import tritonclient.grpc as grpcclient

    responses: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    try:
        index = 0
        while time.monotonic() < until:
            started = time.monotonic()
            client.async_stream_infer(tier, _inputs(PROMPTS[index % len(PROMPTS)], max_tokens))
            index += 1
            result, error = responses.get(timeout=120)
            if error is not None:
                errors.append(str(error))
                return
            tokens = int(result.as_numpy("output_tokens").reshape(-1)[0])
            out.append((started, time.monotonic(), tokens))
    finally:
        client.stop_stream()
        client.close()


def measure(url: str, tier: str, concurrency: int, max_tokens: int, seconds: float) -> TierFigures:
    """Closed loop: `concurrency` clients for `seconds`; tokens/s over the requests that finished in the window."""
    _client_loop(url, tier, max_tokens, time.monotonic() + 0.3, [], [])  # warm-up
    done: list[tuple[float, float, int]] = []
    errors: list[str] = []
    start = time.monotonic()
    until = start + seconds
    threads = [
        threading.Thread(target=_client_loop, args=(url, tier, max_tokens, until, done, errors))
        for _ in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{tier}: {errors[0]}")
    elapsed = max(end for _, end, _ in done) - start if done else seconds
    return TierFigures(
        tier,
        concurrency,
        len(done),
        sum(t for *_, t in done),
        elapsed,
        [(end - begin) * 1000 for begin, end, _ in done],
    )


def set_parameter(config: str, key: str, value: str) -> str:
    pattern = rf'(parameters \{{ key: "{key}" value \{{ string_value: ")[^"]*(")'
    if not re.search(pattern, config):
        return config + f'\nparameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n'
    return re.sub(pattern, rf"\g<1>{value}\g<2>", config)


def variant_repository(source: Path, target: Path, tiers: list[str], args: argparse.Namespace) -> Path:
    """A repository of the tiers only, with the requested instance count / threads / batching."""
    for tier in tiers:
        (target / tier / "1").mkdir(parents=True)
        (target / tier / "1" / "model").symlink_to((source / tier / "1" / "model").resolve())
        shutil.copy2(source / tier / "1" / "model.py", target / tier / "1" / "model.py")
        config = (source / tier / "config.pbtxt").read_text()
        if args.instances:
            config = re.sub(r"count: \d+", f"count: {args.instances}", config)
        if args.threads:
            config = set_parameter(config, "generation_threads", str(args.threads))
        if args.batching:
            config = set_parameter(config, "batching", args.batching)
        if args.intra_op_threads:
            config = set_parameter(config, "intra_op_thread_count", str(args.intra_op_threads))
        (target / tier / "config.pbtxt").write_text(config)
    return target


def perf_analyzer_rows(url: str, tiers: list[str], concurrency: list[int], max_tokens: int) -> list[str]:
    from router_benchmarks.perf import run_perf_analyzer

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "inputs.json"
        data.write_text(json.dumps({"data": [{"text_input": [p], "max_tokens": [max_tokens]} for p in PROMPTS]}))
        for tier in tiers:
            for point in run_perf_analyzer(
                tier, url, concurrency=concurrency, input_data=data, streaming=True, measurement_ms=4000
            ):
                rows.append(f"{point.row()} {point.throughput * max_tokens:>10.0f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_tiers", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="measure a running server (gRPC host:port)")
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--tiers", nargs="+", help="default: every tier of the server (router_client server_tiers)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=6.0, help="measurement window per point")
    parser.add_argument("--instances", type=int, default=0, help="serve with this many instances per tier")
    parser.add_argument("--threads", type=int, default=0, help="generation_threads per instance")
    parser.add_argument("--batching", choices=["true", "false"], default=None, help="batch execute()'s requests")
    parser.add_argument("--intra-op-threads", type=int, default=0, help="onnxruntime intra-op threads")
    parser.add_argument("--perf-analyzer", action="store_true", help="also run perf_analyzer --streaming")
    args = parser.parse_args(argv)

    def run(url: str) -> None:
        from router_client.client import server_tiers

        tiers = args.tiers or server_tiers(url)
        print(f"max_tokens {args.max_tokens}, {args.seconds:g}s per point, gRPC streaming clients (closed loop)")
        print(HEADER)
        for tier in tiers:
            for concurrency in args.concurrency:
                print(measure(url, tier, concurrency, args.max_tokens, args.seconds).row(), flush=True)
        if args.perf_analyzer:
            print("\nperf_analyzer --streaming (tokens/s = infer/s x max_tokens; the tiny tiers never stop early)")
            print(
                f"{'model':<24} {'conc':>6} {'infer/s':>10} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'tokens/s':>10}"
            )
            for row in perf_analyzer_rows(url, tiers, args.concurrency, args.max_tokens):
                print(row, flush=True)

    if args.url:
        run(args.url)
        return 0
    from router_launcher.serve import LocalTritonServer, ServerOptions

    with tempfile.TemporaryDirectory(prefix="bench-tiers-") as tmp:
        from llm_router.protocol import repository_tiers

        tiers = args.tiers or repository_tiers(args.model_repository)
        repo = variant_repository(args.model_repository, Path(tmp) / "models", tiers, args)
        with LocalTritonServer(ServerOptions.on_free_ports(repo, log_file=Path(tmp) / "triton.log")) as server:
            run(server.grpc_url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
