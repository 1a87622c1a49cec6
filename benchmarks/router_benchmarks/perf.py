"""Run Triton's perf_analyzer (shipped in the tritonclient wheel) and read its CSV report.

The one perf_analyzer wrapper of the benchmarks: `router-bench` drives it level by level (`run_level`), the smaller
tools (bench_classifier, bench_router, bench_server, bench_tiers) through `run_perf_analyzer`.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer is missing or failed; the message says why (its last error line)."""


def perf_analyzer_binary() -> Path:
    """perf_analyzer next to this interpreter (the tritonclient wheel installs it into the venv's bin)."""
    candidate = Path(sys.executable).parent / "perf_analyzer"
    if candidate.exists():
        return candidate
    found = shutil.which("perf_analyzer")
    if found:
        return Path(found)
    raise PerfAnalyzerError("perf_analyzer not found; install tritonclient[all]==2.51.* (`make setup`)")


def perf_analyzer_env() -> dict[str, str]:
    """Environment with libcudart.so.12 from the nvidia-cuda-runtime-cu12 wheel on LD_LIBRARY_PATH."""
    env = dict(os.environ)
    spec = importlib.util.find_spec("nvidia.cuda_runtime")
    if spec is not None and spec.submodule_search_locations:
        lib = Path(list(spec.submodule_search_locations)[0]) / "lib"
        env["LD_LIBRARY_PATH"] = str(lib) + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    return env


@dataclass(frozen=True)
class Measurement:
    """How perf_analyzer measures one level.

    Count windows (the default): each window lasts until `window_requests` requests completed (at least 1 s), and
    the level ends when three windows agree within `stability` percent (or after `max_trials` windows). With
    `interval_ms`, windows of that many milliseconds instead. With `request_count`, it sends exactly that many
    requests and measures once (its throughput is then computed over at least 1 s, so it understates fast models).
    """

    window_requests: int = 16
    stability: float = 50.0
    max_trials: int = 6
    request_count: int | None = None
    interval_ms: int | None = None


@dataclass
class PerfPoint:
    """One measured (or skipped / failed) load level of one model: a line of perf_analyzer's CSV report."""

    model: str
    mode: str  # concurrency | rate
    level: float
    status: str = "ok"  # ok | failed: ... | skipped: ...
    throughput: float = math.nan  # inferences (requests) per second
    response_throughput: float = math.nan  # responses per second (decoupled models)
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p95_ms: float = math.nan
    p99_ms: float = math.nan
    avg_ms: float = math.nan
    server_queue_ms: float = math.nan
    server_compute_ms: float = math.nan
    seconds: float = 0.0  # wall time of the perf_analyzer run

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def row(self) -> str:
        """A line of TABLE_HEADER's table."""
        return (
            f"{self.model:<24} {self.level:>6g} {self.throughput:>10.1f} {self.p50_ms:>9.2f} "
            f"{self.p90_ms:>9.2f} {self.p99_ms:>9.2f}"
        )


TABLE_HEADER = f"{'model':<24} {'conc':>6} {'infer/s':>10} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9}"


def points_table(points: Iterable[PerfPoint]) -> str:
    """TABLE_HEADER and a row per point."""
    return "\n".join([TABLE_HEADER, *(point.row() for point in points)])


def _us_to_ms(row: dict[str, str], column: str) -> float:
    value = row.get(column)
    return float(value) / 1000.0 if value not in (None, "") else math.nan


def parse_csv(text: str, model: str, mode: str) -> list[PerfPoint]:
    """The points of a perf_analyzer `-f` CSV report (latencies there are in microseconds)."""
    points = []
    for row in csv.DictReader(io.StringIO(text)):
        level = row.get("Concurrency") or row.get("Request Rate")
        if level in (None, ""):
            continue
        compute = [_us_to_ms(row, c) for c in ("Server Compute Input", "Server Compute Infer", "Server Compute Output")]
        response_tp = row.get("Response Throughput")
        points.append(
            PerfPoint(
                model=model,
                mode=mode,
                level=float(level),
                throughput=float(row["Inferences/Second"]),
                response_throughput=float(response_tp) if response_tp not in (None, "") else math.nan,
                p50_ms=_us_to_ms(row, "p50 latency"),
                p90_ms=_us_to_ms(row, "p90 latency"),
                p95_ms=_us_to_ms(row, "p95 latency"),
                p99_ms=_us_to_ms(row, "p99 latency"),
                avg_ms=_us_to_ms(row, "Avg latency"),
                server_queue_ms=_us_to_ms(row, "Server Queue"),
                server_compute_ms=math.fsum(c for c in compute if not math.isnan(c)),
            )
        )
    return points


def perf_command(
    model: str,
    url: str,
    mode: str,
    level: float,
    report: Path,
    *,
    input_data: Path | None = None,
    streaming: bool = False,
    measurement: Measurement = Measurement(),
    extra_args: Sequence[str] = (),
) -> list[str]:
    """perf_analyzer's command line for one load level over gRPC."""
    flag = "--concurrency-range" if mode == "concurrency" else "--request-rate-range"
    cmd = [str(perf_analyzer_binary()), "-m", model, "-u", url, "-i", "grpc", flag, f"{level:g}"]
    if input_data is not None:
        cmd += ["--input-data", str(input_data)]
    cmd += ["-f", str(report), "--verbose-csv"]
    if measurement.request_count:
        cmd += ["--request-count", str(measurement.request_count)]
    else:
        if measurement.interval_ms:
            cmd += ["--measurement-interval", str(measurement.interval_ms)]
        else:
            cmd += [
                "--measurement-mode", "count_windows",
                "--measurement-request-count", str(measurement.window_requests),
            ]  # fmt: skip
        cmd += ["--stability-percentage", f"{measurement.stability:g}", "--max-trials", str(measurement.max_trials)]
    if mode == "concurrency" and level > 4:
        cmd += ["--max-threads", str(int(level))]
    cmd += list(extra_args)
    if streaming:
        cmd.append("--streaming")
    return cmd


def append_csv(path: Path, text: str) -> None:
    """Append a CSV report to `path`, keeping only the first header line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        text = text.split("\n", 1)[1] if "\n" in text else ""
    with open(path, "a") as out:
        out.write(text)


def run_level(
    model: str,
    url: str,
    mode: str,
    level: float,
    *,
    timeout_s: float = 600,
    csv_out: Path | None = None,
    **command: Any,
) -> PerfPoint:
    """Run perf_analyzer at one level; a failure or a timeout becomes a point with that status.

    `command` are perf_command's keyword arguments (input_data, streaming, measurement, extra_args)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.csv"
        cmd = perf_command(model, url, mode, level, report, **command)
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=perf_analyzer_env(), timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            return PerfPoint(model, mode, level, status=f"failed: no result within {timeout_s:.0f}s")
        seconds = time.monotonic() - started
        if proc.returncode != 0 or not report.exists():
            lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
            reason = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else "")
            return PerfPoint(model, mode, level, status=f"failed: {reason[:140]}", seconds=seconds)
        text = report.read_text()
    if csv_out is not None:
        append_csv(csv_out, text)
    points = parse_csv(text, model, mode)
    if not points:
        return PerfPoint(model, mode, level, status="failed: empty perf_analyzer report", seconds=seconds)
    point = points[-1]
    point.seconds = seconds
    return point


def run_perf_analyzer(
    model: str,
    url: str,
    concurrency: Sequence[int],
    *,
    measurement_ms: int = 3000,
    **options: Any,
) -> list[PerfPoint]:
    """`run_level` at each concurrency with time windows of `measurement_ms`; PerfAnalyzerError when a level fails.

    `options` are run_level's (input_data, streaming, extra_args, timeout_s, csv_out)."""
    points = []
    for level in concurrency:
        point = run_level(
            model, url, "concurrency", level, measurement=Measurement(interval_ms=measurement_ms), **options
        )
        if not point.ok:
            raise PerfAnalyzerError(f"perf_analyzer on {model} at concurrency {level}: {point.status}")
        points.append(point)
    return points


class CpuMeter:
    """CPU milliseconds the server's processes spend per successful request of one model, over a measured span.

    `with meter.span(model, label): <drive load>` reads each process's CPU time (psutil) and the model's success count
    (Triton statistics) before and after; `meter.per_request[label]` maps a process group (`tritonserver`, or a
    stub's model name, its instances summed) to CPU ms per request. Needs the server on this host (its pid).
    """

    def __init__(self, url: str, server_pid: int) -> None:
        import tritonclient.grpc as grpcclient

        self.client = grpcclient.InferenceServerClient(url)
        self.server_pid = server_pid
        self.per_request: dict[str, dict[str, float]] = {}

    def _success_count(self, model: str) -> int:
        stats = self.client.get_inference_statistics(model_name=model, as_json=True)
        return sum(int(m["inference_stats"]["success"].get("count", 0)) for m in stats.get("model_stats", []))

    def _cpu_by_group(self) -> dict[str, float]:
        from router_launcher.procfs import cpu_seconds
        from router_launcher.watchdog import live_stubs

        groups = {stub.pid: stub.model for stub in live_stubs(self.server_pid)}  # a model's instances summed
        return cpu_seconds({self.server_pid: "tritonserver", **groups})

    @contextlib.contextmanager
    def span(self, model: str, label: str | None = None) -> Iterator[None]:
        """Measure `model`'s requests while the body runs; the row is stored under `label` (default: model)."""
        count, cpu = self._success_count(model), self._cpu_by_group()
        yield
        requests = self._success_count(model) - count
        after = self._cpu_by_group()
        if requests > 0:
            self.per_request[label or model] = {
                group: (after[group] - cpu.get(group, 0.0)) * 1000 / requests for group in after
            }

    def table(self) -> str:
        """One row per model, one column per process group, plus the total."""
        groups = sorted({g for row in self.per_request.values() for g in row if row[g] >= 0.05})
        lines = [f"{'CPU ms per request':<24} " + " ".join(f"{g:>19}" for g in groups) + f" {'total':>8}"]
        for model, row in self.per_request.items():
            cells = " ".join(f"{row.get(g, 0.0):>19.2f}" for g in groups)
            lines.append(f"{model:<24} {cells} {sum(row.values()):>8.2f}")
        return "\n".join(lines)
