"""Test helpers shared by the test modules (imported as `from helpers import ...`; conftest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import json
import math
import queue
import random
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from router_benchmarks.smoke_model import (  # noqa: F401
    IN_FEATURES,
    OUT_FEATURES,
    SMOKE_MODEL,
    dense_onnx_model,
    write_smoke_repository,
)
from router_launcher.serve import ServerOptions, free_ports

# -- policies ---------------------------------------------------------------------------------------------------------
TIER_PRICES = {
    "tier_small": {"cost_per_1k_input": 0.0001, "cost_per_1k_output": 0.0002},
    "tier_medium": {"cost_per_1k_input": 0.0006, "cost_per_1k_output": 0.0012},
    "tier_large": {"cost_per_1k_input": 0.005, "cost_per_1k_output": 0.015},
}


def policy_tier(name: str, deadline_s: float, max_tokens: int = 64, **extra: Any) -> dict[str, Any]:
    """One `tiers:` entry of a policy, priced as in TIER_PRICES; `extra` keys follow the required ones."""
    return {"name": name, **TIER_PRICES[name], "max_tokens": max_tokens, "deadline_s": deadline_s, **extra}


# -- outcome logs -----------------------------------------------------------------------------------------------------
OUTCOME_LOG_TIERS = [("tier_small", 0.0002), ("tier_medium", 0.0012), ("tier_large", 0.015)]  # (tier, USD per call x10)


def write_outcome_log(path: Path, prompts: int = 120, seed: int = 0, shift: float = 0.0) -> Path:
    """A synthetic outcome log in the documented format: larger tiers are right more often, confident answers are
    right; `shift` makes the two cheaper tiers wrong (and so unconfident) more often, as harder traffic would."""
    rng = random.Random(seed)
    with open(path, "w") as out:
        for pid in range(prompts):
            for pos, (tier, price) in enumerate(OUTCOME_LOG_TIERS):
                correct = rng.random() < (0.55 - shift, 0.75 - shift, 0.9)[pos]
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
                out.write(json.dumps(row) + "\n")
    return path


# -- local Triton servers ---------------------------------------------------------------------------------------------
def server_options(model_repository: Path, work: Path, **options: Any) -> ServerOptions:
    """Options for a LocalTritonServer on free ports, logging to work/triton.log, explicit model control with every
    model loaded at start (so tests may load and unload models); `options` adds to or overrides these."""
    grpc_port, http_port, metrics_port = free_ports(3)
    settings: dict[str, Any] = {
        "model_repository": model_repository,
        "grpc_port": grpc_port,
        "http_port": http_port,
        "metrics_port": metrics_port,
        "log_file": work / "triton.log",
        "model_control_mode": "explicit",
        "load_models": ["*"],
    }
    return ServerOptions(**{**settings, **options})


@contextlib.contextmanager
def openai_front(grpc_url: str, **app_options: Any) -> Iterator[str]:
    """The project's OpenAI-compatible front (uvicorn, a free port) in a thread of this process; yields its /v1 URL.

    `app_options` go to router_frontend.openai_front.create_app (timeout_s, api_key)."""
    import uvicorn
    from router_frontend.openai_front import create_app

    (port,) = free_ports(1)
    config = uvicorn.Config(create_app(grpc_url, **app_options), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the OpenAI front did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def metric_value(url: str, name: str, **labels: str) -> float:
    """Sum of the samples named `name` whose labels include `labels` (Prometheus text at `url`; prometheus_client
    names a counter's samples `<name>_total`)."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return math.fsum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


# -- gRPC requests ----------------------------------------------------------------------------------------------------
STREAM_OUTPUTS = ("text_output", "tier", "route", "escalated", "cost", "output_tokens", "input_tokens")


def tensor(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    item = grpcclient.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array)
    return item


def text_array(text: str | bytes, shape: tuple[int, ...] = (1,)) -> np.ndarray:
    raw = text if isinstance(text, bytes) else text.encode("utf-8")
    return np.array([raw], dtype=np.object_).reshape(shape)


def router_inputs(text: str | bytes, max_tokens: int | None = 4) -> list[grpcclient.InferInput]:
    """The router's inputs: `text_input` and, unless None, `max_tokens` (shape [1] each)."""
    inputs = [tensor("text_input", text_array(text), "BYTES")]
    if max_tokens is not None:
        inputs.append(tensor("max_tokens", np.array([max_tokens], dtype=np.int32), "INT32"))
    return inputs


def stream(url: str, model: str, inputs: list, parameters: dict | None = None, timeout_s: float = 60) -> list[dict]:
    """Every response of one decoupled request up to the FINAL flag, in order; an error is raised (with its status).

    Each response is {"final": bool} plus the first value of each of STREAM_OUTPUTS that it carries."""
    client = grpcclient.InferenceServerClient(url)
    responses: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result=None, error=None: responses.put((result, error)))
    finished = False
    try:
        client.async_stream_infer(model, inputs, parameters=parameters, enable_empty_final_response=True)
        events = []
        while True:
            result, error = responses.get(timeout=timeout_s)
            if error is not None:
                finished = True
                raise error
            final = result.get_response().parameters["triton_final_response"].bool_param
            event: dict[str, Any] = {"final": final}
            for name in STREAM_OUTPUTS:
                array = result.as_numpy(name)
                if array is not None and array.size:
                    value = array.reshape(-1)[0]
                    event[name] = value.decode() if isinstance(value, bytes) else value.item()
            events.append(event)
            if final:
                finished = True
                return events
    finally:
        # cancel only unfinished requests: cancelling a finished one was once seen to pin its model in Triton 2.51
        client.stop_stream(cancel_requests=not finished)
        client.close()


def router_result(result: Any) -> dict[str, Any]:
    """A unary router response as a dict: text, tier, escalated, cost and the parsed route trace."""
    return {
        "text": result.as_numpy("text_output")[0].decode(),
        "tier": result.as_numpy("tier")[0].decode(),
        "escalated": bool(result.as_numpy("escalated")[0]),
        "cost": float(result.as_numpy("cost")[0]),
        "route": json.loads(result.as_numpy("route")[0]),
    }


def export_tiny_tier(work: Path) -> Path:
    """tier_small's tiny stand-in built into work/hf and exported into work/repo; returns its model folder."""
    from router_export.tiers import ExportOptions, export_tier
    from router_export.tiny_tiers import TINY_TIERS, build_hf_model

    build_hf_model(TINY_TIERS[0], work / "hf")
    (work / "repo").mkdir()
    return export_tier(work / "hf", ExportOptions(tier="tier_small", model_repository=work / "repo"))
