"""Run Triton's perf_analyzer (shipped in the tritonclient wheel) and read its CSV report."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer is missing or failed; the message carries the end of its output."""


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
class PerfPoint:
    """One line of perf_analyzer's CSV: a concurrency (or request rate) and what was measured there."""

    model: str
    concurrency: float
    throughput: float  # inferences per second
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float

    def row(self) -> str:
        return (
            f"{self.model:<24} {self.concurrency:>6g} {self.throughput:>10.1f} {self.p50_ms:>9.2f} "
            f"{self.p90_ms:>9.2f} {self.p99_ms:>9.2f}"
        )


TABLE_HEADER = f"{'model':<24} {'conc':>6} {'infer/s':>10} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9}"


def parse_csv(path: Path, model: str) -> list[PerfPoint]:
    points = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            level = row.get("Concurrency") or row.get("Request Rate") or "0"
            points.append(
                PerfPoint(
                    model=model,
                    concurrency=float(level),
                    throughput=float(row["Inferences/Second"]),
                    p50_ms=float(row["p50 latency"]) / 1000,
                    p90_ms=float(row["p90 latency"]) / 1000,
                    p95_ms=float(row["p95 latency"]) / 1000,
                    p99_ms=float(row["p99 latency"]) / 1000,
                    avg_ms=float(row.get("Avg latency", 0) or 0) / 1000,
                )
            )
    return points


def run_perf_analyzer(
    model: str,
    url: str,
    *,
    concurrency: list[int] | None = None,
    request_rate: list[float] | None = None,
    input_data: Path | None = None,
    shapes: list[str] | None = None,
    measurement_ms: int = 3000,
    streaming: bool = False,
    extra_args: list[str] | None = None,
    timeout_s: float = 600,
    csv_out: Path | None = None,
) -> list[PerfPoint]:
    """Run perf_analyzer over gRPC at each concurrency (or request rate) and return the measured points."""
    points: list[PerfPoint] = []
    levels: list[tuple[str, float]] = [("--concurrency-range", c) for c in (concurrency or [])]
    levels += [("--request-rate-range", r) for r in (request_rate or [])]
    if not levels:
        levels = [("--concurrency-range", 1)]
    for flag, level in levels:
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "report.csv"
            cmd = [
                str(perf_analyzer_binary()),
                "-m", model,
                "-u", url,
                "-i", "grpc",
                flag, f"{level:g}",
                "--measurement-interval", str(measurement_ms),
                "--stability-percentage", "50",
                "--max-trials", "6",
                "-f", str(report),
            ]  # fmt: skip
            if input_data is not None:
                cmd += ["--input-data", str(input_data)]
            for shape in shapes or []:
                cmd += ["--shape", shape]
            if streaming:
                cmd.append("--streaming")
            cmd += extra_args or []
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=perf_analyzer_env(), timeout=timeout_s, check=False
            )
            if proc.returncode != 0 or not report.exists():
                output = (proc.stdout + proc.stderr)[-3000:]
                raise PerfAnalyzerError(f"perf_analyzer failed on {model} ({flag} {level:g}):\n{output}")
            points += parse_csv(report, model)
            if csv_out is not None:
                csv_out.parent.mkdir(parents=True, exist_ok=True)
                with open(csv_out, "a") as out:
                    out.write(report.read_text())
    return points


class CpuMeter:
    """CPU milliseconds the server's processes spend per successful request of one model, over a measured span.

    `with meter.span(model, label): <drive load>` reads each process's CPU time (/proc) and the model's success count
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
