"""The router's prompt and conversation handling (llm_router.router.conversation) and what it sends to remote tiers
(llm_router.router.remote: OpenAI bodies, gRPC channel arguments); Triton-free."""

from __future__ import annotations

import json

import pytest
from llm_router.core.policy import RemoteSpec
from llm_router.protocol import TIER_INPUTS, numpy_type, tier_request_arrays
from llm_router.router.conversation import Prompt, PromptError, check_printable, parse_conversation
from llm_router.router.remote import LB_POLICY_ENV, grpc_channel_args, openai_request_body

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a prime."},
    {"role": "assistant", "content": "7"},
    {"role": "user", "content": [{"type": "text", "text": "Another"}, {"type": "text", "text": "one?"}]},
]


def test_a_conversation_is_routed_on_its_last_user_message() -> None:
    conversation = parse_conversation(json.dumps(CHAT))
    assert conversation.last_user_text == "Another\none?"  # text parts joined, as the tier joins them
    assert json.loads(conversation.payload)[3] == {"role": "user", "content": "Another\none?"}
    assert conversation.flattened() == "System: Be brief.\n\nUser: Name a prime.\n\nAssistant: 7\n\nUser: Another\none?"
    prompt = Prompt("", conversation=conversation)
    assert prompt.classify_text == "Another\none?" and prompt.flat_text == conversation.flattened()
    assert prompt.messages == conversation.payload


def test_a_lone_user_message_flattens_to_its_text() -> None:
    conversation = parse_conversation('[{"role": "user", "content": "Capital of Peru?"}]')
    assert conversation.flattened() == "Capital of Peru?"
    assert Prompt("plain").flat_text == "plain" and Prompt("plain").messages is None


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"role": "user", "content": "hi"}', "must be a JSON list"),
        ("[]", "empty list"),
        ('[{"role": "wizard", "content": "hi"}]', "role 'wizard'"),
        ('[{"role": "user"}]', "has no 'content'"),
        ('[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]', "'image_url' part"),
        ('[{"role": "system", "content": "be nice"}]', "no user message"),
        ('[{"role": "user", "content": "hi"}, {"role": "user", "content": "\\u0000\\u0000"}]', "messages[1].content"),
        ('[{"role": "user", "content": "  "}]', "the last user message"),
    ],
)
def test_bad_conversations_say_what_is_wrong(payload: str, message: str) -> None:
    with pytest.raises(PromptError, match=None) as info:
        parse_conversation(payload)
    assert message in str(info.value), str(info.value)


@pytest.mark.parametrize("text", ["\x00", "\x00\x00\x00", "\x01\x02\x1b", " \x00\n\t\x7f ", "\u200b\u200e"])
def test_text_without_a_printable_character_is_refused(text: str) -> None:
    with pytest.raises(PromptError, match="control characters"):
        check_printable("input 'text_input'", text)


@pytest.mark.parametrize("text", ["a", "NUL\x00inside", "日本語", "🙂"])
def test_text_with_printable_characters_passes(text: str) -> None:
    check_printable("input 'text_input'", text)


def test_tier_arrays_carry_a_conversation_and_raw() -> None:
    payload = parse_conversation(json.dumps(CHAT)).payload
    arrays = tier_request_arrays("", 8, stream=False, messages=payload, raw=False)
    types = {spec.name: numpy_type(spec.data_type) for spec in TIER_INPUTS}
    assert list(arrays) == ["text_input", "max_tokens", "return_log_probs", "stream", "messages"]
    assert arrays["messages"][0, 0] == payload.encode() and arrays["text_input"][0, 0] == b""
    raw = tier_request_arrays("<s>[INST] hi", 8, stream=True, raw=True)
    assert bool(raw["raw"][0, 0]) and all(array.dtype == types[name] for name, array in raw.items())


def test_openai_bodies_carry_the_conversation() -> None:
    prompt = Prompt("", conversation=parse_conversation(json.dumps(CHAT)))
    chat = openai_request_body(RemoteSpec(url="https://api.example.com/v1"), "m", prompt, 16, stream=False)
    assert chat["messages"][0] == {"role": "system", "content": "Be brief."} and len(chat["messages"]) == 4
    assert chat["messages"][3]["content"] == "Another\none?" and chat["logprobs"] is True
    completions = openai_request_body(
        RemoteSpec(url="https://api.example.com/v1", api="completions"), "m", prompt, 16, stream=True
    )
    assert completions["prompt"] == prompt.flat_text and "messages" not in completions
    plain = openai_request_body(RemoteSpec(url="https://api.example.com/v1"), "m", Prompt("hi"), 4, stream=False)
    assert plain["messages"] == [{"role": "user", "content": "hi"}]


def test_grpc_channel_keeps_tritonclients_defaults_and_balances_round_robin(monkeypatch: pytest.MonkeyPatch) -> None:
    from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions

    monkeypatch.delenv(LB_POLICY_ENV, raising=False)
    args = dict(grpc_channel_args())
    keepalive = KeepAliveOptions()
    assert args == {
        "grpc.max_send_message_length": MAX_GRPC_MESSAGE_SIZE,
        "grpc.max_receive_message_length": MAX_GRPC_MESSAGE_SIZE,
        "grpc.keepalive_time_ms": keepalive.keepalive_time_ms,
        "grpc.keepalive_timeout_ms": keepalive.keepalive_timeout_ms,
        "grpc.keepalive_permit_without_calls": keepalive.keepalive_permit_without_calls,
        "grpc.http2.max_pings_without_data": keepalive.http2_max_pings_without_data,
        "grpc.lb_policy_name": "round_robin",
    }
    monkeypatch.setenv(LB_POLICY_ENV, "pick_first")
    assert dict(grpc_channel_args())["grpc.lb_policy_name"] == "pick_first"


def test_the_aio_client_is_built_with_those_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import tritonclient.grpc.aio as grpcclient_aio
    from llm_router.router import remote

    seen: dict = {}

    class Recorder:
        def __init__(self, url: str, **kwargs) -> None:
            seen.update(url=url, **kwargs)

    monkeypatch.setattr(grpcclient_aio, "InferenceServerClient", Recorder)
    monkeypatch.setattr(remote, "_triton_clients", {})

    async def build() -> None:
        remote._triton_client("trtllm-headless:8001")

    asyncio.run(build())
    assert seen["url"] == "trtllm-headless:8001" and seen["channel_args"] == grpc_channel_args()
