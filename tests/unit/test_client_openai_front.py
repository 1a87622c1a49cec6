"""The OpenAI-compatible front without a router: prompt rendering, model names, bodies, SSE, HTTP errors."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from router_client.client import RouterResult
from router_frontend.openai_front import (
    ChatCompletionRequest,
    ChatMessage,
    FrontError,
    chunk_body,
    completion_body,
    create_app,
    finish_reason,
    render_messages,
    route_options,
    sse_event,
    tier_names_used,
    usage_of,
)
from router_launcher.serve import free_ports


def _messages(*pairs: tuple[str, object]) -> list[ChatMessage]:
    return [ChatMessage.model_validate({"role": role, "content": content}) for role, content in pairs]


def _result() -> RouterResult:
    route = {"intent": "factual_qa", "attempts": [{"tier": "tier_medium", "input_tokens": 9, "output_tokens": 4}]}
    return RouterResult("Paris.", "tier_medium", True, 0.0021, route)


def test_one_user_message_is_sent_verbatim() -> None:
    assert render_messages(_messages(("user", "  What is 2+2?\n"))) == "  What is 2+2?\n"


def test_a_conversation_is_rendered_with_roles() -> None:
    prompt = render_messages(
        _messages(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"), ("user", "Capital of France?"))
    )
    assert prompt == "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: Capital of France?"


def test_text_parts_are_joined_and_other_parts_refused() -> None:
    parts = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]
    assert render_messages(_messages(("user", parts))) == "first\nsecond"
    with pytest.raises(FrontError) as info:
        render_messages(_messages(("user", [{"type": "image_url", "image_url": {"url": "x"}}])))
    assert info.value.status == 400 and "image_url" in info.value.message


def test_empty_conversation_text_is_a_400() -> None:
    with pytest.raises(FrontError) as info:
        render_messages(_messages(("user", "   ")))
    assert info.value.status == 400


def _body(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "x"}], **fields})


TIERS = ["tier_small", "tier_medium", "remote_xl"]  # the server's names, as router_client's tiers() returns them


def test_model_names_select_the_cascade_or_force_a_tier() -> None:
    assert route_options(_body(model="router"), TIERS).force_tier is None
    assert route_options(_body(model="tier_small"), TIERS).force_tier == "tier_small"
    assert route_options(_body(model="remote_xl"), TIERS).force_tier == "remote_xl"
    options = route_options(_body(model="router", max_tier="tier_medium", confidence_threshold=-0.7), TIERS)
    assert (options.max_tier, options.confidence_threshold) == ("tier_medium", -0.7)
    with pytest.raises(FrontError) as info:
        route_options(_body(model="tier_large"), TIERS)  # not a tier of this server
    assert info.value.status == 404
    assert info.value.body()["error"]["code"] == "model_not_found"
    assert "router, tier_small, tier_medium, remote_xl" in info.value.message
    with pytest.raises(FrontError) as info:
        route_options(_body(model="router", min_tier="tier_huge"), TIERS)
    assert info.value.status == 400 and info.value.param == "min_tier"


def test_only_requests_naming_a_tier_need_the_servers_tier_names() -> None:
    assert tier_names_used(_body(model="router")) == []
    assert tier_names_used(_body(model="tier_small", max_tier="tier_medium")) == ["tier_small", "tier_medium"]


def test_usage_carries_tokens_cost_and_tier() -> None:
    assert usage_of(_result()) == {
        "prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13,
        "cost": 0.0021, "tier": "tier_medium", "escalated": True,
    }  # fmt: skip
    assert finish_reason(_result(), None) == "stop"
    assert finish_reason(_result(), 4) == "length"
    assert finish_reason(_result(), 64) == "stop"


def test_bodies_parse_with_the_openai_sdk_types() -> None:
    completion = ChatCompletion.model_validate(completion_body(_result(), "router", "chatcmpl-1", 1700000000, None))
    assert completion.choices[0].message.content == "Paris."
    assert completion.usage is not None and completion.usage.total_tokens == 13
    assert completion.usage.model_extra == {"cost": 0.0021, "tier": "tier_medium", "escalated": True}
    assert completion.model_extra["route"]["intent"] == "factual_qa"
    chunk = ChatCompletionChunk.model_validate(chunk_body("chatcmpl-1", 1, "router", {"content": "Par"}))
    assert chunk.choices[0].delta.content == "Par"
    usage_chunk = ChatCompletionChunk.model_validate(
        chunk_body("chatcmpl-1", 1, "router", None, usage=usage_of(_result()))
    )
    assert usage_chunk.choices == [] and usage_chunk.usage is not None


def test_sse_event_format() -> None:
    assert sse_event("[DONE]") == "data: [DONE]\n\n"
    event = sse_event({"a": "é\nb"})
    assert event.startswith("data: ") and event.endswith("\n\n") and event.count("\n") == 2
    assert json.loads(event[len("data: ") :]) == {"a": "é\nb"}


@pytest.fixture
def offline_app() -> TestClient:
    """The app pointed at a port where no Triton listens."""
    (port,) = free_ports(1)
    with TestClient(create_app(f"127.0.0.1:{port}", timeout_s=5)) as client:
        yield client


def test_http_errors_use_the_openai_format(offline_app: TestClient) -> None:
    # a model name other than `router` is checked against the server's tiers: unreachable here
    response = offline_app.post(
        "/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "server_error" and "not reachable" in response.json()["error"]["message"]

    response = offline_app.post("/v1/chat/completions", json={"model": "router"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"

    response = offline_app.post(
        "/v1/chat/completions",
        json={"model": "router", "messages": [{"role": "user", "content": "hi"}], "confidence_threshold": 1.5},
    )
    assert response.status_code == 400 and "confidence_threshold" in response.json()["error"]["message"]


def test_unreachable_triton_is_a_503(offline_app: TestClient) -> None:
    response = offline_app.post(
        "/v1/chat/completions", json={"model": "router", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 503
    assert response.json()["error"]["message"].startswith("router: ")
    assert offline_app.get("/v1/models").status_code == 503


def test_api_key_is_enforced_when_set() -> None:
    (port,) = free_ports(1)
    with TestClient(create_app(f"127.0.0.1:{port}", api_key="s3cret")) as client:
        response = client.get("/v1/models")
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
        response = client.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert response.status_code == 503  # past the key check; no Triton there


class _FakeRouter:
    """Stands in for AsyncRouterClient: records what the front sends."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.request_ids: list[str | None] = []

    async def route(
        self, prompt: str = "", *, max_tokens=None, options=None, model="router", messages=None, request_id=None
    ):
        self.calls.append({"prompt": prompt, "messages": messages, "model": model})
        self.request_ids.append(request_id)
        return _result()


class _FakeTriton:
    """Stands in for the front's tritonclient: a router config with the given inputs."""

    def __init__(self, inputs: list[str]) -> None:
        self.inputs = inputs

    async def get_model_config(self, model: str, as_json: bool = True, client_timeout: float | None = None) -> dict:
        return {"config": {"name": model, "input": [{"name": name} for name in self.inputs]}}


@pytest.mark.parametrize("router_inputs", [["text_input", "max_tokens", "messages"], ["text_input", "max_tokens"]])
def test_the_conversation_goes_as_messages_when_the_router_takes_them(router_inputs: list[str]) -> None:
    (port,) = free_ports(1)
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
    ]
    with TestClient(create_app(f"127.0.0.1:{port}", timeout_s=5)) as client:
        state = client.app.state
        real = state.router, state.tiers
        state.router, state.tiers = _FakeRouter(), _FakeTriton(router_inputs)
        try:
            response = client.post("/v1/chat/completions", json={"model": "router", "messages": conversation})
            calls, request_ids = state.router.calls, state.router.request_ids
        finally:
            state.router, state.tiers = real
    assert response.status_code == 200, response.text
    assert request_ids == [response.json()["id"]]  # the completion id is the Triton request id (outcome records)
    if "messages" in router_inputs:
        assert calls == [
            {"prompt": "", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
             "model": "router"}
        ]  # fmt: skip
    else:  # an older router: one rendered prompt
        assert calls == [{"prompt": "System: Be brief.\n\nUser: Hi", "messages": None, "model": "router"}]


def test_unknown_and_unsupported_fields_bad_json_and_unknown_paths(offline_app: TestClient) -> None:
    hi = [{"role": "user", "content": "hi"}]
    error = offline_app.post("/v1/chat/completions", json={"model": "router", "messages": hi, "max_teir": 1}).json()
    assert error["error"]["param"] == "max_teir" and "did you mean `max_tier`" in error["error"]["message"]
    error = offline_app.post(
        "/v1/chat/completions", json={"model": "router", "messages": hi, "response_format": {"type": "json_object"}}
    ).json()
    assert error["error"]["param"] == "response_format"
    response = offline_app.post(
        "/v1/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]
    response = offline_app.post("/v1/completions", json={"model": "router", "prompt": "hi"})
    assert response.status_code == 404 and "/v1/chat/completions" in response.json()["error"]["message"]
    assert offline_app.delete("/v1/models").json()["error"]["message"].startswith("DELETE /v1/models")
