"""Remote tiers (policy `remote:`), against real servers: a second local Triton server and the OpenAI-compatible front.

Layout:
- server A = the session's fixture server: the project's models plus routers this module installs at run time
  (copies of tests/models/router_remote with a policy naming the remote tier at server B / a silent port).
- server B = a second LocalTritonServer started here (free ports): tier_small and tier_medium (symlinks into
  model_repository/) and `router_remote_openai`, whose policy names OpenAI-kind tiers: the project's OpenAI front
  (uvicorn in this process, pointed at server A, requiring an API key) and an endpoint that echoes the key back in
  its error. B is started with the key in its environment (the router reads it from there at call time).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import math
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import tritonclient.grpc as grpcclient
import yaml
from helpers import openai_front, server_options
from llm_router.core.confidence import compute_confidence
from llm_router.core.cost import call_cost
from llm_router.core.policy import INTENTS, parse_policy
from router_client.client import RouteOptions, RouterClient, RouterResult, StreamDelta
from router_export.stand_in import overlay_repository
from router_launcher.serve import LocalTritonServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# What the shared test server serves: the repository with tiny stand-ins for the real tiers (tests/conftest.py).
SERVED = overlay_repository(ROOT / "model_repository")
TEMPLATE = ROOT / "tests" / "models" / "router_remote"
REMOTE_TIERS = ("tier_small", "tier_medium")
KEY_ENV = "ROUTER_TEST_REMOTE_API_KEY"
SECRET = "sk-test-remote-0123456789abcdefSECRET"
PROMPT = "Summarize: the quarterly meeting moved to Tuesday because the main hall is being repainted."
MAX_TOKENS = 6
PRICES = {"cost_per_1k_input": 0.0001, "cost_per_1k_output": 0.0001}


def _policy(tiers: list[dict[str, Any]], holdback: int = 4) -> dict[str, Any]:
    first = tiers[0]["name"]
    policy = {
        "version": 1,
        "tiers": tiers,
        "start_tier_by_intent": dict.fromkeys(INTENTS, first),
        "max_escalations": 1,
        "default_start_tier": first,
        "holdback_tokens": holdback,
    }
    parse_policy(policy)  # a policy the router would refuse would only show up as a load failure
    return policy


def _tier(name: str, deadline_s: float, remote: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    tier = {"name": name, **PRICES, "max_tokens": 8, "deadline_s": deadline_s, **extra}
    if remote is not None:
        tier["remote"] = remote
    return tier


def _local(name: str) -> dict[str, Any]:
    return {"name": name, "cost_per_1k_input": 0.0002, "cost_per_1k_output": 0.0004, "max_tokens": 8, "deadline_s": 20}


def write_router(repository: Path, name: str, policy: dict[str, Any], streaming: bool = False) -> Path:
    """A copy of tests/models/router_remote named `name` with `policy` (decoupled `StreamingRouterModel` if asked)."""
    target = repository / name
    shutil.rmtree(target, ignore_errors=True)
    (target / "1").mkdir(parents=True)
    config = (TEMPLATE / "config.pbtxt").read_text().replace('name: "router_remote"', f'name: "{name}"')
    code = (TEMPLATE / "1" / "model.py").read_text()
    if streaming:
        config = config.replace(
            "max_batch_size: 0\n", "max_batch_size: 0\nmodel_transaction_policy { decoupled: true }\n"
        )
        code = code.replace("UnaryRouterModel", "StreamingRouterModel")
    (target / "config.pbtxt").write_text(config)
    (target / "1" / "model.py").write_text(code)
    (target / "1" / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    return target


def _tiers_built() -> bool:
    return all((SERVED / t / "1" / "model" / "model.onnx").exists() for t in REMOTE_TIERS)


# -- servers ----------------------------------------------------------------------------------------------------------


class _EchoKeyHandler(http.server.BaseHTTPRequestHandler):
    """An OpenAI-style endpoint that refuses every request and echoes the Authorization header in its error."""

    seen: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        auth = self.headers.get("Authorization", "")
        self.seen.append(auth)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"error": {"message": f"key {auth} is not allowed here", "type": "auth"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoKeyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def silent_url() -> Iterator[str]:
    """A port that accepts TCP connections and never answers (a hung server)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.fixture(scope="module")
def server_a(triton_server: LocalTritonServer, grpc_client: grpcclient.InferenceServerClient) -> LocalTritonServer:
    if not _tiers_built():
        pytest.skip("tier models are not built (make models)")
    missing = [m for m in (*REMOTE_TIERS, "router_remote") if not grpc_client.is_model_ready(m)]
    if missing:
        pytest.skip(f"models not loaded on the test server: {', '.join(missing)}")
    return triton_server


@pytest.fixture(scope="module")
def front_url(server_a: LocalTritonServer) -> Iterator[str]:
    """The project's OpenAI-compatible front, pointed at server A, requiring SECRET as its API key."""
    with openai_front(server_a.grpc_url, api_key=SECRET) as url:
        yield url


@pytest.fixture(scope="module")
def server_b(
    server_a: LocalTritonServer, front_url: str, echo_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalTritonServer]:
    """The second Triton server: the tier models, and a router whose tiers are OpenAI-kind endpoints."""
    work = tmp_path_factory.mktemp("server_b")
    repo = work / "models"
    repo.mkdir()
    for tier in REMOTE_TIERS:
        (repo / tier).symlink_to(SERVED / tier, target_is_directory=True)
    openai_tier = {"kind": "openai", "url": front_url, "model": "tier_small", "api_key_env": KEY_ENV}
    policy = _policy(
        [
            _tier("tier_echo", 5.0, {"url": echo_url, "api_key_env": KEY_ENV}, escalation_threshold=-50.0),
            _tier("tier_front", 20.0, openai_tier, escalation_threshold=-50.0),
            # the front's `router` model returns no log-probs: confidence_when_missing applies
            _tier("tier_front_router", 30.0, {**openai_tier, "model": "router", "confidence_when_missing": -0.75}),
            _tier("tier_unset_key", 5.0, {**openai_tier, "api_key_env": "ROUTER_TEST_UNSET_KEY"}),
        ]
    )
    write_router(repo, "router_remote_openai", policy)
    options = server_options(repo, work, stop_grace_s=15)
    server = LocalTritonServer(options)
    os.environ.pop("ROUTER_TEST_UNSET_KEY", None)
    os.environ[KEY_ENV] = SECRET  # inherited by server B only (server A is already running)
    try:
        server.start()
    finally:
        os.environ.pop(KEY_ENV, None)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def client_b(server_b: LocalTritonServer) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(server_b.grpc_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def install_router(server_a: LocalTritonServer, grpc_client: grpcclient.InferenceServerClient) -> Iterator[Any]:
    """Install a router variant into server A's repository and load it (explicit model control)."""
    assert server_a._run_dir is not None
    repository = server_a._run_dir / "models"
    installed: list[str] = []

    def install(name: str, policy: dict[str, Any], streaming: bool = False) -> str:
        write_router(repository, name, policy, streaming)
        installed.append(name)
        grpc_client.load_model(name)
        assert grpc_client.is_model_ready(name), f"{name} did not load"
        return name

    yield install
    for name in installed:
        with contextlib.suppress(Exception):
            grpc_client.unload_model(name)
        shutil.rmtree(repository / name, ignore_errors=True)


# -- helpers ----------------------------------------------------------------------------------------------------------


def direct_tier(url: str, tier: str, prompt: str, max_tokens: int) -> tuple[str, list[float], int, int]:
    """(text, log-probs, input_tokens, output_tokens) of one tier called directly (greedy, so reproducible)."""
    results: list[Any] = []
    done = threading.Event()

    def callback(result: Any = None, error: Any = None) -> None:
        results.append(error if error is not None else result)
        done.set()

    inputs = []
    for name, value, dtype, kind in (
        ("text_input", prompt.encode(), np.object_, "BYTES"),
        ("max_tokens", max_tokens, np.int32, "INT32"),
        ("return_log_probs", True, np.bool_, "BOOL"),
    ):
        tensor = grpcclient.InferInput(name, [1, 1], kind)
        tensor.set_data_from_numpy(np.array([[value]], dtype=dtype))
        inputs.append(tensor)
    with grpcclient.InferenceServerClient(url) as client:
        client.start_stream(callback=callback)
        client.async_stream_infer(tier, inputs)
        assert done.wait(60), f"{tier} did not answer"
        client.stop_stream()
    result = results[0]
    assert not isinstance(result, Exception), result
    text = result.as_numpy("text_output").reshape(-1)[0].decode()
    logprobs = [float(x) for x in result.as_numpy("output_log_probs").reshape(-1)]
    return text, logprobs, int(result.as_numpy("input_tokens")[0][0]), int(result.as_numpy("output_tokens")[0][0])


def route(url: str, model: str, **options: Any) -> RouterResult:
    with RouterClient(url, timeout_s=120) as client:
        return client.route(
            PROMPT, max_tokens=MAX_TOKENS, options=RouteOptions(return_trace=True, **options), model=model
        )


def executions(client: grpcclient.InferenceServerClient, model: str) -> int:
    """Successful requests of `model` (a decoupled model's statistics are recorded when its request is released)."""
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"]
    return sum(int(s["inference_stats"].get("success", {}).get("count", 0)) for s in stats)


def wait_for_executions(
    client: grpcclient.InferenceServerClient, model: str, count: int, timeout_s: float = 10
) -> bool:
    deadline = time.monotonic() + timeout_s
    while executions(client, model) < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# -- kind: triton -----------------------------------------------------------------------------------------------------


def test_remote_triton_tier_answers_with_cost_and_confidence(
    server_a: LocalTritonServer, server_b: LocalTritonServer, client_b: Any, install_router: Any
) -> None:
    remote = {"kind": "triton", "url": server_b.grpc_url, "model": "tier_small"}
    policy = _policy([_tier("tier_remote", 20.0, remote, escalation_threshold=-50.0), _local("tier_medium")])
    name = install_router("router_remote_live", policy)
    before = executions(client_b, "tier_small")
    result = route(server_a.grpc_url, name)
    assert wait_for_executions(client_b, "tier_small", before + 1), "server B's tier_small did not run"
    text, logprobs, input_tokens, output_tokens = direct_tier(server_b.grpc_url, "tier_small", PROMPT, MAX_TOKENS)
    assert result.tier == "tier_remote" and not result.escalated
    assert result.text == text
    (attempt,) = result.route["attempts"]
    assert attempt["tier"] == "tier_remote" and attempt["outcome"] == "ok"
    assert attempt["input_tokens"] == input_tokens and attempt["output_tokens"] == output_tokens == len(logprobs)
    assert attempt["confidence"] == pytest.approx(compute_confidence("mean_logprob", logprobs), abs=1e-5)
    spec = parse_policy(policy).tier("tier_remote")
    assert attempt["cost"] == pytest.approx(call_cost(spec, input_tokens, output_tokens), rel=1e-6)
    assert result.cost == pytest.approx(attempt["cost"], rel=1e-5)


def test_remote_triton_tier_streams_through_router_stream(
    server_a: LocalTritonServer, server_b: LocalTritonServer, install_router: Any
) -> None:
    remote = {"kind": "triton", "url": server_b.grpc_url, "model": "tier_small"}
    policy = _policy([_tier("tier_remote", 20.0, remote, escalation_threshold=-50.0), _local("tier_medium")], 2)
    name = install_router("router_remote_stream", policy, streaming=True)
    with RouterClient(server_a.grpc_url, timeout_s=120) as client:
        events = list(client.stream(PROMPT, max_tokens=MAX_TOKENS, model=name))
    deltas = [e.text for e in events if isinstance(e, StreamDelta)]
    final = events[-1]
    assert isinstance(final, RouterResult) and final.tier == "tier_remote"
    text, logprobs, _, _ = direct_tier(server_b.grpc_url, "tier_small", PROMPT, MAX_TOKENS)
    assert "".join(deltas) == text and deltas, "the remote tier's text must reach the client as deltas"
    assert final.route["attempts"][-1]["output_tokens"] == len(logprobs)


def test_remote_tier_down_falls_back_to_a_local_tier(server_a: LocalTritonServer) -> None:
    started = time.monotonic()
    result = route(server_a.grpc_url, "router_remote")  # tests/models/router_remote: remote at a closed port
    assert time.monotonic() - started < 15
    assert result.tier == "tier_small" and result.text
    failed, answered = result.route["attempts"]
    assert failed["tier"] == "tier_remote" and failed["outcome"] == "error"
    assert "127.0.0.1:1" in failed["error"] and "tier_remote" in failed["error"]
    assert failed["latency_ms"] < 3000, "a refused connection must fail fast, well within the 3 s deadline"
    assert answered["tier"] == "tier_small" and answered["step"] == "fallback"
    assert result.route["fallbacks"] == 1


def test_hung_remote_tier_times_out_at_its_deadline(
    server_a: LocalTritonServer, silent_url: str, install_router: Any
) -> None:
    remote = {"kind": "triton", "url": silent_url, "model": "tier_small"}
    name = install_router("router_remote_hung", _policy([_tier("tier_remote", 1.0, remote), _local("tier_small")]))
    result = route(server_a.grpc_url, name)
    failed, answered = result.route["attempts"]
    assert failed["outcome"] == "timeout" and "1.00s deadline" in failed["error"]
    assert 900 <= failed["latency_ms"] < 2500
    assert result.tier == "tier_small" and answered["step"] == "fallback"


# -- kind: openai (the project's OpenAI-compatible front) -------------------------------------------------------------


def test_openai_tier_through_the_front_with_key_from_the_environment(
    server_a: LocalTritonServer, server_b: LocalTritonServer, client_b: Any
) -> None:
    _EchoKeyHandler.seen.clear()
    result = route(server_b.grpc_url, "router_remote_openai")
    echo, front = result.route["attempts"]
    # the echo endpoint got the key from B's environment and sent it back in its error: redacted in the trace
    assert _EchoKeyHandler.seen == [f"Bearer {SECRET}"]
    assert echo["outcome"] == "error" and "HTTP 401" in echo["error"] and "***" in echo["error"]
    assert front["tier"] == "tier_front" and front["outcome"] == "ok" and front["step"] == "fallback"
    assert result.tier == "tier_front"
    text, logprobs, input_tokens, output_tokens = direct_tier(server_a.grpc_url, "tier_small", PROMPT, MAX_TOKENS)
    assert result.text == text
    assert front["input_tokens"] == input_tokens and front["output_tokens"] == output_tokens
    assert front["confidence"] == pytest.approx(compute_confidence("mean_logprob", logprobs), abs=1e-4)
    assert front["cost"] == pytest.approx((input_tokens + output_tokens) * 0.0001 / 1000, rel=1e-6)
    assert SECRET not in json.dumps(result.route)
    assert SECRET not in server_b.log_path.read_text(errors="replace")


def test_openai_tier_without_logprobs_uses_confidence_when_missing(server_b: LocalTritonServer) -> None:
    result = route(server_b.grpc_url, "router_remote_openai", force_tier="tier_front_router")
    (attempt,) = result.route["attempts"]
    assert result.tier == "tier_front_router" and attempt["outcome"] == "ok"
    assert attempt["confidence"] == pytest.approx(-0.75)
    assert attempt["output_tokens"] > 0 and attempt["cost"] > 0  # usage of the front's answer


def test_openai_tier_with_its_key_variable_unset_fails_with_a_clear_reason(server_b: LocalTritonServer) -> None:
    with RouterClient(server_b.grpc_url, timeout_s=60) as client, pytest.raises(Exception) as info:
        client.route(
            PROMPT,
            max_tokens=MAX_TOKENS,
            options=RouteOptions(force_tier="tier_unset_key"),
            model="router_remote_openai",
        )
    message = str(info.value)
    assert "ROUTER_TEST_UNSET_KEY" in message and "is not set" in message
    assert SECRET not in message


# -- the front's logprobs (what an OpenAI-kind tier reads) ------------------------------------------------------------


@pytest.fixture(scope="module")
def sdk(front_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=front_url, api_key=SECRET, max_retries=0, timeout=120) as client:
        yield client


def test_front_returns_token_logprobs_for_a_tier(server_a: LocalTritonServer, sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="tier_small", messages=[{"role": "user", "content": PROMPT}], max_tokens=MAX_TOKENS, logprobs=True
    )
    text, logprobs, input_tokens, output_tokens = direct_tier(server_a.grpc_url, "tier_small", PROMPT, MAX_TOKENS)
    choice = completion.choices[0]
    assert choice.message.content == text
    content = choice.logprobs.content
    assert [t.logprob for t in content] == pytest.approx(logprobs, abs=1e-5)
    assert "".join(t.token for t in content) == text
    assert completion.usage.prompt_tokens == input_tokens and completion.usage.completion_tokens == output_tokens
    assert all(math.isfinite(t.logprob) and t.logprob <= 0 for t in content)


def test_front_streams_token_logprobs_for_a_tier(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="tier_small",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=MAX_TOKENS,
        logprobs=True,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, entries, usage = [], [], None
    for chunk in stream:
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            if choice.logprobs is not None:
                entries.extend(choice.logprobs.content or [])
        usage = chunk.usage or usage
    assert usage is not None and usage.completion_tokens == len(entries) > 0
    assert "".join(t.token for t in entries) == "".join(pieces)


def test_front_router_model_answers_logprobs_null(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="router", messages=[{"role": "user", "content": PROMPT}], max_tokens=MAX_TOKENS, logprobs=True
    )
    assert completion.choices[0].logprobs is None and completion.model_extra["route"]["final_tier"]
