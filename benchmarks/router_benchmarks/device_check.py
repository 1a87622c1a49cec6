"""GPU device check: run the classifier's ONNX model and a tier's ONNX model on onnxruntime's CUDA provider and
print latencies against the CPU provider. Runs in well under 8 minutes on one GPU.

    python -m router_benchmarks.device_check                      # models found in model_repository/
    python -m router_benchmarks.device_check --wheels .whl        # unpack carried wheels (onnxruntime-gpu, ...) first
    python -m router_benchmarks.device_check --model path/to/model.onnx --model other.onnx --iters 50

Without built models it measures a synthetic MLP so the provider itself is still checked. Without CUDA it says
so and exits with status 3 (no traceback); a model that fails on CUDA is reported and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import re
import statistics
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EXIT_NO_MODELS, EXIT_NO_CUDA = 2, 3
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def unpack_wheels(wheel_dir: Path) -> Path | None:
    """Unpack every wheel in `wheel_dir` into a temp dir put first on sys.path (a wheel is a site-packages tree)."""
    wheels = sorted(wheel_dir.glob("*.whl"))
    if not wheels:
        return None
    target = Path(tempfile.mkdtemp(prefix="device_check_wheels_"))
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
    sys.path.insert(0, str(target))
    for name in [m for m in sys.modules if m == "onnxruntime" or m.startswith("onnxruntime.")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    return target


def import_onnxruntime():
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)  # loads CUDA/cuDNN from nvidia-* wheels when present
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # noqa: BLE001 - only a hint; session creation reports the real failure
            print(f"note: onnxruntime.preload_dlls() failed: {exc}")
    return ort


def find_models(repository: Path) -> list[tuple[str, Path]]:
    """(label, onnx path) for the classifier (onnxruntime-backend models) and the first tier with an ONNX file."""
    found: list[tuple[str, Path]] = []
    for config in sorted(repository.glob("*/config.pbtxt")):
        text = config.read_text(encoding="utf-8")
        model = config.parent
        if re.search(r'backend:\s*"onnxruntime"|platform:\s*"onnxruntime_onnx"', text):
            onnx_files = sorted(model.glob("[0-9]*/model.onnx"))
            if onnx_files:
                found.append((model.name, onnx_files[-1]))
    order = {"tier_small": 0, "tier_medium": 1, "tier_large": 2}  # the tier most requests hit first
    tiers = sorted(repository.glob("tier_*/[0-9]*/**/*.onnx"), key=lambda p: (order.get(p.parts[-4], 9), str(p)))
    if tiers:
        found.append((tiers[0].relative_to(repository).parts[0], tiers[0]))
    return found


def synthetic_mlp(path: Path, width: int = 1024, layers: int = 6) -> Path:
    """A dense MLP (batch x width), big enough that CUDA beats CPU; used when no model is built."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [
            helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
            helper.make_node("Relu", [f"m{i}"], [f"h{i}"]),
        ]
        prev = f"h{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _dim(value, batch: int, seq: int, past: int) -> int:
    """A concrete size for an input dimension (ints kept; symbolic names resolved by what they say)."""
    if isinstance(value, int) and value > 0:
        return value
    name = str(value or "")
    symbols = {"past_sequence_length": past, "sequence_length": seq, "batch_size": batch, "batch": batch}
    expr = name
    for symbol, size in symbols.items():  # longest names first (dict order above)
        expr = expr.replace(symbol, str(size))
    if re.fullmatch(r"[\d\s+]+", expr):
        return sum(int(part) for part in expr.split("+"))
    return batch if "batch" in name.lower() else seq


def dummy_inputs(session, batch: int, seq: int, past: int) -> dict[str, np.ndarray]:
    feeds = {}
    for spec in session.get_inputs():
        shape = [_dim(d, batch, seq, past) for d in spec.shape]
        dtype = ORT_TYPES.get(spec.type)
        if dtype is None:
            raise ValueError(f"input {spec.name}: unsupported type {spec.type}")
        if "mask" in spec.name:
            feeds[spec.name] = np.ones(shape, dtype=dtype)
        elif np.issubdtype(dtype, np.integer):
            feeds[spec.name] = np.zeros(shape, dtype=dtype) if "type" in spec.name else np.ones(shape, dtype=dtype)
        else:
            feeds[spec.name] = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    return feeds


@dataclass
class Timing:
    provider: str
    p50_ms: float
    mean_ms: float
    runs: int


def time_runs(run, iters: int, deadline: float) -> Timing | None:
    run()  # warm-up (CUDA kernels, arena)
    run()
    samples = []
    for _ in range(iters):
        if time.monotonic() > deadline:
            break
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1000)
    if not samples:
        return None
    return Timing("", float(np.percentile(samples, 50)), statistics.fmean(samples), len(samples))


def measure(ort, path: Path, args, deadline: float, cuda: bool = True) -> list[Timing]:
    results = []
    cpu = ort.InferenceSession(str(path), providers=[CPU])
    feeds = dummy_inputs(cpu, args.batch, args.seq, args.past)
    timing = time_runs(lambda: cpu.run(None, feeds), args.iters, deadline)
    if timing:
        timing.provider = "cpu"
        results.append(timing)
    if not cuda:
        return results
    gpu = ort.InferenceSession(str(path), providers=[CUDA, CPU])
    if gpu.get_providers()[0] != CUDA:
        raise RuntimeError(f"CUDA provider not used (session providers: {gpu.get_providers()})")
    timing = time_runs(lambda: gpu.run(None, feeds), args.iters, deadline)
    if timing:
        timing.provider = "cuda"
        results.append(timing)
    binding = gpu.io_binding()
    for name, value in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
    for out in gpu.get_outputs():
        binding.bind_output(out.name, "cuda")
    timing = time_runs(lambda: gpu.run_with_iobinding(binding), args.iters, deadline)
    if timing:
        timing.provider = "cuda+iobinding"
        results.append(timing)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="router-device-check", description=__doc__.split("\n")[0])
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--model", type=Path, action="append", default=[], help="an ONNX file (repeatable)")
    parser.add_argument("--wheels", type=Path, help="directory of wheels to unpack and import first")
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--past", type=int, default=0, help="past_sequence_length for decoders with a KV cache")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop measuring after this many seconds")
    parser.add_argument("--cpu-only", action="store_true", help="dry run without a GPU: CPU timings only")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.budget_s

    if args.wheels:
        unpacked = unpack_wheels(args.wheels)
        print(f"wheels: {'unpacked to ' + str(unpacked) if unpacked else 'none found in ' + str(args.wheels)}")
    ort = import_onnxruntime()
    print(f"onnxruntime {ort.__version__} from {Path(ort.__file__).parent}; providers {ort.get_available_providers()}")
    has_cuda = CUDA in ort.get_available_providers()
    if not has_cuda and not args.cpu_only:
        print(
            "NO CUDA: this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu, or pass --wheels with "
            "an onnxruntime-gpu wheel for this Python, plus nvidia-cudnn/cublas wheels if the host lacks them)."
        )
        return EXIT_NO_CUDA

    models = [(p.stem, p) for p in args.model] or find_models(args.model_repository)
    if not models:
        tmp = Path(tempfile.mkdtemp(prefix="device_check_"))
        models = [("synthetic_mlp", synthetic_mlp(tmp / "mlp.onnx"))]
        print(f"no built models under {args.model_repository} (run router-build-models); using a synthetic MLP")
    missing = [str(p) for _, p in models if not p.is_file()]
    if missing:
        print(f"model file(s) not found: {missing}")
        return EXIT_NO_MODELS

    print(f"batch={args.batch} seq={args.seq} past={args.past} iters={args.iters}")
    print(f"{'model':<28} {'provider':<16} {'p50 ms':>9} {'mean ms':>9} {'runs':>5} {'vs cpu':>7}")
    cuda_ok = False
    for label, path in models:
        try:
            timings = measure(ort, path, args, deadline, cuda=has_cuda and not args.cpu_only)
        except Exception as exc:  # noqa: BLE001 - report and go on with the next model
            print(f"{label:<28} FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        cpu_p50 = next((t.p50_ms for t in timings if t.provider == "cpu"), None)
        for t in timings:
            speedup = f"{cpu_p50 / t.p50_ms:6.1f}x" if cpu_p50 and t.p50_ms > 0 else "      -"
            print(f"{label:<28} {t.provider:<16} {t.p50_ms:9.3f} {t.mean_ms:9.3f} {t.runs:5d} {speedup}")
            cuda_ok |= t.provider.startswith("cuda")
    if time.monotonic() > deadline:
        print(f"budget of {args.budget_s:.0f}s reached: later measurements were cut short")
    return 0 if cuda_ok or args.cpu_only else EXIT_NO_CUDA


if __name__ == "__main__":
    raise SystemExit(main())
