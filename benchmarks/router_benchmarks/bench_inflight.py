"""In-flight batching of a tier against raw onnxruntime: tokens/s of the server next to the decoder's own step rate.

One run measures, side by side, on the same model file with the same onnxruntime threads:
  raw      onnxruntime decode steps (session.run with the KV cache, greedy feedback) at batch 1 and 8 for the prompts
           the server gets (prefill not timed), `--max-tokens` steps per round;
  server   perf_analyzer --async --streaming on the tier at concurrency 1 and 8, each request asking `--max-tokens`
           tokens with end_id -1 (no end token: exactly max_tokens tokens), so tokens/s = infer/s x max_tokens;
           windows of 4 x concurrency requests (requests of a closed loop finish in groups: a window counts whole
           groups, not the few that fell into a time window).
and prints the server's share of the raw rate (targets: >= 90% of raw batch 1 at concurrency 1, >= 70% of raw batch
8 at concurrency 8). The raw rate leaves out prefill, which a server pays once per request; the row "raw decode + a
batch-1 prefill/request" shows that bound for a server prefilling each whole prompt alone (templated prompts are
longer: see --raw; the tier does better: it prefills the requests joining at one step in one call, and templated
prompts from after the template's cached head). Starts its own tritonserver with the tier of `--model-repository`
(or measures `--url`).

    python -m router_benchmarks.bench_inflight --model-repository model_repository --tier tier_small
    python -m router_benchmarks.bench_inflight --model-repository artifacts/real_tiers --url 127.0.0.1:9201
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
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
TARGETS = {1: 0.90, 8: 0.70}  # server tokens/s at concurrency N over raw tokens/s at batch N


def config_parameter(config: str, key: str, default: str) -> str:
    found = re.search(rf'key: "{key}" value \{{ string_value: "([^"]*)"', config)
    return found.group(1) if found and found.group(1) else default


@dataclass
class RawRate:
    batch: int
    steps: int
    seconds: float
    prefill_s: float  # mean time of one prompt's prefill at batch 1 (what the server adds per request)

    @property
    def tokens_per_s(self) -> float:
        return self.batch * self.steps / self.seconds

    def with_prefill(self, tokens: int) -> float:
        """Tokens/s if each request of `tokens` tokens also paid its own batch-1 prefill: a server's upper bound."""
        step_s = self.seconds / self.steps
        return self.batch * tokens / (self.batch * self.prefill_s + tokens * step_s)


def raw_decode_rate(
    model_dir: Path, prompt_ids: list[list[int]], batch: int, steps: int, threads: int, min_seconds: float
) -> RawRate:
    """Decode steps of the ONNX decoder alone: prefill `batch` prompts (not timed), then time `steps` steps."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    past_names = [n for n in inputs if n.startswith("past_key_values.")]
    outputs = ["logits", *(n.replace("past_key_values.", "present.") for n in past_names)]
    first = inputs[past_names[0]]
    kv_dtype = np.float16 if first.type == "tensor(float16)" else np.float32
    rows = [prompt_ids[i % len(prompt_ids)] for i in range(batch)]
    width = max(len(r) for r in rows)
    input_ids = np.zeros((batch, width), dtype=np.int64)
    attention = np.zeros((batch, width), dtype=np.int64)
    for i, row in enumerate(rows):  # left padding, as the tier does
        input_ids[i, width - len(row) :] = row
        attention[i, width - len(row) :] = 1
    positions = np.clip(np.cumsum(attention, axis=1) - 1, 0, None)

    def feeds(ids: np.ndarray, mask: np.ndarray, pos: np.ndarray, past: dict) -> dict:
        feed = {"input_ids": ids, **past}
        if "attention_mask" in inputs:
            feed["attention_mask"] = mask
        if "position_ids" in inputs:
            feed["position_ids"] = pos
        return feed

    prefills = []
    for row in prompt_ids:  # one prompt at a time, as requests arrive at a server
        started = time.perf_counter()
        empty = np.zeros((1, int(first.shape[1]), 0, int(first.shape[3])), dtype=kv_dtype)
        ones = np.ones((1, len(row)), dtype=np.int64)
        session.run(outputs, feeds(np.array([row]), ones, np.arange(len(row))[None], dict.fromkeys(past_names, empty)))
        prefills.append(time.perf_counter() - started)
    total_steps, total_s = 0, 0.0
    while total_s < min_seconds or total_steps == 0:
        empty = np.zeros((batch, int(first.shape[1]), 0, int(first.shape[3])), dtype=kv_dtype)
        result = session.run(outputs, feeds(input_ids, attention, positions, dict.fromkeys(past_names, empty)))
        mask, pos = attention, positions[:, -1:]
        started = time.perf_counter()
        for _ in range(steps):
            past = dict(zip(past_names, result[1:], strict=True))
            ids = np.argmax(result[0][:, -1, :], axis=-1).reshape(batch, 1).astype(np.int64)
            mask = np.concatenate([mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
            pos = pos + 1
            result = session.run(outputs, feeds(ids, mask, pos, past))
        total_s += time.perf_counter() - started
        total_steps += steps
    return RawRate(batch, total_steps, total_s, float(np.mean(prefills)))


def tier_repository(source: Path, tier: str, target: Path) -> Path:
    """A repository holding only `tier` (its weights linked, not copied)."""
    (target / tier / "1").mkdir(parents=True)
    (target / tier / "1" / "model").symlink_to((source / tier / "1" / "model").resolve())
    shutil.copy2(source / tier / "1" / "model.py", target / tier / "1" / "model.py")
    shutil.copy2(source / tier / "config.pbtxt", target / tier / "config.pbtxt")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_inflight", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--tier", default="tier_small")
    parser.add_argument("--url", default=None, help="measure a running server (gRPC host:port) serving the tier")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8], help="raw batch sizes = concurrencies")
    parser.add_argument(
        "--window-requests",
        type=int,
        default=0,
        help="perf_analyzer count windows of this many requests (default 4 x concurrency, at least 8): requests of "
        "a closed loop finish in groups, so a time window holds a varying number of them",
    )
    parser.add_argument("--measurement-ms", type=int, default=None, help="time windows of this many ms instead")
    parser.add_argument("--max-trials", type=int, default=10, help="perf_analyzer windows at most per level")
    parser.add_argument("--raw-seconds", type=float, default=5.0, help="minimum timed decode seconds per batch size")
    parser.add_argument("--raw", action="store_true", help="send the prompts raw (no chat template)")
    parser.add_argument("--no-stream", action="store_true", help="one response per request instead of per token")
    args = parser.parse_args(argv)

    from llm_router.tier.generation import Generator

    from router_benchmarks.perf import Measurement, PerfPoint, run_level

    model_dir = args.model_repository / args.tier / "1" / "model"
    config = (args.model_repository / args.tier / "config.pbtxt").read_text()
    threads = int(config_parameter(config, "intra_op_thread_count", "1"))
    generator = Generator(model_dir)  # only to tokenize the prompts exactly as the tier does
    prompt_ids = [generator.prompt_ids(p, raw=args.raw) for p in PROMPTS]
    export = json.loads((model_dir / "export.json").read_text()) if (model_dir / "export.json").exists() else {}
    lengths = sorted(len(p) for p in prompt_ids)
    print(
        f"{args.tier}: {Path(export.get('source', str(model_dir))).name}, dtype {export.get('dtype', '?')}, "
        f"weights {export.get('quantize', '?')}; intra_op threads {threads}; prompts {lengths[0]}-{lengths[-1]} tokens "
        f"({'raw' if args.raw else 'chat template' if generator.chat_template else 'no template'}); "
        f"{args.max_tokens} output tokens",
        flush=True,
    )

    def measure_raw(when: str) -> dict[int, RawRate]:
        rates = {}
        for batch in args.levels:
            rates[batch] = raw_decode_rate(model_dir, prompt_ids, batch, args.max_tokens, threads, args.raw_seconds)
            print(f"raw batch {batch} ({when}): {rates[batch].tokens_per_s:.1f} tokens/s", flush=True)
        return rates

    # raw rates are measured before and after the server's, and the higher one is the reference: on a shared host
    # the load changes between the two, and the ratio must not flatter the server
    before = measure_raw("before")

    def serve(url: str) -> dict[int, PerfPoint]:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "inputs.json"
            rows = [
                {
                    "text_input": [p],
                    "max_tokens": [args.max_tokens],
                    "end_id": [-1],
                    "raw": [args.raw],
                    "stream": [not args.no_stream],
                }
                for p in PROMPTS
            ]
            data.write_text(json.dumps({"data": rows}))
            points = {}
            for level in args.levels:
                if args.measurement_ms:
                    measurement = Measurement(interval_ms=args.measurement_ms, max_trials=args.max_trials)
                else:
                    window = args.window_requests or max(8, 4 * level)
                    measurement = Measurement(window_requests=window, max_trials=args.max_trials)
                point = run_level(
                    args.tier,
                    url,
                    "concurrency",
                    level,
                    measurement=measurement,
                    input_data=data,
                    streaming=True,
                    extra_args=["--async"],
                )
                points[level] = point
                rate = f"{point.throughput * args.max_tokens:.1f} tokens/s" if point.ok else point.status
                print(f"server concurrency {level}: {rate}", flush=True)
            return points

    if args.url:
        points = serve(args.url)
    else:
        from router_launcher.serve import LocalTritonServer, ServerOptions, free_ports

        with tempfile.TemporaryDirectory(prefix="bench-inflight-") as tmp:
            repo = tier_repository(args.model_repository, args.tier, Path(tmp) / "models")
            grpc_port, http_port, metrics_port = free_ports(3)
            server = LocalTritonServer(
                ServerOptions(
                    model_repository=repo,
                    grpc_port=grpc_port,
                    http_port=http_port,
                    metrics_port=metrics_port,
                    log_file=Path(tmp) / "triton.log",
                )
            )
            server.start()
            try:
                points = serve(server.grpc_url)
            finally:
                server.stop()

    after = measure_raw("after")
    raw = {level: max(before[level], after[level], key=lambda rate: rate.tokens_per_s) for level in args.levels}
    print()
    print(f"{'':<40} {'batch/conc':>10} {'tokens/s':>9} {'p50 ms':>8} {'of raw':>7} {'target':>7}")
    for level in args.levels:
        spread = f"(before {before[level].tokens_per_s:.1f}, after {after[level].tokens_per_s:.1f})"
        print(f"{'raw onnxruntime decode steps':<40} {level:>10} {raw[level].tokens_per_s:>9.1f} {spread}")
    for level in args.levels:
        bound = raw[level].with_prefill(args.max_tokens)
        share = bound / raw[level].tokens_per_s
        print(f"{'raw decode + a batch-1 prefill/request':<40} {level:>10} {bound:>9.1f} {'':>8} {share:>7.0%}")
    for level in args.levels:
        point = points[level]
        if not point.ok:
            print(f"{'server (perf_analyzer --streaming)':<40} {level:>10} {point.status}")
            continue
        tokens = point.throughput * args.max_tokens
        share = tokens / raw[level].tokens_per_s
        target = TARGETS.get(level)
        verdict = "" if target is None else f"{'>=' if share >= target else '<'}{target:.0%}"
        print(
            f"{'server (perf_analyzer --streaming)':<40} {level:>10} {tokens:>9.1f} {point.p50_ms:>8.1f} "
            f"{share:>7.0%} {verdict:>7}"
        )
    print(f"(prefill of one prompt at batch 1: {1000 * raw[args.levels[0]].prefill_s:.1f} ms)")
    return 0 if all(point.ok for point in points.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
