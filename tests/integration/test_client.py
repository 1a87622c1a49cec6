"""RouterClient, AsyncRouterClient and router-client against the real router on the local tritonserver."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from llm_router.core import load_policy
from llm_router.protocol import missing_tier_interface
from router_benchmarks.inputs import DEMO_SAMPLE, read_sample
from router_client.client import (
    AsyncRouterClient,
    RouteOptions,
    RouterClient,
    RouterError,
    RouterResult,
    StreamDelta,
    server_tiers,
)
from router_launcher.serve import LocalTritonServer, free_ports

pytestmark = pytest.mark.integration

ROUTER_CLIENT = Path(sys.executable).parent / "router-client"
MAX_TOKENS = 8
PROMPTS = [p.text for p in read_sample(DEMO_SAMPLE)]


# the shipped policy's tiers, cheapest first (what the server must report)
TIER_MODELS = load_policy(Path(__file__).resolve().parents[2] / "model_repository/router/1/policy.yaml").tier_names
ROUTER_DEPENDENCIES = ("intent_classifier", *TIER_MODELS)


def require_models(grpc_client: grpcclient.InferenceServerClient, entry: str) -> None:
    """Skip unless `entry` and the models it calls are loaded (they are built by `make models`)."""
    missing = [m for m in (entry, *ROUTER_DEPENDENCIES) if not grpc_client.is_model_ready(m)]
    if missing:
        pytest.skip(f"`{entry}` needs models that are not loaded on the test server: {', '.join(missing)}")


@pytest.fixture(scope="module")
def router_url(triton_server: LocalTritonServer, grpc_client: grpcclient.InferenceServerClient) -> str:
    require_models(grpc_client, "router")
    return triton_server.grpc_url


@pytest.fixture(scope="module")
def stream_url(triton_server: LocalTritonServer, grpc_client: grpcclient.InferenceServerClient) -> str:
    require_models(grpc_client, "router_stream")
    return triton_server.grpc_url


def _check_result(result: RouterResult) -> None:
    assert isinstance(result.text, str)
    assert result.tier in TIER_MODELS
    assert result.cost > 0
    assert result.route["final_tier"] == result.tier
    assert isinstance(result.route["intent"], str)
    attempts = result.route["attempts"]
    assert attempts and attempts[-1]["tier"] == result.tier
    assert result.escalated == (attempts[0]["tier"] != result.tier)  # the interface's definition


def test_server_tiers_are_the_routers_policy(router_url: str) -> None:
    assert server_tiers(router_url) == list(TIER_MODELS)

    async def tiers() -> list[str]:
        async with AsyncRouterClient(router_url) as client:
            return await client.tiers()

    assert asyncio.run(tiers()) == list(TIER_MODELS)


def test_server_tiers_without_the_router_are_the_models_serving_the_tier_interface(
    router_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RouterClient, "is_ready", lambda self, model="router": False)  # as if `router` were not loaded
    with RouterClient(router_url) as client:
        found = client.tiers()
        index = client._client.get_model_repository_index(as_json=True)["models"]
        ready = sorted(m["name"] for m in index if m.get("state") == "READY")
        configs = {name: client._client.get_model_config(name, as_json=True)["config"] for name in ready}
    assert set(TIER_MODELS) <= set(found) and found == sorted(found)
    assert found == [name for name in ready if not missing_tier_interface(configs[name])]
    assert "router" not in found and "intent_classifier" not in found


def test_route_returns_text_tier_cost_and_route(router_url: str) -> None:
    with RouterClient(router_url) as client:
        result = client.route(PROMPTS[0], max_tokens=MAX_TOKENS)
    _check_result(result)
    assert result.completion_tokens <= MAX_TOKENS


@pytest.mark.parametrize("tier", TIER_MODELS)
def test_force_tier_answers_with_that_tier(router_url: str, tier: str) -> None:
    with RouterClient(router_url) as client:
        result = client.route(PROMPTS[3], max_tokens=4, options=RouteOptions(force_tier=tier))
    assert result.tier == tier
    assert not result.escalated
    assert [a["tier"] for a in result.route["attempts"]] == [tier]


def test_max_tier_caps_the_chain(router_url: str) -> None:
    with RouterClient(router_url) as client:
        result = client.route(PROMPTS[-1], max_tokens=4, options=RouteOptions(max_tier="tier_small"))
    assert result.tier == "tier_small"


@pytest.mark.parametrize(
    ("prompt", "options", "fragment"),
    [
        ("   ", RouteOptions(), "empty"),
        ("hello", RouteOptions(force_tier="tier_xl"), "tier_xl"),
        ("hello", RouteOptions(min_tier="tier_large", max_tier="tier_small"), "tier"),
    ],
)
def test_bad_requests_raise_router_error_with_the_server_message(
    router_url: str, prompt: str, options: RouteOptions, fragment: str
) -> None:
    with RouterClient(router_url) as client:
        with pytest.raises(RouterError) as info:
            client.route(prompt, options=options)
        assert info.value.status == "INVALID_ARGUMENT"
        assert fragment in info.value.message
        _check_result(client.route(PROMPTS[1], max_tokens=4))  # the client still works


def test_stream_yields_deltas_then_the_result(stream_url: str) -> None:
    with RouterClient(stream_url) as client:
        events = list(client.stream(PROMPTS[2], max_tokens=MAX_TOKENS))
    *deltas, result = events
    assert all(isinstance(d, StreamDelta) for d in deltas)
    assert isinstance(result, RouterResult)
    _check_result(result)
    assert result.text == "".join(d.text for d in deltas)
    assert {d.tier for d in deltas} <= {result.tier}  # only the answering tier streams


def test_stream_error_is_raised_and_the_client_recovers(stream_url: str) -> None:
    with RouterClient(stream_url) as client:
        with pytest.raises(RouterError) as info:
            list(client.stream("hello", options=RouteOptions(force_tier="tier_xl")))
        assert "tier_xl" in info.value.message
        events = list(client.stream(PROMPTS[4], max_tokens=4))
        assert isinstance(events[-1], RouterResult)


def test_async_client_runs_requests_concurrently(router_url: str, stream_url: str) -> None:
    async def scenario() -> tuple[list[RouterResult], list[RouterResult]]:
        async with AsyncRouterClient(router_url) as client:

            async def streamed(prompt: str) -> RouterResult:
                events = [e async for e in client.stream(prompt, max_tokens=4)]
                assert isinstance(events[-1], RouterResult)
                return events[-1]

            routed = asyncio.gather(*(client.route(p, max_tokens=4) for p in PROMPTS[:4]))
            streams = asyncio.gather(*(streamed(p) for p in PROMPTS[4:6]))
            return await routed, await streams

    routed, streams = asyncio.run(scenario())
    assert len(routed) == 4 and len(streams) == 2
    for result in routed + streams:
        _check_result(result)


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROUTER_CLIENT), *args], capture_output=True, text=True, input=stdin, timeout=300, check=False
    )


def test_cli_one_prompt_plain_and_json(router_url: str) -> None:
    plain = _cli("--url", router_url, "--max-tokens", "4", PROMPTS[0])
    assert plain.returncode == 0, plain.stderr
    summary = plain.stderr.strip().splitlines()[-1]
    assert summary.startswith("[tier_") and "cost=$" in summary
    as_json = _cli("--url", router_url, "--json", "--max-tokens", "4", "--force-tier", "tier_medium", PROMPTS[1])
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["tier"] == "tier_medium" and result["cost"] > 0 and "intent" in result["route"]


def test_cli_stream(stream_url: str) -> None:
    proc = _cli("--url", stream_url, "--stream", "--json", "--max-tokens", "6", PROMPTS[5])
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    final = lines[-1]["result"]
    assert final["text"] == "".join(line["delta"] for line in lines[:-1])
    assert final["tier"] in TIER_MODELS


def test_cli_file_with_concurrency(router_url: str, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:5]))
    proc = _cli("--url", router_url, "--file", str(prompts), "--concurrency", "3", "--max-tokens", "4")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["index"] for r in rows] == list(range(5))
    assert [r["prompt"] for r in rows] == PROMPTS[:5]
    assert all(r["tier"] in TIER_MODELS for r in rows)
    assert "5 prompts: 5 answered, 0 failed" in proc.stderr


def test_cli_server_error_is_one_line_and_exit_1(router_url: str) -> None:
    proc = _cli("--url", router_url, "--force-tier", "tier_xl", "hello")
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("router-client: error: INVALID_ARGUMENT:") and "tier_xl" in lines[0]


# -- issue 16 items 6, 8 and 13 (client side), issue 14 item 2 ----


def test_cli_confidence_threshold_above_zero_is_a_usage_error(router_url: str) -> None:
    proc = _cli("--url", router_url, "--confidence-threshold", "0.5", "hello")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "router-client: error: --confidence-threshold must be a log-prob, a finite number <= 0" in proc.stderr


def test_cli_stream_and_unary_report_a_dead_server_alike(router_url: str) -> None:
    (port,) = free_ports(1)  # nothing listens there
    unary = _cli("--url", f"127.0.0.1:{port}", "--timeout", "10", "hello")
    streamed = _cli("--url", f"127.0.0.1:{port}", "--timeout", "10", "--stream", "hello")
    assert unary.returncode == streamed.returncode == 1
    assert unary.stderr.startswith("router-client: error: UNAVAILABLE: ")
    assert streamed.stderr.strip() == unary.stderr.strip()


def test_cli_file_summary_compares_with_the_largest_tier(router_url: str, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:3]))
    proc = _cli("--url", router_url, "--file", str(prompts), "--max-tokens", "4", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stderr.splitlines() if x.startswith("cost $"))
    assert f" vs always-{TIER_MODELS[-1]} $" in line and "% of it, saved $" in line


def test_cli_trace_without_json_prints_the_attempts(router_url: str) -> None:
    proc = _cli("--url", router_url, "--trace", "--max-tokens", "4", "--force-tier", "tier_medium", PROMPTS[2])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("[tier_medium, ")
    assert any(x.startswith("  tier_medium: ") and " vs threshold " in x for x in lines[1:])


def test_cli_json_cost_has_no_float32_noise(router_url: str) -> None:
    proc = _cli("--url", router_url, "--json", "--max-tokens", "4", "--force-tier", "tier_large", PROMPTS[1])
    assert proc.returncode == 0, proc.stderr
    cost = json.loads(proc.stdout)["cost"]
    assert cost > 0 and repr(cost) == str(np.float32(cost))  # 0.00106, not 0.0010600000387057662


def test_route_with_messages(router_url: str, grpc_client: grpcclient.InferenceServerClient) -> None:
    inputs = [i["name"] for i in grpc_client.get_model_config("router", as_json=True)["config"]["input"]]
    if "messages" not in inputs:
        pytest.skip("the router does not declare the `messages` input (issue 14 item 2, router side)")
    options = RouteOptions(force_tier="tier_small")
    with RouterClient(router_url) as client:
        as_messages = client.route(messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=2, options=options)
        as_text = client.route(PROMPTS[0], max_tokens=2, options=options)
    _check_result(as_messages)
    # one user message is what text_input stands for: the same prompt tokens
    assert as_messages.prompt_tokens == as_text.prompt_tokens > 0
