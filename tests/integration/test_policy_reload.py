"""router-calibrate --policy-out writes a new router version; loading it under traffic drops nothing, and an
invalid policy is refused while the old version keeps serving."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from router_launcher.serve import LocalTritonServer, ServerOptions, free_ports
from tritonclient.utils import InferenceServerException

PROJECT = Path(__file__).resolve().parents[2]
MODEL = "router_reload"
TIERS = [("tier_small", 0.0002), ("tier_medium", 0.0012), ("tier_large", 0.015)]


def write_outcome_log(path: Path, prompts: int = 120, seed: int = 0) -> Path:
    """A log in the documented format: larger tiers are right more often, and confident answers are right."""
    rng = random.Random(seed)
    with open(path, "w") as out:
        for pid in range(prompts):
            for pos, (tier, price) in enumerate(TIERS):
                correct = rng.random() < (0.55, 0.75, 0.9)[pos]
                confidence = -rng.uniform(0.0, 0.5) if correct else -rng.uniform(0.4, 3.0)
                row = {
                    "prompt_id": f"p{pid}",
                    "tier": tier,
                    "tier_pos": pos,
                    "correct": correct,
                    "confidence": round(confidence, 4),
                    "cost_usd": price * 0.1,
                    "tokens_in": 50,
                    "tokens_out": 50,
                }
                out.write(json.dumps(row) + "\n")  # fmt: skip
    return path


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
    grpc_port, http_port, metrics_port = free_ports(3)
    server = LocalTritonServer(
        ServerOptions(
            model_repository=PROJECT / "model_repository", grpc_port=grpc_port, http_port=http_port,
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
