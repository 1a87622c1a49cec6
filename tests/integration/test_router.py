"""The router and router_stream BLS models against the real local server with the tiny tiers."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as grpcclient
from helpers import metric_value, router_inputs, router_result
from helpers import stream as stream_request
from llm_router.core import load_policy
from router_launcher.serve import LocalTritonServer
from tritonclient.utils import InferenceServerException

POLICY = load_policy(Path(__file__).resolve().parents[2] / "model_repository" / "router" / "1" / "policy.yaml")
SUMMARY_PROMPT = (
    "Could you please generate a TLDR (Too Long Didn't Read) summary of the following news article?\n\n"
    "Article: The city council approved a new budget on Tuesday that raises spending on public transit by ten "
    "percent and freezes property taxes for the second year in a row."
)
NEVER_CONFIDENT = -1e-9  # no answer of a random-weight tier reaches this mean log-prob
ALWAYS_CONFIDENT = -1e9


def route(client: grpcclient.InferenceServerClient, text: str | bytes, model: str = "router", **params: Any):
    result = client.infer(model, router_inputs(text, params.pop("max_tokens", 8)), parameters=params or None)
    return router_result(result)


def stream(url: str, text: str, **params: Any) -> list[dict[str, Any]]:
    """All responses of one router_stream request, in order (the last one is the final)."""
    return stream_request(url, "router_stream", router_inputs(text, params.pop("max_tokens", 8)), params or None)


def test_routes_by_intent_and_reports_the_route(grpc_client: grpcclient.InferenceServerClient) -> None:
    answer = route(grpc_client, SUMMARY_PROMPT, confidence_threshold=ALWAYS_CONFIDENT)
    trace = answer["route"]
    assert trace["classifier"] == "ok"
    assert trace["intent"] == "summarization"
    assert set(trace["intent_probs"]) >= {"summarization", "planning"}
    assert 0.0 <= trace["difficulty"] <= 1.0
    start = POLICY.start_tier_by_intent["summarization"]
    assert [a["tier"] for a in trace["attempts"]] == [start]
    assert answer["tier"] == start and not answer["escalated"]
    attempt = trace["attempts"][0]
    assert attempt["input_tokens"] > 0 and attempt["output_tokens"] > 0
    spec = POLICY.tier(start)
    expected_cost = (
        attempt["input_tokens"] * spec.cost_per_1k_input + attempt["output_tokens"] * spec.cost_per_1k_output
    ) / 1000
    assert answer["cost"] == pytest.approx(expected_cost, rel=1e-4)
    assert answer["text"]


def test_planning_prompt_starts_at_the_policy_tier_for_its_intent(
    grpc_client: grpcclient.InferenceServerClient,
) -> None:
    prompt = (
        "Create a daily itinerary based on the given information.\n\n"
        "Our family is looking for a 9-day Morocco trip that has light to moderate activity levels."
    )
    answer = route(grpc_client, prompt, confidence_threshold=ALWAYS_CONFIDENT)
    intent = answer["route"]["intent"]
    first = answer["route"]["attempts"][0]["tier"]
    expected = POLICY.start_tier_by_intent[intent]
    rule = POLICY.difficulty_rule
    if rule is not None and answer["route"]["difficulty"] > rule.above:
        expected = max(expected, rule.min_tier, key=POLICY.tier_index)
    assert first == expected


def test_force_tier_uses_exactly_that_tier(grpc_client: grpcclient.InferenceServerClient) -> None:
    answer = route(grpc_client, SUMMARY_PROMPT, force_tier="tier_medium", confidence_threshold=NEVER_CONFIDENT)
    assert answer["tier"] == "tier_medium"
    assert [a["tier"] for a in answer["route"]["attempts"]] == ["tier_medium"]
    assert not answer["escalated"]


def test_escalates_when_the_small_tier_is_not_confident(grpc_client: grpcclient.InferenceServerClient) -> None:
    answer = route(grpc_client, SUMMARY_PROMPT, min_tier="tier_small", confidence_threshold=NEVER_CONFIDENT)
    tiers = [a["tier"] for a in answer["route"]["attempts"]]
    assert tiers == ["tier_small", "tier_medium", "tier_large"]
    assert answer["escalated"] and answer["tier"] == "tier_large"
    assert answer["route"]["escalations"] == 2
    assert answer["route"]["tokens_wasted"] > 0
    # every tier tried is paid for
    assert answer["cost"] == pytest.approx(sum(a["cost"] for a in answer["route"]["attempts"]), rel=1e-4)


def test_max_tier_stops_the_cascade(grpc_client: grpcclient.InferenceServerClient) -> None:
    answer = route(grpc_client, SUMMARY_PROMPT, max_tier="tier_medium", confidence_threshold=NEVER_CONFIDENT)
    assert answer["tier"] == "tier_medium"
    assert [a["tier"] for a in answer["route"]["attempts"]] == ["tier_small", "tier_medium"]


def test_return_trace_includes_discarded_answers(grpc_client: grpcclient.InferenceServerClient) -> None:
    answer = route(grpc_client, SUMMARY_PROMPT, max_tier="tier_medium", confidence_threshold=NEVER_CONFIDENT,
                   return_trace=True)  # fmt: skip
    answers = answer["route"]["answers"]
    assert [a["tier"] for a in answers] == ["tier_small", "tier_medium"]
    assert answers[-1]["text"] == answer["text"]


def test_fallback_past_a_failing_and_a_slow_tier(grpc_client: grpcclient.InferenceServerClient) -> None:
    started = time.monotonic()
    answer = route(grpc_client, SUMMARY_PROMPT, model="router_faults")
    elapsed = time.monotonic() - started
    outcomes = [(a["tier"], a["outcome"]) for a in answer["route"]["attempts"]]
    assert outcomes == [("tier_faulty", "error"), ("tier_slow", "timeout"), ("tier_small", "ok")]
    assert answer["tier"] == "tier_small"
    assert "injected fault" in answer["route"]["attempts"][0]["error"]
    assert elapsed < 3.5, f"the 1 s deadline of tier_slow was not enforced ({elapsed:.1f}s)"


def test_every_tier_failing_is_an_error_listing_each_reason(grpc_client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        route(grpc_client, SUMMARY_PROMPT, model="router_faults", max_tier="tier_slow")
    message = info.value.message()
    assert "tier_faulty" in message and "injected fault" in message
    assert "tier_slow" in message and "timeout" in message
    assert grpc_client.is_model_ready("router_faults")


def test_stream_sends_only_the_answering_tiers_text(triton_server: LocalTritonServer,
                                                    grpc_client: grpcclient.InferenceServerClient) -> None:  # fmt: skip
    events = stream(triton_server.grpc_url, SUMMARY_PROMPT, max_tier="tier_medium",
                    confidence_threshold=NEVER_CONFIDENT, max_tokens=16)  # fmt: skip
    final = events[-1]
    assert final["final"] and final["tier"] == "tier_medium" and final["escalated"]
    deltas = [e for e in events[:-1] if e.get("text_output")]
    assert len(deltas) >= 2, "expected the answer in several pieces"
    assert {e["tier"] for e in deltas} == {"tier_medium"}, "text from an abandoned tier reached the client"
    streamed = "".join(e["text_output"] for e in deltas)
    trace = json.loads(final["route"])
    assert [a["tier"] for a in trace["attempts"]] == ["tier_small", "tier_medium"]
    direct = route(grpc_client, SUMMARY_PROMPT, force_tier="tier_medium", max_tokens=16)
    assert streamed == direct["text"], "the stream must carry the same (greedy) text as the unary call"


def test_stream_without_escalation(triton_server: LocalTritonServer) -> None:
    events = stream(triton_server.grpc_url, SUMMARY_PROMPT, confidence_threshold=ALWAYS_CONFIDENT, max_tokens=16)
    assert events[-1]["tier"] == POLICY.start_tier_by_intent["summarization"]
    assert not events[-1]["escalated"]
    assert "".join(e.get("text_output", "") for e in events[:-1])


def test_metrics_count_requests_and_escalations(triton_server: LocalTritonServer,
                                                grpc_client: grpcclient.InferenceServerClient) -> None:  # fmt: skip
    url = triton_server.metrics_url
    before_requests = metric_value(url, "router_requests_total", model="router", tier="tier_medium")
    before_escalations = metric_value(url, "router_escalations_total", model="router", from_tier="tier_small",
                                      to_tier="tier_medium")  # fmt: skip
    before_cost = metric_value(url, "router_cost_usd_total", model="router")
    before_overhead = metric_value(url, "router_overhead_ms_count", model="router")
    for _ in range(3):
        route(grpc_client, SUMMARY_PROMPT, max_tier="tier_medium", confidence_threshold=NEVER_CONFIDENT)
    # the router records metrics right after sending each response: give the last one a moment
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if metric_value(url, "router_overhead_ms_count", model="router") >= before_overhead + 3:
            break
        time.sleep(0.05)
    assert metric_value(url, "router_requests_total", model="router", tier="tier_medium") == before_requests + 3
    assert (
        metric_value(url, "router_escalations_total", model="router", from_tier="tier_small", to_tier="tier_medium")
        == before_escalations + 3
    )
    assert metric_value(url, "router_cost_usd_total", model="router") > before_cost
    assert metric_value(url, "router_overhead_ms_count", model="router") == before_overhead + 3
    assert metric_value(url, "router_confidence_count", model="router", tier="tier_small") >= 3
    assert metric_value(url, "router_tokens_wasted_total", model="router", tier="tier_small") > 0


def test_describe_policy_answers_with_the_tiers_without_routing(
    triton_server: LocalTritonServer, grpc_client: grpcclient.InferenceServerClient
) -> None:
    answer = route(grpc_client, "", describe_policy=True)  # text_input is required by the config, and ignored
    assert answer["route"] == {"policy_version": POLICY.version, "tiers": list(POLICY.tier_names)}
    assert (answer["text"], answer["tier"], answer["cost"]) == ("", "", 0.0)
    events = stream(triton_server.grpc_url, "", describe_policy=True)
    assert len(events) == 1 and events[0]["final"]
    assert json.loads(events[0]["route"])["tiers"] == list(POLICY.tier_names)


@pytest.mark.parametrize(
    ("text", "params", "message"),
    [
        ("", {}, "empty"),
        ("   \n\t", {}, "empty"),
        (b"\xff\xfe bad bytes", {}, "UTF-8"),
        (SUMMARY_PROMPT, {"force_tier": "tier_huge"}, "tier_huge"),
        (SUMMARY_PROMPT, {"max_tier": "gpt-5"}, "gpt-5"),
        (SUMMARY_PROMPT, {"min_tier": "tier_large", "max_tier": "tier_small"}, "min_tier"),
        (SUMMARY_PROMPT, {"confidence_threshold": "abc"}, "confidence_threshold"),
        (SUMMARY_PROMPT, {"confidence_threshold": "nan"}, "confidence_threshold"),
        (SUMMARY_PROMPT, {"temperature": 0.5}, "unknown request parameter"),
        (SUMMARY_PROMPT, {"return_trace": "maybe"}, "return_trace"),
        ("", {"describe_policy": "perhaps"}, "describe_policy"),
        (SUMMARY_PROMPT, {"max_tokens": 0}, "max_tokens"),
        (SUMMARY_PROMPT, {"max_tokens": -3}, "max_tokens"),
    ],
)
@pytest.mark.parametrize("model", ["router", "router_stream"])
def test_bad_input_is_invalid_arg(
    triton_server: LocalTritonServer, grpc_client: grpcclient.InferenceServerClient, model: str,
    text: str | bytes, params: dict, message: str,
) -> None:  # fmt: skip
    params = dict(params)
    if model == "router":
        with pytest.raises(InferenceServerException) as info:
            route(grpc_client, text, **params)
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT", info.value.message()
        assert message in info.value.message()
    else:
        with pytest.raises(InferenceServerException) as info:
            stream(triton_server.grpc_url, text, **params)
        assert message in info.value.message()
    assert grpc_client.is_server_live() and grpc_client.is_model_ready(model)
