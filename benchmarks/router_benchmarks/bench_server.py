"""Benchmark the local Triton server itself: start-to-ready time and perf_analyzer on the smoke ONNX model.

.venv/bin/python -m router_benchmarks.bench_server
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from router_launcher.serve import LocalTritonServer, ServerOptions

from router_benchmarks.perf import points_table, run_perf_analyzer
from router_benchmarks.smoke_model import SMOKE_MODEL, write_smoke_repository


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--measurement-ms", type=int, default=4000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        repo = write_smoke_repository(Path(tmp) / "repo")
        with LocalTritonServer(ServerOptions.on_free_ports(repo)) as server:
            print(f"server start-to-ready: {server.startup_seconds:.2f} s")
            points = run_perf_analyzer(
                SMOKE_MODEL, server.grpc_url, concurrency=args.concurrency, measurement_ms=args.measurement_ms
            )
    print(points_table(points))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
