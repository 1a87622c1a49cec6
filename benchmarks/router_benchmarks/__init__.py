"""Benchmarks, soak, perf_analyzer wrapper, input generation and the GPU device check: offline tools."""
