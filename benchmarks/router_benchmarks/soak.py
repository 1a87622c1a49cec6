"""Soak test of the `router`: many requests at a fixed concurrency, zero failures, memory and /dev/shm watched.

    python -m router_benchmarks.soak                      # starts its own local server (model_repository/)
    python -m router_benchmarks.soak --url localhost:8001 --server-pid 1234   # a running server

Sends `--requests` router requests (default 20,000) with `--concurrency` in flight (default 32) through
tritonclient.grpc.aio, prompts cycled from `data/bench_prompts.jsonl`, after a warm-up that sends each tier batches
of the longest prompts (onnxruntime's CPU arenas grow in steps to the largest shapes they see, which is not a leak)
and then router requests on the longest prompts. Every request must succeed. Reports
throughput and latency percentiles, and samples the resident memory (RSS, psutil) of tritonserver and of each
Python stub, plus the /dev/shm regions of the server, before (after a warm-up), during and after the run.

Pass criteria (exit 0), stated so they can be checked:
- zero failed requests;
- resident memory of tritonserver + stubs after the run <= before + `--rss-bound-mb` (default 64 MiB), and the
  least-squares slope of the total over the second half of the run <= `--rss-slope-bound-mb` MiB per 10k
  requests (default 16), so neither a jump nor a steady leak passes;
- /dev/shm used by the server's regions after <= before + `--shm-bound-mb` (default 8 MiB: two growth steps).
Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psutil
from router_launcher.procfs import cmdline, pid_listening_on, server_processes

DATA = Path(__file__).parent / "data"
DEFAULT_PROMPTS = DATA / "bench_prompts.jsonl"
DEFAULT_SHM_PREFIX = "triton_python_backend_shm_region_"
MIB = 1024 * 1024


# -- /proc sampling -------------------------------------------------------------------------------------------------
# process_names, pid_listening_on: the shared process readers of router_launcher.procfs (re-exported)
process_names = server_processes  # tritonserver and its stub processes: pid -> `tritonserver` / `stub:<instance>`


def shm_prefix(server_pid: int) -> str:
    """The Python backend's shm region prefix from tritonserver's command line."""
    for arg in cmdline(server_pid):
        match = re.search(r"shm-region-prefix-name=([^,\s]+)", arg)
        if match:
            return match.group(1)
    return DEFAULT_SHM_PREFIX


def shm_bytes(prefix: str) -> int:
    """Memory used (allocated blocks) by the /dev/shm files whose name starts with `prefix`."""
    total = 0
    for path in Path("/dev/shm").glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            total += path.stat().st_blocks * 512
    return total


@dataclass
class Sample:
    """Memory at one moment: per-process RSS (by name), their total, and /dev/shm of the server."""

    t: float
    done: int
    rss: dict[str, int]
    shm: int

    @property
    def total(self) -> int:
        return sum(self.rss.values())


def take_sample(server_pid: int, prefix: str, started: float, done: int) -> Sample:
    rss = {}
    for pid, name in process_names(server_pid).items():
        with contextlib.suppress(psutil.Error):  # exited meanwhile
            rss[name] = rss.get(name, 0) + psutil.Process(pid).memory_info().rss
    return Sample(round(time.monotonic() - started, 2), done, rss, shm_bytes(prefix))


class Sampler:
    """Samples memory every `interval_s` on a thread while the load runs."""

    def __init__(self, server_pid: int, interval_s: float, progress: list[int]) -> None:
        self.server_pid = server_pid
        self.prefix = shm_prefix(server_pid)
        self.interval_s = interval_s
        self.progress = progress
        self.samples: list[Sample] = []
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> Sample:
        s = take_sample(self.server_pid, self.prefix, self.started, self.progress[0])
        self.samples.append(s)
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- load -----------------------------------------------------------------------------------------------------------
@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    tiers: Counter = field(default_factory=Counter)
    escalated: int = 0
    seconds: float = 0.0


def warm_tiers(url: str, prompts: Sequence[str], max_tokens: int, rounds: int = 3) -> list[str]:
    """Batches of the longest prompts straight to each tier (as many at once as its max_batch_size), so that the
    tiers' onnxruntime memory arenas reach their largest shapes before the `before` sample. Returns the tiers hit."""
    import queue as queue_module

    import tritonclient.grpc as grpcclient
    from router_client.client import server_tiers

    client = grpcclient.InferenceServerClient(url)
    warmed = []
    try:
        for tier in server_tiers(url):
            if not client.is_model_ready(tier):
                continue
            batch = int(client.get_model_config(tier, as_json=True)["config"].get("max_batch_size", 1)) or 1
            longest = sorted(prompts, key=len, reverse=True)[:batch]
            for _ in range(rounds):
                streams = []
                # the first request (a prompt far above any context) keeps the tier busy tokenizing, so the next
                # `batch` queue up and run as one batch
                for text in ["\U0001f642" * 100_000, *longest]:
                    stream = grpcclient.InferenceServerClient(url)
                    answers: queue_module.Queue = queue_module.Queue()
                    stream.start_stream(callback=lambda result=None, error=None, q=answers: q.put(error))
                    text_in = grpcclient.InferInput("text_input", [1, 1], "BYTES")
                    text_in.set_data_from_numpy(np.array([[text.encode("utf-8")]], dtype=np.object_))
                    tokens = grpcclient.InferInput("max_tokens", [1, 1], "INT32")
                    tokens.set_data_from_numpy(np.array([[max_tokens]], dtype=np.int32))
                    streams.append((stream, answers, [text_in, tokens]))
                for stream, _, inputs in streams:
                    stream.async_stream_infer(tier, inputs)
                for stream, answers, _ in streams:
                    answers.get(timeout=120)  # the one (final) response, or an error: either way the shapes ran
                    stream.stop_stream()
                    stream.close()
            warmed.append(tier)
    finally:
        client.close()
    return warmed


def read_prompts(path: Path, limit: int | None = None) -> list[str]:
    prompts = [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()]
    return prompts[:limit] if limit else prompts


async def run_load(
    url: str, prompts: Sequence[str], requests: int, concurrency: int, max_tokens: int, progress: list[int],
    timeout_s: float,
) -> LoadResult:  # fmt: skip
    """`requests` router calls, `concurrency` at a time; every outcome is recorded."""
    import tritonclient.grpc.aio as aio
    from tritonclient.grpc import InferInput
    from tritonclient.utils import InferenceServerException

    result = LoadResult()
    client = aio.InferenceServerClient(url)
    next_index = 0
    started = time.monotonic()

    def inputs(text: str) -> list:
        text_in = InferInput("text_input", [1], "BYTES")
        text_in.set_data_from_numpy(np.array([text.encode("utf-8")], dtype=np.object_))
        tokens = InferInput("max_tokens", [1], "INT32")
        tokens.set_data_from_numpy(np.array([max_tokens], dtype=np.int32))
        return [text_in, tokens]

    async def worker() -> None:
        nonlocal next_index
        while next_index < requests:
            index = next_index
            next_index += 1
            begin = time.monotonic()
            try:
                response = await client.infer("router", inputs(prompts[index % len(prompts)]), client_timeout=timeout_s)
                result.tiers[response.as_numpy("tier")[0].decode()] += 1
                result.escalated += bool(response.as_numpy("escalated")[0])
            except InferenceServerException as exc:
                result.errors[f"{exc.status()}: {(exc.message() or '')[:160]}"] += 1
            except Exception as exc:  # noqa: BLE001 - a soak counts every failure, whatever its kind
                result.errors[f"{type(exc).__name__}: {str(exc)[:160]}"] += 1
            result.latencies_ms.append((time.monotonic() - begin) * 1000)
            progress[0] += 1

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await client.close()
    result.seconds = time.monotonic() - started
    return result


# -- analysis -------------------------------------------------------------------------------------------------------
def slope_per_10k(samples: Sequence[Sample]) -> float:
    """Least-squares slope of total RSS (MiB) against completed requests, per 10,000 requests."""
    points = [(s.done, s.total / MIB) for s in samples]
    if len(points) < 3 or points[-1][0] == points[0][0]:
        return 0.0
    xs, ys = zip(*points, strict=True)
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    return 0.0 if var == 0 else sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var * 10_000


@dataclass
class Verdict:
    ok: bool
    lines: list[str]


def judge(
    load: LoadResult, before: Sample, during: list[Sample], after: Sample, rss_bound_mb: float,
    slope_bound_mb: float, shm_bound_mb: float,
) -> Verdict:  # fmt: skip
    checks = []
    failures = sum(load.errors.values())
    checks.append((failures == 0, f"failed requests: {failures} (required 0)"))
    growth = (after.total - before.total) / MIB
    checks.append((growth <= rss_bound_mb, f"RSS growth after - before: {growth:+.1f} MiB (bound {rss_bound_mb:g})"))
    half = during[len(during) // 2 :]
    slope = slope_per_10k(half)
    checks.append(
        (slope <= slope_bound_mb, f"RSS slope, 2nd half: {slope:+.2f} MiB/10k requests (bound {slope_bound_mb:g})")
    )
    shm_growth = (after.shm - before.shm) / MIB
    checks.append((shm_growth <= shm_bound_mb, f"/dev/shm growth: {shm_growth:+.1f} MiB (bound {shm_bound_mb:g})"))
    return Verdict(all(ok for ok, _ in checks), [("PASS " if ok else "FAIL ") + line for ok, line in checks])


def memory_table(before: Sample, during: list[Sample], after: Sample) -> list[str]:
    names = sorted(set(before.rss) | set(after.rss) | {n for s in during for n in s.rss})
    rows = [f"{'process':<34} {'before':>9} {'max during':>11} {'after':>9}  (MiB)"]
    for name in [*names, "TOTAL", "/dev/shm"]:
        if name == "TOTAL":
            values = (before.total, max((s.total for s in during), default=0), after.total)
        elif name == "/dev/shm":
            values = (before.shm, max((s.shm for s in during), default=0), after.shm)
        else:
            values = (before.rss.get(name, 0), max((s.rss.get(name, 0) for s in during), default=0),
                      after.rss.get(name, 0))  # fmt: skip
        rows.append(f"{name:<34} " + " ".join(f"{v / MIB:>9.1f}" if i != 1 else f"{v / MIB:>11.1f}"
                                              for i, v in enumerate(values)))  # fmt: skip
    return rows


# -- main -----------------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m router_benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="gRPC host:port of a running server (default: start a local one)")
    parser.add_argument("--server-pid", type=int, help="tritonserver's pid with --url (default: found by port)")
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--warmup", type=int, default=640, help="requests (the longest prompts) before the `before` sample"
    )
    parser.add_argument("--max-tokens", type=int, default=4, help="per request (the policy caps it per tier)")
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help="JSON lines with a `prompt` field")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--sample-interval", type=float, default=10.0, help="seconds between memory samples")
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before the `after` sample")
    parser.add_argument("--rss-bound-mb", type=float, default=64.0)
    parser.add_argument("--rss-slope-bound-mb", type=float, default=16.0)
    parser.add_argument("--shm-bound-mb", type=float, default=8.0)
    parser.add_argument("--json", type=Path, help="write all figures and samples here")
    return parser.parse_args(argv)


def soak(args: argparse.Namespace, url: str, server_pid: int | None) -> int:
    prompts = read_prompts(args.prompts)
    progress = [0]
    print(f"soak: {args.requests} router requests at concurrency {args.concurrency}, max_tokens {args.max_tokens}, "
          f"{len(prompts)} prompts, server {url} (pid {server_pid})", flush=True)  # fmt: skip
    # warm-up: the tiers' largest shapes first (onnxruntime's arenas grow in steps to their high-water mark), then
    # router requests on the longest prompts at full concurrency
    print(f"soak: tiers warmed with their largest batches: {warm_tiers(url, prompts, args.max_tokens)}", flush=True)
    longest = sorted(prompts, key=len, reverse=True)[: args.concurrency]
    warm = asyncio.run(run_load(url, longest, args.warmup, args.concurrency, args.max_tokens, [0], args.timeout))
    if warm.errors:
        print(f"soak: warm-up failed: {dict(warm.errors)}", file=sys.stderr)
        return 1
    if server_pid is None:
        print("soak: tritonserver's pid unknown: memory is not sampled (pass --server-pid)", file=sys.stderr)
        load = asyncio.run(run_load(url, prompts, args.requests, args.concurrency, args.max_tokens, progress,
                                    args.timeout))  # fmt: skip
        before = during = after = None
    else:
        sampler = Sampler(server_pid, args.sample_interval, progress)
        before = sampler.sample()
        reporter = threading.Thread(target=_report_progress, args=(progress, args.requests, sampler), daemon=True)
        with sampler:
            reporter.start()
            load = asyncio.run(run_load(url, prompts, args.requests, args.concurrency, args.max_tokens, progress,
                                        args.timeout))  # fmt: skip
            during = list(sampler.samples[1:])
        time.sleep(args.settle)
        after = sampler.sample()
    lat = load.latencies_ms
    p50, p90, p99 = np.percentile(lat, [50, 90, 99])
    lines = [
        f"requests {len(lat)}  failed {sum(load.errors.values())}  in {load.seconds:.1f} s  "
        f"({len(lat) / load.seconds:.1f} req/s)",
        f"latency ms: p50 {p50:.1f}  p90 {p90:.1f}  p99 {p99:.1f}  "
        f"max {max(lat):.1f}  mean {statistics.fmean(lat):.1f}",
        f"answered by: {dict(load.tiers.most_common())}  escalated {load.escalated}",
    ]
    if load.errors:
        lines.append(f"errors: {dict(load.errors.most_common(5))}")
    verdict_ok = not load.errors
    if before is not None and after is not None and during is not None:
        lines += memory_table(before, during, after)
        verdict = judge(load, before, during, after, args.rss_bound_mb, args.rss_slope_bound_mb, args.shm_bound_mb)
        lines += verdict.lines
        verdict_ok = verdict.ok
    print("\n".join(lines), flush=True)
    if args.json:
        args.json.write_text(json.dumps({
            "args": {k: str(v) for k, v in vars(args).items()}, "url": url, "requests": len(lat),
            "failed": sum(load.errors.values()), "errors": dict(load.errors), "seconds": load.seconds,
            "p50_ms": float(p50), "p99_ms": float(p99), "tiers": dict(load.tiers),
            "samples": [asdict(s) for s in ([before, *(during or []), after] if before else [])],
            "passed": verdict_ok,
        }, indent=1))  # fmt: skip
    print("soak: PASS" if verdict_ok else "soak: FAIL", flush=True)
    return 0 if verdict_ok else 1


def _report_progress(progress: list[int], total: int, sampler: Sampler) -> None:
    last = -1
    while progress[0] < total:
        time.sleep(30)
        if progress[0] != last and sampler.samples:
            s = sampler.samples[-1]
            print(f"soak: {progress[0]}/{total} done; RSS total {s.total / MIB:.0f} MiB, /dev/shm "
                  f"{s.shm / MIB:.1f} MiB", flush=True)  # fmt: skip
            last = progress[0]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.url:
        pid = args.server_pid or pid_listening_on(int(args.url.rsplit(":", 1)[1]))
        return soak(args, args.url, pid)
    from router_launcher.serve import LocalTritonServer, ServeError, ServerOptions

    log = Path(tempfile.mkdtemp(prefix="router-soak-")) / "triton.log"
    options = ServerOptions.on_free_ports(args.model_repository, log_file=log)
    try:
        with LocalTritonServer(options) as server:
            print(f"soak: started a local server in {server.startup_seconds:.1f}s (log {log})", flush=True)
            return soak(args, server.grpc_url, server.process.pid)
    except ServeError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
