"""router-calibrate --policy-out writes a new router version; loading it under traffic drops nothing, and an
invalid policy is refused while the old version keeps serving."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from helpers import stream, write_outcome_log
from router_export.stand_in import overlay_repository
from router_launcher.serve import LocalTritonServer, ServerOptions, free_ports
from tritonclient.utils import InferenceServerException

PROJECT = Path(__file__).resolve().parents[2]
# What the shared test server serves: the repository with tiny stand-ins for the real tiers (tests/conftest.py).
SERVED = overlay_repository(PROJECT / "model_repository")
MODEL = "router_reload"
STREAM_MODEL = "router_reload_stream"  # a copy of router_stream that follows MODEL's policy


def _route(client: grpcclient.InferenceServerClient) -> dict:
    text = grpcclient.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"Summarize: the meeting moved to Friday at noon."], dtype=np.object_))
    tokens = grpcclient.InferInput("max_tokens", [1], "INT32")
    tokens.set_data_from_numpy(np.array([4], dtype=np.int32))
    result = client.infer(MODEL, [text, tokens], client_timeout=60)
    return json.loads(result.as_numpy("route")[0])


@pytest.fixture(scope="module")
def reload_server(tmp_path_factory: pytest.TempPathFactory):
    """A server of its own: in Triton 2.51 a model whose version changed leaves the *server* not-ready for good
    (strict readiness), which must not leak into the shared server's other tests. Model readiness stays right."""
    work = tmp_path_factory.mktemp("reload")
    extra = work / "models"
    model_dir = extra / MODEL
    shutil.copytree(PROJECT / "model_repository" / "router", model_dir)
    config = (model_dir / "config.pbtxt").read_text().replace('name: "router"', f'name: "{MODEL}"')
    (model_dir / "config.pbtxt").write_text(config)
    stream_dir = extra / STREAM_MODEL
    shutil.copytree(PROJECT / "model_repository" / "router_stream", stream_dir)
    config = (stream_dir / "config.pbtxt").read_text().replace('name: "router_stream"', f'name: "{STREAM_MODEL}"')
    (stream_dir / "config.pbtxt").write_text(config.replace('string_value: "router"', f'string_value: "{MODEL}"'))
    grpc_port, http_port, metrics_port = free_ports(3)
    server = LocalTritonServer(
        ServerOptions(
            model_repository=SERVED, grpc_port=grpc_port, http_port=http_port,
            metrics_port=metrics_port, log_file=work / "triton.log", model_control_mode="explicit",
            load_models=["*"], extra_model_repositories=[extra],
        )
    )  # fmt: skip
    server.start()
    try:
        yield server, model_dir
    finally:
        server.stop()


def test_calibrated_policy_reloads_under_traffic_and_a_bad_one_is_refused(reload_server, tmp_path: Path) -> None:
    triton_server, reloadable_router = reload_server
    grpc_client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    assert _route(grpc_client)["policy_version"] == 1
    log = write_outcome_log(tmp_path / "outcomes.jsonl")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "router-calibrate"), "--calib", str(log), "--eval", str(log),
         "--target-quality", "0.9", "--policy-out", str(reloadable_router), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (reloadable_router / "2" / "policy.yaml").is_file()
    assert (reloadable_router / "2" / "model.py").is_file()

    errors: list[str] = []
    done = threading.Event()
    versions: list[int] = []

    def traffic() -> None:
        client = grpcclient.InferenceServerClient(triton_server.grpc_url)
        while not done.is_set():
            try:
                versions.append(_route(client)["policy_version"])
            except InferenceServerException as exc:
                errors.append(exc.message())
        client.close()

    threads = [threading.Thread(target=traffic) for _ in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    grpc_client.load_model(MODEL)  # version 2 replaces version 1 while requests are in flight
    time.sleep(1.5)
    done.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, f"{len(errors)} requests failed during the reload: {errors[:3]}"
    assert 1 in versions and versions[-1] == 2, "traffic should have been served by both versions"
    assert _route(grpc_client)["policy_version"] == 2

    bad = reloadable_router / "3"
    shutil.copytree(reloadable_router / "2", bad)
    text = (bad / "policy.yaml").read_text().replace("max_escalations:", "max_escalations: -1\n_was:", 1)
    (bad / "policy.yaml").write_text(text)
    with pytest.raises(InferenceServerException) as info:
        grpc_client.load_model(MODEL)
    assert "max_escalations" in info.value.message()
    assert _route(grpc_client)["policy_version"] == 2, "the old version must keep serving"
    assert grpc_client.is_model_ready(MODEL)
    shutil.rmtree(bad)


def _versions(url: str) -> tuple[int, int]:
    """(policy version of MODEL, of STREAM_MODEL), asked with describe_policy."""
    client = grpcclient.InferenceServerClient(url)
    text = grpcclient.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([b""], dtype=np.object_))
    unary = json.loads(client.infer(MODEL, [text], parameters={"describe_policy": True}).as_numpy("route")[0])
    client.close()
    events = stream(url, STREAM_MODEL, [text], {"describe_policy": True})
    return unary["policy_version"], json.loads(events[-1]["route"])["policy_version"]


def _server_ready(server: LocalTritonServer) -> bool:
    try:
        return urllib.request.urlopen(f"{server.http_url}/v2/health/ready").status == 200
    except urllib.error.HTTPError:
        return False


def _next_version(model_dir: Path, edit: Callable[[str], str] = lambda text: text) -> Path:
    """A copy of the newest version of the model as the next version, its policy `version` bumped and `edit`ed."""
    newest = max(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
    target = model_dir / str(newest + 1)
    shutil.copytree(model_dir / str(newest), target)
    policy = target / "policy.yaml"
    text = re.sub(r"(?m)^version: \d+$", f"version: {newest + 1}", policy.read_text())
    policy.write_text(edit(text))
    return target


def test_one_reload_reaches_router_stream_and_readiness_follows(reload_server) -> None:
    """Issue 16.1 and 16.5: load_model(router) alone switches router_stream's policy too; after a valid reload the
    server is ready again once the old version is unloaded. A refused version stays in Triton 2.51's model index as
    UNAVAILABLE with its error, which its strict server readiness counts for good: the model itself stays ready and
    serving, which is what the health checks must ask (README, Reliability)."""
    server, model_dir = reload_server
    client = grpcclient.InferenceServerClient(server.grpc_url)
    before, stream_before = _versions(server.grpc_url)
    assert before == stream_before
    target = _next_version(model_dir)
    client.load_model(MODEL)
    new = int(target.name)
    assert _versions(server.grpc_url) == (new, new), "one load_model(router) must reach router_stream"
    deadline = time.monotonic() + 30
    while not _server_ready(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    refused_before = any(v.get("reason", "").startswith("Internal: PolicyError") for v in _index(client))
    assert _server_ready(server) or refused_before, "the server must be ready again after a valid reload"

    bad = _next_version(model_dir, lambda text: text.replace("max_escalations:", "max_escalations: -1\n_was:", 1))
    with pytest.raises(InferenceServerException) as info:
        client.load_model(MODEL)
    assert "max_escalations: must be >= 0" in info.value.message().splitlines()[0]
    assert _versions(server.grpc_url) == (new, new), "the refused version must not reach either model"
    assert client.is_model_ready(MODEL) and client.is_model_ready(STREAM_MODEL)
    assert not _server_ready(server), "Triton 2.51 keeps a refused version in its strict server readiness"
    shutil.rmtree(bad)
    client.close()


def _index(client: grpcclient.InferenceServerClient) -> list[dict]:
    return [m for m in client.get_model_repository_index(as_json=True).get("models", []) if m["name"] == MODEL]
