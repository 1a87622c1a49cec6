"""The OpenAI-compatible front, called with the official `openai` package, forwarding to the real router."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
import tritonclient.grpc as grpcclient
from helpers import openai_front
from router_benchmarks.inputs import DEMO_SAMPLE, read_sample
from router_client.client import TIER_MODELS
from router_launcher.serve import LocalTritonServer

pytestmark = pytest.mark.integration

PROMPTS = [p.text for p in read_sample(DEMO_SAMPLE)]


@pytest.fixture(scope="module")
def front_url(triton_server: LocalTritonServer, grpc_client: grpcclient.InferenceServerClient) -> Iterator[str]:
    """The front (uvicorn, a free port) in a thread of this process, pointed at the test server."""
    missing = [
        m for m in ("router", "router_stream", "intent_classifier", *TIER_MODELS) if not grpc_client.is_model_ready(m)
    ]
    if missing:
        pytest.skip(f"the router needs models that are not loaded on the test server: {', '.join(missing)}")
    with openai_front(triton_server.grpc_url) as url:
        yield url


@pytest.fixture(scope="module")
def client(front_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=front_url, api_key="unused", max_retries=0, timeout=300) as sdk:
        yield sdk


def test_models_lists_the_router_and_loaded_tiers(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids[0] == "router"
    assert set(ids[1:]) <= set(TIER_MODELS)
    assert client.models.retrieve("router").id == "router"


def test_chat_completion(client: openai.OpenAI) -> None:
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
    assert usage.model_extra["tier"] in TIER_MODELS and usage.model_extra["cost"] > 0
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


def test_streaming_chat_completion(client: openai.OpenAI) -> None:
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
    assert usage_chunk.usage.model_extra["tier"] in TIER_MODELS
    assert usage_chunk.usage.completion_tokens <= 8
    assert len({c.id for c in chunks}) == 1
    assert isinstance(content, str)


def test_unknown_model_is_a_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["code"] == "model_not_found"


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
