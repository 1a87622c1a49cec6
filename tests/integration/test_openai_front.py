"""The OpenAI-compatible front, called with the official `openai` package, forwarding to the real router."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
import tritonclient.grpc as grpcclient
from helpers import openai_front, stream, tensor, text_array
from router_benchmarks.inputs import DEMO_SAMPLE, read_sample
from router_client.client import server_tiers
from router_launcher.serve import LocalTritonServer, free_ports
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration

PROMPTS = [p.text for p in read_sample(DEMO_SAMPLE)]
ROUTER_OPENAI = Path(sys.executable).parent / "router-openai"


@pytest.fixture(scope="module")
def front_url(triton_server: LocalTritonServer, grpc_client: grpcclient.InferenceServerClient) -> Iterator[str]:
    """The front (uvicorn, a free port) in a thread of this process, pointed at the test server."""
    missing = [m for m in ("router", "router_stream", "intent_classifier") if not grpc_client.is_model_ready(m)] or [
        m for m in server_tiers(triton_server.grpc_url) if not grpc_client.is_model_ready(m)
    ]
    if missing:
        pytest.skip(f"the router needs models that are not loaded on the test server: {', '.join(missing)}")
    with openai_front(triton_server.grpc_url) as url:
        yield url


@pytest.fixture(scope="module")
def tiers(front_url: str, triton_server: LocalTritonServer) -> list[str]:
    return server_tiers(triton_server.grpc_url)


@pytest.fixture(scope="module")
def client(front_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=front_url, api_key="unused", max_retries=0, timeout=300) as sdk:
        yield sdk


def test_models_lists_the_router_and_loaded_tiers(client: openai.OpenAI, tiers: list[str]) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids == ["router", *tiers]  # every tier of the test server's policy is loaded there
    assert client.models.retrieve("router").id == "router"


def test_chat_completion(client: openai.OpenAI, tiers: list[str]) -> None:
    completion = client.chat.completions.create(
        model="router", messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=8
    )
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0
    assert 0 <= usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.model_extra["tier"] in tiers and usage.model_extra["cost"] > 0
    assert completion.model_extra["route"]["final_tier"] == usage.model_extra["tier"]
    assert completion.model == "router"


def test_tier_name_forces_the_tier(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="tier_medium",
        messages=[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": PROMPTS[5]}],
        max_tokens=4,
    )
    assert completion.usage is not None and completion.usage.model_extra["tier"] == "tier_medium"
    assert completion.usage.model_extra["escalated"] is False


def test_streaming_chat_completion(client: openai.OpenAI, tiers: list[str]) -> None:
    stream = client.chat.completions.create(
        model="router",
        messages=[{"role": "user", "content": PROMPTS[2]}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert chunks[0].choices[0].delta.role == "assistant"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.model_extra["tier"] in tiers
    assert usage_chunk.usage.completion_tokens <= 8
    assert len({c.id for c in chunks}) == 1
    assert isinstance(content, str)


def test_unknown_model_is_a_404(client: openai.OpenAI, tiers: list[str]) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["code"] == "model_not_found"
    assert info.value.body["message"].endswith("Available: " + ", ".join(["router", *tiers]))


def test_router_invalid_arg_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="router",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"min_tier": "tier_large", "max_tier": "tier_small"},
        )
    assert info.value.body["message"].startswith("router: ")


def test_streaming_router_error_is_raised_by_the_sdk(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIError) as info:
        stream = client.chat.completions.create(
            model="router",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"min_tier": "tier_large", "max_tier": "tier_small"},
            stream=True,
        )
        list(stream)
    assert "router: " in str(info.value)


# -- issue 16 item 7: what the front refuses, and how it says so ----


def test_unknown_field_is_a_400_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="router", messages=[{"role": "user", "content": "hi"}], extra_body={"max_teir": "tier_small"}
        )
    assert info.value.body["param"] == "max_teir"
    assert info.value.body["message"] == ("Unrecognized request argument supplied: max_teir (did you mean `max_tier`?)")


def test_openai_fields_the_front_cannot_honour_are_a_400(client: openai.OpenAI) -> None:
    tool = {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="router", messages=[{"role": "user", "content": "hi"}], tools=[tool])
    assert info.value.body["param"] == "tools" and "not supported" in info.value.body["message"]
    # sampling parameters are still accepted (and ignored)
    completion = client.chat.completions.create(
        model="router", messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=2, temperature=0.2, seed=1
    )
    assert completion.choices[0].message.role == "assistant"


def test_bad_json_says_the_body_is_not_json(front_url: str) -> None:
    request = urllib.request.Request(
        f"{front_url}/chat/completions",
        data=b'{"model": "router", "messages": [{"role": "user", "content": "hi"}',
        headers={"content-type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 400
    error = json.loads(info.value.read())["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("the request body is not valid JSON at character ")


def test_completions_path_answers_in_openai_format(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.completions.create(model="router", prompt="hi", max_tokens=4)
    assert info.value.body["type"] == "invalid_request_error"
    assert "/v1/chat/completions" in info.value.body["message"]


def _front_startup_output(triton_url: str) -> str:
    """What `router-openai` prints until uvicorn says it is running (then it is stopped)."""
    (port,) = free_ports(1)
    command = [str(ROUTER_OPENAI), "--triton-url", triton_url, "--port", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Uvicorn running" in line:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return "".join(lines)


def test_front_says_at_start_when_triton_is_unreachable(triton_server: LocalTritonServer) -> None:
    (dead,) = free_ports(1)  # nothing listens there
    output = _front_startup_output(f"127.0.0.1:{dead}")
    assert f"Triton at 127.0.0.1:{dead} is not reachable" in output and "Uvicorn running" in output
    assert "not reachable" not in _front_startup_output(triton_server.grpc_url)


# -- issue 14 item 2: the conversation reaches the tiers as messages ----


def _direct_input_tokens(url: str, tier: str, messages: list[dict[str, str]]) -> int | None:
    """input_tokens of tier `tier` for a conversation sent as its `messages` input; None when the tier refuses it."""
    inputs = [
        tensor("text_input", text_array("", (1, 1)), "BYTES"),
        tensor("messages", text_array(json.dumps(messages), (1, 1)), "BYTES"),
        tensor("max_tokens", np.array([[1]], dtype=np.int32), "INT32"),
    ]
    try:
        events = stream(url, tier, inputs)
    except InferenceServerException:
        return None  # e.g. a tier without a chat template takes one user message only
    return max(e.get("input_tokens", 0) for e in events)


def test_chat_conversation_is_sent_as_messages(
    client: openai.OpenAI, triton_server: LocalTritonServer, grpc_client: grpcclient.InferenceServerClient,
    tiers: list[str],
) -> None:  # fmt: skip
    inputs = [i["name"] for i in grpc_client.get_model_config("router", as_json=True)["config"]["input"]]
    if "messages" not in inputs:
        pytest.skip("the router does not declare the `messages` input (issue 14 item 2, router side)")
    conversation = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": PROMPTS[3]}]
    counts = {tier: _direct_input_tokens(triton_server.grpc_url, tier, conversation) for tier in tiers}
    templated = [tier for tier, count in counts.items() if count]
    if not templated:
        pytest.skip("no tier takes a conversation (none has a chat template)")
    tier = templated[0]
    completion = client.chat.completions.create(model=tier, messages=conversation, max_tokens=2)
    assert completion.usage is not None and completion.usage.model_extra["tier"] == tier
    # the tier templated the conversation itself: the same prompt tokens as the conversation sent to it directly
    assert completion.usage.prompt_tokens == counts[tier]
