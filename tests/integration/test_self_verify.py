"""Self-verification (confidence `self_verify`) in the router and router_stream, against the real local server.

tests/models/router_verify's policy: tier_scripted (a test tier whose answer and verdict the prompt scripts, see
tests/models/tier_scripted/1/model.py) and the tiny random-weight tier_small score their answers by asking themselves
whether they are correct; tier_faulty always errors; tier_medium accepts. router_verify_stream follows that policy.
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml
from helpers import router_inputs, router_result, stream, tensor, text_array
from llm_router.core import load_policy, parse_policy
from llm_router.core.cost import call_cost, largest_tier_cost
from llm_router.core.self_verify import (
    VERIFY_MAX_TOKENS,
    build_verification_prompt,
    verdict_from_pieces,
    verdict_score,
)
from router_launcher.serve import LocalTritonServer

pytestmark = pytest.mark.integration

MODEL, STREAM_MODEL, REMOTE_MODEL = "router_verify", "router_verify_stream", "router_verify_remote"
TEMPLATE = Path(__file__).resolve().parents[1] / "models" / MODEL
POLICY = load_policy(TEMPLATE / "1" / "policy.yaml")
SCRIPTED = POLICY.tier("tier_scripted")
# tier_scripted's script (tests/models/tier_scripted/1/model.py): its answer, one token per piece
ANSWER = "Paris is the capital."
ANSWER_LOGPROBS = [-0.1, -0.2, -0.3, -0.4, -0.5]
YES_TOKENS, NO_TOKENS = 3, 2  # " " "Yes" "."  /  "No" "."
QUESTION = "What is the capital of France?"
SUMMARY_PROMPT = (
    "Summarize in one sentence: the city council approved a new budget on Tuesday that raises spending on public "
    "transit by ten percent and freezes property taxes for the second year in a row."
)


def words(text: str) -> int:
    """tier_scripted's token count: whitespace-separated words."""
    return len(text.split())


def route(
    url: str, text: str, max_tokens: int = 8, messages: list | None = None, model: str = MODEL, **params: Any
) -> dict[str, Any]:
    inputs = router_inputs(text, max_tokens)
    if messages is not None:
        inputs.append(tensor("messages", text_array(json.dumps(messages)), "BYTES"))
    with grpcclient.InferenceServerClient(url) as client:
        result = client.infer(model, inputs, parameters=params or None, client_timeout=120)
    return router_result(result)


def stream_route(url: str, text: str, max_tokens: int = 8, **params: Any) -> tuple[list[dict], dict[str, Any]]:
    """(the text deltas, the final response with `route` parsed) of one router_verify_stream request."""
    events = stream(url, STREAM_MODEL, router_inputs(text, max_tokens), params or None, timeout_s=120)
    final = {**events[-1], "route": json.loads(events[-1]["route"])}
    return [e for e in events[:-1] if e.get("text_output")], final


def executions(url: str, model: str) -> int:
    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"]
    return sum(int(s["inference_stats"].get("success", {}).get("count", 0)) for s in stats)


def wait_for_executions(url: str, model: str, count: int, timeout_s: float = 15) -> int:
    """`model`'s successful requests once they reach `count` (a decoupled request counts when released), or after
    `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while (done := executions(url, model)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return done


def tier_pieces(url: str, tier: str, prompt: str, max_tokens: int) -> tuple[list[tuple[str, list[float]]], int, int]:
    """(the streamed (text, log-probs) pieces, input_tokens, output_tokens) of one direct, streamed tier call."""
    responses: queue.Queue = queue.Queue()
    inputs = []
    for name, value, dtype, kind in (
        ("text_input", prompt.encode(), np.object_, "BYTES"),
        ("max_tokens", max_tokens, np.int32, "INT32"),
        ("return_log_probs", True, np.bool_, "BOOL"),
        ("stream", True, np.bool_, "BOOL"),
    ):
        inputs.append(tensor(name, np.array([[value]], dtype=dtype), kind))
    pieces, counts = [], (0, 0)
    with grpcclient.InferenceServerClient(url) as client:
        client.start_stream(callback=lambda result=None, error=None: responses.put((result, error)))
        client.async_stream_infer(tier, inputs, enable_empty_final_response=True)
        while True:
            result, error = responses.get(timeout=60)
            assert error is None, error
            if result.as_numpy("text_output") is not None:
                text = result.as_numpy("text_output").reshape(-1)[0].decode()
                pieces.append((text, [float(x) for x in result.as_numpy("output_log_probs").reshape(-1)]))
                counts = tuple(int(result.as_numpy(n).reshape(-1)[0]) for n in ("input_tokens", "output_tokens"))
            if result.get_response().parameters["triton_final_response"].bool_param:
                break
        client.stop_stream()
    return pieces, *counts


def check_costs(route_: dict[str, Any], cost_output: float, policy: Any = POLICY) -> None:
    """Every attempt costs its tier's prices x its tokens (both calls of a verified one); the total is their sum."""
    for attempt in route_["attempts"]:
        spec = policy.tier(attempt["tier"])
        assert attempt["cost"] == pytest.approx(call_cost(spec, attempt["input_tokens"], attempt["output_tokens"]))
    assert route_["cost"] == pytest.approx(sum(a["cost"] for a in route_["attempts"]))
    assert cost_output == pytest.approx(route_["cost"], rel=1e-5)


# -- the router ------------------------------------------------------------------------------------------------------
def test_a_confident_yes_is_accepted_and_both_calls_are_paid_for(triton_server: LocalTritonServer) -> None:
    prompt = f"{QUESTION} verify=yes"
    result = route(triton_server.grpc_url, prompt)
    assert (result["tier"], result["text"], result["escalated"]) == ("tier_scripted", ANSWER, False)
    (attempt,) = result["route"]["attempts"]
    check = attempt["verification"]
    verify_in = words(build_verification_prompt(prompt, ANSWER))
    assert check == {
        "verdict": "yes",
        "logprob": pytest.approx(-0.05),  # the first non-blank piece, "Yes"
        "input_tokens": verify_in,
        "output_tokens": YES_TOKENS,
        "latency_ms": check["latency_ms"],
    }
    assert 0 < check["latency_ms"] <= attempt["latency_ms"]
    assert attempt["confidence"] == pytest.approx(-0.05) and attempt["threshold"] == SCRIPTED.escalation_threshold
    assert attempt["input_tokens"] == words(prompt) + verify_in
    assert attempt["output_tokens"] == len(ANSWER_LOGPROBS) + YES_TOKENS
    check_costs(result["route"], result["cost"])
    # the baseline (always the largest tier) answers once: the answer's own tokens
    baseline = largest_tier_cost(POLICY, words(prompt), len(ANSWER_LOGPROBS))
    assert result["route"]["largest_tier_cost"] == pytest.approx(baseline)
    assert result["route"]["finish_reason"] == "stop"  # 5 answer tokens < the call's cap of 8


def test_a_no_verdict_escalates_and_a_failed_escalation_returns_the_verified_answer(
    triton_server: LocalTritonServer,
) -> None:
    result = route(triton_server.grpc_url, f"{QUESTION} verify=no", max_tier="tier_faulty")
    first, failed = result["route"]["attempts"]
    assert first["verification"]["verdict"] == "no" and first["verification"]["logprob"] == pytest.approx(-0.2)
    assert first["confidence"] == pytest.approx(math.log1p(-math.exp(-0.2)))  # the bound "No" puts on log P("Yes")
    assert first["confidence"] < SCRIPTED.escalation_threshold and failed["step"] == "escalate"
    assert (failed["tier"], failed["outcome"]) == ("tier_faulty", "error")
    # tier_faulty failed and no tier above it is allowed: the verified (if doubtful) answer is still the answer
    assert (result["tier"], result["text"], first["result"]) == ("tier_scripted", ANSWER, "accepted")
    check_costs(result["route"], result["cost"])


@pytest.mark.parametrize(("marker", "why"), [("verify=error", "refuses to verify"), ("verify=slow", "overran")])
def test_a_failed_or_late_verification_is_no_verdict(triton_server: LocalTritonServer, marker: str, why: str) -> None:
    started, before = time.monotonic(), executions(triton_server.grpc_url, "tier_scripted")
    result = route(triton_server.grpc_url, f"{QUESTION} {marker}", max_tier="tier_small")
    first = result["route"]["attempts"][0]
    check = first["verification"]
    assert check["verdict"] == "none" and check["logprob"] == "-inf" and first["confidence"] == "-inf"
    assert check["error"].startswith("verification failed: tier_scripted") and why in check["error"]
    assert first["result"] == "escalated (answer discarded)"
    assert [a["tier"] for a in result["route"]["attempts"]] == ["tier_scripted", "tier_faulty", "tier_small"]
    assert result["tier"] == "tier_small"
    if marker == "verify=slow":
        # within what was left of tier_scripted's deadline, not a fresh one
        assert first["latency_ms"] <= SCRIPTED.deadline_s * 1000 + 500
        assert time.monotonic() - started < 60
    check_costs(result["route"], result["cost"])
    wait_for_executions(triton_server.grpc_url, "tier_scripted", before + 2)  # the late verdict too, for the next test


def test_a_blank_answer_scores_minus_infinity_without_a_second_call(triton_server: LocalTritonServer) -> None:
    before = executions(triton_server.grpc_url, "tier_scripted")
    result = route(triton_server.grpc_url, f"{QUESTION} answer=blank", force_tier="tier_scripted")
    (attempt,) = result["route"]["attempts"]
    assert (result["tier"], result["text"], attempt["confidence"]) == ("tier_scripted", "", "-inf")
    assert attempt["verification"] == {
        "verdict": "none",
        "logprob": "-inf",
        "input_tokens": 0,
        "output_tokens": 0,
        "latency_ms": 0.0,
        "error": "blank answer: not verified",
    }
    wait_for_executions(triton_server.grpc_url, "tier_scripted", before + 1)
    time.sleep(0.5)  # a second call, had there been one, would be counted by now
    assert executions(triton_server.grpc_url, "tier_scripted") == before + 1, "a blank answer was verified"


def test_a_conversation_is_verified_on_its_last_user_message(triton_server: LocalTritonServer) -> None:
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Hi! How can I help?"},
        {"role": "user", "content": f"{QUESTION} verify=yes"},
    ]
    result = route(triton_server.grpc_url, "", messages=messages)
    (attempt,) = result["route"]["attempts"]
    expected = words(build_verification_prompt(f"{QUESTION} verify=yes", ANSWER))
    assert attempt["verification"]["input_tokens"] == expected and result["tier"] == "tier_scripted"


@pytest.mark.parametrize("threshold", [None, -50.0], ids=["policy_threshold", "lenient_threshold"])
def test_a_tiny_tiers_verdict_decides_as_its_score_says(
    triton_server: LocalTritonServer, threshold: float | None
) -> None:
    """tier_small (random weights) answers gibberish and judges it with gibberish: whatever it says, the router's
    verdict is the one a direct call gets, and escalation follows the verdict's score against the threshold (the
    policy's, or a lenient request threshold, so that both outcomes are seen)."""
    url = triton_server.grpc_url
    params: dict[str, Any] = {"min_tier": "tier_small", "max_tier": "tier_medium", "return_trace": True}
    if threshold is not None:
        params["confidence_threshold"] = threshold
    result = route(url, SUMMARY_PROMPT, 8, **params)
    attempt = result["route"]["attempts"][0]
    assert attempt["tier"] == "tier_small" and attempt["outcome"] == "ok"
    expected_threshold = POLICY.tier("tier_small").escalation_threshold if threshold is None else threshold
    assert attempt["threshold"] == expected_threshold
    answer_pieces, answer_in, answer_out = tier_pieces(url, "tier_small", SUMMARY_PROMPT, 8)
    answer = "".join(text for text, _ in answer_pieces)
    assert result["route"]["answers"][0]["text"] == answer  # greedy: the router saw what a direct call sees
    question = build_verification_prompt(SUMMARY_PROMPT, answer)
    pieces, verify_in, verify_out = tier_pieces(url, "tier_small", question, VERIFY_MAX_TOKENS)
    verdict = verdict_from_pieces(pieces)
    check = attempt["verification"]
    assert check["verdict"] == ("none" if verdict.logprob == -math.inf else verdict.label)
    assert check["logprob"] == pytest.approx(verdict.logprob, abs=1e-4)
    assert (check["input_tokens"], check["output_tokens"]) == (verify_in, verify_out)
    assert (attempt["input_tokens"], attempt["output_tokens"]) == (answer_in + verify_in, answer_out + verify_out)
    score = verdict_score(verdict)
    assert attempt["confidence"] == pytest.approx(score, abs=1e-4)
    if score >= expected_threshold:
        assert (result["tier"], attempt["result"], len(result["route"]["attempts"])) == ("tier_small", "accepted", 1)
    else:
        assert result["tier"] == "tier_medium" and attempt["result"] == "escalated (answer discarded)"
    check_costs(result["route"], result["cost"])


# -- router_stream ---------------------------------------------------------------------------------------------------
def test_stream_sends_a_verified_answer_whole_once_accepted(triton_server: LocalTritonServer) -> None:
    prompt = f"{QUESTION} verify=yes"
    deltas, final = stream_route(triton_server.grpc_url, prompt)
    # held back whole, then sent at once: one delta (tier_scripted streams its answer in five pieces)
    assert [(d["tier"], d["text_output"]) for d in deltas] == [("tier_scripted", ANSWER)]
    assert final["tier"] == "tier_scripted" and final["route"]["attempts"][0]["verification"]["verdict"] == "yes"
    unary = route(triton_server.grpc_url, prompt)
    assert final["cost"] == pytest.approx(unary["cost"], rel=1e-6)  # the same calls, the same tokens
    check_costs(final["route"], final["cost"])


def test_stream_never_sends_an_answer_its_verdict_escalates(triton_server: LocalTritonServer) -> None:
    deltas, final = stream_route(triton_server.grpc_url, f"{QUESTION} verify=no", max_tier="tier_small")
    tiers = [a["tier"] for a in final["route"]["attempts"]]
    assert tiers == ["tier_scripted", "tier_faulty", "tier_small"] and final["tier"] == "tier_small"
    assert deltas and {d["tier"] for d in deltas} == {"tier_small"}, "text of an escalated tier reached the client"
    # tier_small could not escalate: it streamed as it generated, and was verified after (for the trace)
    assert final["route"]["attempts"][2]["verification"]["verdict"] in ("yes", "no", "other", "none")
    check_costs(final["route"], final["cost"])


def test_stream_sends_the_held_answer_when_the_escalation_fails(triton_server: LocalTritonServer) -> None:
    deltas, final = stream_route(triton_server.grpc_url, f"{QUESTION} verify=no", max_tier="tier_faulty")
    assert [(d["tier"], d["text_output"]) for d in deltas] == [("tier_scripted", ANSWER)]
    assert final["tier"] == "tier_scripted" and final["route"]["attempts"][0]["result"] == "accepted"
    assert final["route"]["attempts"][1]["outcome"] == "error"


# -- a remote tier: the verification goes through the remote caller ------------------------------------------------
@pytest.fixture(scope="module")
def remote_router(triton_server: LocalTritonServer) -> Iterator[Any]:
    """router_verify_remote, installed on the test server: its first tier is this server's tier_scripted called as a
    remote Triton tier (over gRPC), self-verifying; tier_small answers after it."""
    assert triton_server._run_dir is not None
    target = triton_server._run_dir / "models" / REMOTE_MODEL
    (target / "1").mkdir(parents=True)
    config = (TEMPLATE / "config.pbtxt").read_text().replace(f'name: "{MODEL}"', f'name: "{REMOTE_MODEL}"')
    (target / "config.pbtxt").write_text(config)
    shutil.copy(TEMPLATE / "1" / "model.py", target / "1" / "model.py")
    remote = {"kind": "triton", "url": triton_server.grpc_url, "model": "tier_scripted"}
    small = {"name": "tier_small", "cost_per_1k_input": 0.0001, "cost_per_1k_output": 0.0002, "max_tokens": 16}
    policy = {
        "version": 1,
        "tiers": [
            {**SCRIPTED.model_dump(exclude_none=True, exclude={"remote"}), "name": "tier_remote", "remote": remote},
            {**small, "deadline_s": 30.0, "escalation_threshold": -50.0},
        ],
        "start_tier_by_intent": dict.fromkeys(POLICY.start_tier_by_intent, "tier_remote"),
        "max_escalations": 1,
        "default_start_tier": "tier_remote",
    }
    (target / "1" / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        client.load_model(REMOTE_MODEL)
        assert client.is_model_ready(REMOTE_MODEL)
        try:
            yield parse_policy(policy)
        finally:
            with contextlib.suppress(Exception):
                client.unload_model(REMOTE_MODEL)
            shutil.rmtree(target, ignore_errors=True)


def test_a_remote_tier_is_verified_through_its_remote_caller(
    triton_server: LocalTritonServer, remote_router: Any
) -> None:
    prompt = f"{QUESTION} verify=yes"
    before = executions(triton_server.grpc_url, "tier_scripted")
    result = route(triton_server.grpc_url, prompt, model=REMOTE_MODEL)
    (attempt,) = result["route"]["attempts"]
    assert (result["tier"], result["text"], attempt["confidence"]) == ("tier_remote", ANSWER, pytest.approx(-0.05))
    check = attempt["verification"]
    assert (check["verdict"], check["output_tokens"]) == ("yes", YES_TOKENS)
    assert check["input_tokens"] == words(build_verification_prompt(prompt, ANSWER))
    check_costs(result["route"], result["cost"], remote_router)
    # the answer and its verification, both through the remote (gRPC) caller
    assert wait_for_executions(triton_server.grpc_url, "tier_scripted", before + 2) == before + 2

    result = route(triton_server.grpc_url, f"{QUESTION} verify=error", model=REMOTE_MODEL)
    first, second = result["route"]["attempts"]
    assert first["verification"]["verdict"] == "none" and "refuses to verify" in first["verification"]["error"]
    assert (second["tier"], result["tier"]) == ("tier_small", "tier_small")
