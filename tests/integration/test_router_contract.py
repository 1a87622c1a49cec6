"""Issue 16 and issue 14 (router side) against the real local server with the tiny tiers: the streamed cascade costs
what the unary one costs, finish_reason reflects the policy's token cap, the event counters exist from the load,
bad input is INVALID_ARG saying what to fix, and a conversation (`messages`) reaches the tier."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest
import tritonclient.grpc as grpcclient
from helpers import openai_front, router_inputs, stream, tensor, text_array
from llm_router.core import load_policy
from llm_router.tier.chat import plain_conversation
from prometheus_client.parser import text_string_to_metric_families
from router_export.stand_in import overlay_repository
from router_launcher.serve import LocalTritonServer
from tritonclient.utils import InferenceServerException

ROOT = Path(__file__).resolve().parents[2]
# What the shared test server serves: the repository with tiny stand-ins for the real tiers (tests/conftest.py).
SERVED = overlay_repository(ROOT / "model_repository")
POLICY = load_policy(ROOT / "model_repository" / "router" / "1" / "policy.yaml")
PROMPT = (
    "Could you please generate a TLDR (Too Long Didn't Read) summary of the following news article?\n\n"
    "Article: The city council approved a new budget on Tuesday that raises spending on public transit by ten "
    "percent and freezes property taxes for the second year in a row."
)
NEVER_CONFIDENT = -1e-9
MODELS = ["router", "router_stream"]


def call(url: str, model: str, inputs: list, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """One router request (unary or streamed); the final outputs, `route` parsed, `text` the whole answer."""
    if model == "router":
        client = grpcclient.InferenceServerClient(url)
        try:
            result = client.infer(model, inputs, parameters=params, client_timeout=120)
        finally:
            client.close()
        values = {n: result.as_numpy(n).reshape(-1)[0] for n in ("text_output", "tier", "cost", "route")}
        out = {k: v.decode() if isinstance(v, bytes) else float(v) for k, v in values.items()}
    else:
        events = stream(url, model, inputs, params, timeout_s=120)
        out = {k: events[-1][k] for k in ("tier", "cost", "route")}
        out["text_output"] = "".join(e.get("text_output", "") for e in events[:-1])
    out["route"] = json.loads(out["route"])
    return out


def invalid(url: str, model: str, inputs: list, params: dict[str, Any] | None = None) -> str:
    """The message of a request that must fail with INVALID_ARG (a stream's error carries no status code)."""
    with pytest.raises(InferenceServerException) as info:
        call(url, model, inputs, params)
    if model == "router":
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT", info.value.message()
    return info.value.message()


def messages_inputs(messages: Any, text: str = "", max_tokens: int | None = 8) -> list[grpcclient.InferInput]:
    payload = messages if isinstance(messages, str) else json.dumps(messages)
    return [*router_inputs(text, max_tokens), tensor("messages", text_array(payload), "BYTES")]


# -- issue 16.2: the streamed cascade pays for what it discards -----------------------------------------------------
def test_stream_and_unary_cost_the_same_for_the_same_escalations(triton_server: LocalTritonServer) -> None:
    """max_tokens = holdback_tokens: the unary router's discarded answer and the stream's held-back tokens are the
    same tokens, so the two traces must agree on every count and cost."""
    params = {"max_tier": "tier_medium", "confidence_threshold": NEVER_CONFIDENT}
    inputs = router_inputs(PROMPT, POLICY.holdback_tokens)
    unary = call(triton_server.grpc_url, "router", inputs, params)
    streamed = call(triton_server.grpc_url, "router_stream", inputs, params)

    def counts(route: dict) -> list[tuple]:
        keys = ("tier", "step", "outcome", "input_tokens", "output_tokens")
        return [(*(a[k] for k in keys), round(a["cost"], 12)) for a in route["attempts"]]

    assert [a["tier"] for a in unary["route"]["attempts"]] == ["tier_small", "tier_medium"]
    assert counts(streamed["route"]) == counts(unary["route"])
    dropped = streamed["route"]["attempts"][0]
    assert dropped["input_tokens"] > 0 and dropped["latency_ms"] > 0, dropped
    assert streamed["cost"] == pytest.approx(unary["cost"], rel=1e-5)
    assert streamed["route"]["cost"] == pytest.approx(unary["route"]["cost"])
    assert streamed["text_output"] == unary["text_output"]


# -- issue 16.3: finish_reason --------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_trace_says_length_when_the_policy_cap_cut_the_answer(triton_server: LocalTritonServer, model: str) -> None:
    """Without max_tokens the tier's policy cap applies; the random-weight tiers never stop early."""
    out = call(triton_server.grpc_url, model, router_inputs(PROMPT, None), {"force_tier": "tier_small"})
    attempt = out["route"]["attempts"][0]
    assert attempt["output_tokens"] == POLICY.tier("tier_small").max_tokens
    assert out["route"]["finish_reason"] == "length"


def test_openai_front_reports_length_for_the_policy_cap(triton_server: LocalTritonServer) -> None:
    with openai_front(triton_server.grpc_url) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model="router",
            messages=[{"role": "user", "content": PROMPT}],
            extra_body={"min_tier": "tier_small", "max_tier": "tier_small"},
        )
    assert reply.usage.completion_tokens == POLICY.tier("tier_small").max_tokens
    assert reply.choices[0].finish_reason == "length"


# -- issue 16.4: every series exists from the load ------------------------------------------------------------------
def _series(url: str) -> set[tuple[str, frozenset]]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {
        (sample.name, frozenset(sample.labels.items()))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.parametrize("model", MODELS)
def test_event_counters_have_every_series_the_policy_allows(triton_server: LocalTritonServer, model: str) -> None:
    series = _series(triton_server.metrics_url)
    names = POLICY.tier_names
    for i, lower in enumerate(names):
        for higher in names[i + 1 :]:
            labels = frozenset({"model": model, "from_tier": lower, "to_tier": higher}.items())
            assert ("router_escalations_total", labels) in series, (lower, higher)
        for reason in ("error", "timeout"):
            labels = frozenset({"model": model, "tier": lower, "reason": reason}.items())
            assert ("router_fallbacks_total", labels) in series, (lower, reason)
    for name in ("router_failures_total", "router_cost_usd_total", "router_cost_saved_usd_total",
                 "router_cost_extra_usd_total"):  # fmt: skip
        assert (name, frozenset({"model": model}.items())) in series, name


# -- issue 16.6: bad input --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("inputs", "params", "message"),
    [
        (router_inputs("\x00\x00\x00\x00"), None, "only control characters"),
        (router_inputs("\x01\x02\x1b\x7f\u200b\n"), None, "only control characters"),
        (router_inputs(PROMPT, 10**6), None, f"at most {max(t.max_tokens for t in POLICY.tiers)}"),
        (router_inputs(PROMPT), {"confidence_threshold": 0.5}, "confidence_threshold: must be <= 0"),
        (router_inputs(PROMPT), {"confidence_threshold": "2"}, "confidence_threshold: must be <= 0"),
        (router_inputs(PROMPT), {"raw": "sometimes"}, "parameter 'raw' must be a boolean"),
    ],
)
@pytest.mark.parametrize("model", MODELS)
def test_bad_input_says_what_to_fix(
    triton_server: LocalTritonServer, grpc_client: grpcclient.InferenceServerClient, model: str, inputs: list,
    params: dict | None, message: str,
) -> None:  # fmt: skip
    got = invalid(triton_server.grpc_url, model, inputs, params)
    assert message in got, got
    assert grpc_client.is_server_live() and grpc_client.is_model_ready(model)


# -- issue 14.2: conversations ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_a_conversation_reaches_the_tier_and_is_routed_on_its_last_user_message(
    triton_server: LocalTritonServer, model: str
) -> None:
    """One user message: a tier without a chat template takes it as its prompt, so it answers exactly as it answers
    the same text in text_input (same tokens, same greedy text); the classifier read the message."""
    params = {"force_tier": "tier_small", "return_trace": True}
    plain = call(triton_server.grpc_url, model, router_inputs(PROMPT, 8), params)
    chat = call(triton_server.grpc_url, model, messages_inputs([{"role": "user", "content": PROMPT}]), params)
    assert chat["route"]["intent"] == plain["route"]["intent"] == "summarization"
    assert chat["route"]["attempts"][0]["input_tokens"] == plain["route"]["attempts"][0]["input_tokens"] > 0
    assert chat["text_output"] == plain["text_output"]


def _has_template(tier: str) -> bool:
    folder = SERVED / tier / "1" / "model"
    config = json.loads((folder / "tokenizer_config.json").read_text())
    return "chat_template" in config or (folder / "chat_template.jinja").exists()


@pytest.mark.parametrize("model", MODELS)
def test_a_multi_turn_conversation_goes_to_the_tier_as_messages(triton_server: LocalTritonServer, model: str) -> None:
    conversation = [
        {"role": "system", "content": "You summarize."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": PROMPT},
    ]
    inputs = messages_inputs(conversation)
    if _has_template("tier_small"):
        out = call(triton_server.grpc_url, model, inputs, {"force_tier": "tier_small"})
        assert out["route"]["intent"] == "summarization" and out["route"]["attempts"][0]["outcome"] == "ok"
    else:  # a tier without a template renders the conversation itself: same tokens as the flattened text
        out = call(triton_server.grpc_url, model, inputs, {"force_tier": "tier_small"})
        flat = call(
            triton_server.grpc_url,
            model,
            router_inputs(plain_conversation(conversation), 8),
            {"force_tier": "tier_small"},
        )
        assert out["route"]["attempts"][0]["input_tokens"] == flat["route"]["attempts"][0]["input_tokens"]


@pytest.mark.parametrize(
    ("messages", "text", "message"),
    [
        ("not json", "", "is not valid JSON"),
        ('{"role": "user", "content": "hi"}', "", "must be a JSON list"),
        ([{"role": "robot", "content": "hi"}], "", "role 'robot'"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "", "'image_url' part"),
        ([{"role": "user"}], "", "has no 'content'"),
        ([{"role": "system", "content": "Be brief."}], "", "no user message"),
        ([{"role": "user", "content": "\u0000"}], "", "only control characters"),
        ([{"role": "user", "content": "hi"}], PROMPT, "send either text_input or messages"),
    ],
)
@pytest.mark.parametrize("model", MODELS)
def test_bad_messages_are_invalid_arg(
    triton_server: LocalTritonServer, grpc_client: grpcclient.InferenceServerClient, model: str, messages: Any,
    text: str, message: str,
) -> None:  # fmt: skip
    got = invalid(triton_server.grpc_url, model, messages_inputs(messages, text))
    assert message in got, got
    assert grpc_client.is_model_ready(model)


def test_raw_is_refused_with_a_conversation(triton_server: LocalTritonServer) -> None:
    inputs = messages_inputs([{"role": "user", "content": "hi"}])
    assert "applies to text_input only" in invalid(triton_server.grpc_url, "router", inputs, {"raw": True})


def test_raw_text_reaches_the_tier(triton_server: LocalTritonServer) -> None:
    out = call(triton_server.grpc_url, "router", router_inputs(PROMPT, 4), {"raw": True, "force_tier": "tier_small"})
    assert out["route"]["attempts"][0]["outcome"] == "ok"


def test_messages_input_is_declared_by_both_routers(grpc_client: grpcclient.InferenceServerClient) -> None:
    for model in MODELS:
        inputs = {i["name"]: i for i in grpc_client.get_model_config(model, as_json=True)["config"]["input"]}
        assert inputs["messages"]["data_type"] == "TYPE_STRING" and inputs["messages"].get("optional")
