"""The real local tritonserver: the onnxruntime stand-in with dynamic batching, router-serve's lifecycle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import psutil
import pytest
import tritonclient.grpc as grpcclient
from helpers import IN_FEATURES, SMOKE_MODEL, dense_onnx_model
from router_launcher import procfs
from router_launcher.serve import LocalTritonServer, free_ports, port_is_free
from tritonclient.utils import InferenceServerException

ROUTER_SERVE = Path(sys.executable).parent / "router-serve"


def _infer(url: str, batch: np.ndarray) -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    try:
        tensor = grpcclient.InferInput("INPUT0", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        return client.infer(SMOKE_MODEL, [tensor]).as_numpy("OUTPUT0")
    finally:
        client.close()


def _stats(client: grpcclient.InferenceServerClient) -> tuple[int, int]:
    stats = client.get_inference_statistics(SMOKE_MODEL, as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def test_concurrent_requests_are_batched_and_match_onnxruntime(
    triton_server: LocalTritonServer, grpc_client: grpcclient.InferenceServerClient
) -> None:
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((1, IN_FEATURES)).astype(np.float32) for _ in range(96)]
    session = ort.InferenceSession(dense_onnx_model().SerializeToString(), providers=["CPUExecutionProvider"])
    expected = [session.run(None, {"INPUT0": x})[0] for x in inputs]
    inferences_before, executions_before = _stats(grpc_client)

    with ThreadPoolExecutor(max_workers=16) as pool:
        outputs = list(pool.map(lambda x: _infer(triton_server.grpc_url, x), inputs))

    for got, want in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    inferences, executions = _stats(grpc_client)
    inferences -= inferences_before
    executions -= executions_before
    assert inferences == len(inputs)
    assert executions < inferences, f"no batching: {executions} executions for {inferences} inferences"


def test_multi_row_request_is_split_back(triton_server: LocalTritonServer) -> None:
    batch = np.random.default_rng(2).standard_normal((5, IN_FEATURES)).astype(np.float32)
    session = ort.InferenceSession(dense_onnx_model().SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        _infer(triton_server.grpc_url, batch), session.run(None, {"INPUT0": batch})[0], rtol=1e-5
    )


@pytest.mark.parametrize(
    ("shape", "dtype", "datatype", "message"),
    [
        ((1, IN_FEATURES + 1), np.float32, "FP32", "INPUT0"),
        ((1, IN_FEATURES), np.int32, "INT32", "INPUT0"),
    ],
)
def test_wrong_shape_or_type_is_invalid_arg(
    grpc_client: grpcclient.InferenceServerClient, shape: tuple, dtype: type, datatype: str, message: str
) -> None:
    tensor = grpcclient.InferInput("INPUT0", list(shape), datatype)
    tensor.set_data_from_numpy(np.zeros(shape, dtype=dtype))
    with pytest.raises(InferenceServerException) as info:
        grpc_client.infer(SMOKE_MODEL, [tensor])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in info.value.message()
    assert grpc_client.is_server_live() and grpc_client.is_model_ready(SMOKE_MODEL)


def test_missing_input_is_invalid_arg(grpc_client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        grpc_client.infer(SMOKE_MODEL, [])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "INPUT0" in info.value.message()


def _wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_router_serve_refuses_a_busy_port(triton_server: LocalTritonServer, tmp_path: Path) -> None:
    busy = triton_server.options.grpc_port
    http_port, metrics_port = free_ports(2)
    proc = subprocess.run(
        [str(ROUTER_SERVE), "--model-repository", str(tmp_path), "--grpc-port", str(busy),
         "--http-port", str(http_port), "--metrics-port", str(metrics_port), "--quiet"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"gRPC port {busy} on 127.0.0.1 is already in use" in proc.stderr
    assert "--grpc-port" in proc.stderr


def _group_alive(pgid: int) -> list[int]:
    return procfs.group_members(pgid)


def _child_pids(pid: int) -> list[int]:
    return [child.pid for child in psutil.Process(pid).children()]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_router_serve_stops_cleanly(tmp_path: Path, stop_signal: signal.Signals) -> None:
    from helpers import write_smoke_repository

    repo = write_smoke_repository(tmp_path / "repo")
    grpc_port, http_port, metrics_port = free_ports(3)
    log = tmp_path / "triton.log"
    proc = subprocess.Popen(
        [str(ROUTER_SERVE), "--model-repository", str(repo), "--grpc-port", str(grpc_port),
         "--http-port", str(http_port), "--metrics-port", str(metrics_port), "--log-file", str(log), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert _wait_for(lambda: not port_is_free("127.0.0.1", grpc_port), 90), "server never listened"
        line = proc.stdout.readline()
        assert "router-serve: ready" in line, line
        server_pids = _child_pids(proc.pid)
        assert server_pids, "no tritonserver child"
        server_pid = server_pids[0]
        assert len(_group_alive(server_pid)) >= 2, "expected tritonserver and a Python stub"
        shm_before = [p.name for p in Path("/dev/shm").iterdir() if p.name.startswith("llmrouter_")]
        assert shm_before, "the Python backend's shm regions should carry the router-serve prefix"
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=60) == 0
        assert _group_alive(server_pid) == [], "tritonserver or a stub survived"
        prefix = f"llmrouter_{proc.pid}_"
        assert not [p for p in Path("/dev/shm").iterdir() if p.name.startswith(prefix)], "shm regions left"
        assert port_is_free("127.0.0.1", grpc_port)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)


def test_stop_escalates_to_sigkill_when_triton_ignores_sigterm(tmp_path: Path) -> None:
    from helpers import write_smoke_repository
    from router_launcher.serve import ServerOptions

    repo = write_smoke_repository(tmp_path / "repo")
    grpc_port, http_port, metrics_port = free_ports(3)
    server = LocalTritonServer(
        ServerOptions(model_repository=repo, grpc_port=grpc_port, http_port=http_port,
                      metrics_port=metrics_port, stop_grace_s=2)
    )  # fmt: skip
    server.start()
    pgid = server.process.pid
    os.kill(pgid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM: the stuck-server case
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 15
    assert _group_alive(pgid) == []
    assert not list(Path("/dev/shm").glob(f"{server.shm_prefix}*"))


def test_router_serve_runs_an_installed_triton_with_its_own_backends(tmp_path: Path) -> None:
    """--triton-home (the GPU image's /opt/tritonserver): its bin/tritonserver and backends/ are used as they are,
    extra tritonserver flags pass through, and the shm sizes are still set. The "installed Triton" here is a
    home laid out like NGC's, built from the wheel's server and a prepared backend directory."""
    from helpers import write_smoke_repository
    from router_launcher.serve import ServerOptions, TritonInstall, assemble_backend_dir

    wheel = TritonInstall.find()
    home = tmp_path / "tritonserver"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "tritonserver").symlink_to(wheel.binary)
    (home / "lib").symlink_to(wheel.libs, target_is_directory=True)
    assemble_backend_dir(wheel, home / "backends")
    repo = write_smoke_repository(tmp_path / "repo")
    grpc_port, http_port, metrics_port = free_ports(3)
    options = ServerOptions(
        model_repository=repo, grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port,
        log_file=tmp_path / "triton.log", triton_home=home, extra_args=["--strict-readiness=true"],
    )  # fmt: skip
    with LocalTritonServer(options) as server:
        argv = procfs.cmdline(server.process.pid)
        assert argv[0] == str(home / "bin" / "tritonserver")
        assert f"--backend-directory={home / 'backends'}" in argv
        assert "--strict-readiness=true" in argv
        assert any(a.startswith("--backend-config=python,shm-default-byte-size=") for a in argv)
        x = np.ones((1, IN_FEATURES), dtype=np.float32)
        assert _infer(server.grpc_url, x).shape[0] == 1
    assert (home / "backends" / "onnxruntime" / "model.py").exists(), "the home's backends are used, not copied"


def test_triton_home_without_a_server_is_a_clear_error(tmp_path: Path) -> None:
    from router_launcher.serve import ServeError, ServerOptions

    with pytest.raises(ServeError, match="tritonserver binary not found at .*--triton-home"):
        LocalTritonServer(ServerOptions(triton_home=tmp_path))
